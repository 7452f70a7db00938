"""In-process stand-ins for the pipeline tests: a numpy 'model' with the AnomalyModel interface
(async queue on a worker thread, controllable delay and faults) and scripted sources."""

from __future__ import annotations

import argparse
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from edge import config
from edge.sources import Frame, Source


def make_cfg(**overrides):
    """A Config with defaults plus overrides given as dotted keys (source__fps=... style or 'source.fps')."""
    ns = argparse.Namespace()
    cfg = config.load(ns)
    for k, v in overrides.items():
        cfg[k.replace("__", ".")] = v
    return cfg


@dataclass
class FakeInfo:
    image_threshold: float = 0.5
    nfa_epsilon: float = 0.0
    latent_channels: list = field(default_factory=lambda: [8, 16])
    latent_null_scale: list = field(default_factory=list)
    decision_rule: str = "both"


@dataclass
class FakeResult:
    score: float
    anomaly_map: np.ndarray
    zsq: list


class FakeModel:
    """score = mean brightness / 255; zsq ~ chi2 under H0, with a hot blob for bright frames.
    `delay_s`: inference time; `raise_on`/`fail_on`: part ids whose start_async raises or whose
    callback gets an exception."""

    path = "fake.xml"
    model_hash = "fakehash"
    inference_precision = "f32"

    def __init__(self, size=(32, 32), delay_s=0.0, raise_on=(), fail_on=(), jobs=2):
        self.input_size = size
        self.info = FakeInfo()
        self.delay_s = delay_s
        self.raise_on = set(raise_on)
        self.fail_on = set(fail_on)
        self._zsq_names = ["zsq0", "zsq1"]
        self._jobs = jobs
        self.reloads = 0
        self.rng = np.random.default_rng(0)

    def optimal_requests(self):
        return self._jobs

    def reload_info(self):
        self.reloads += 1
        return self.info

    def infer_now(self, image: np.ndarray):
        h, w = self.input_size
        score = float(image.mean()) / 255.0
        rng = np.random.default_rng(int(image.sum()) % 1000)
        z0 = rng.chisquare(8, (h // 4, w // 4)).astype(np.float32)
        z1 = rng.chisquare(16, (h // 8, w // 8)).astype(np.float32)
        if score > 0.5:
            z0[1:4, 1:4] += 400.0
        return FakeResult(score, np.full((h, w), score, np.float32), [z0, z1])

    def async_queue(self, jobs, callback, keep_map=True):
        self.keep_map = keep_map
        return _FakeQueue(self, jobs, callback)


class _FakeQueue:
    def __init__(self, model, jobs, callback):
        self.model = model
        self.callback = callback
        self.q: queue.Queue = queue.Queue(maxsize=jobs)
        self.busy = 0
        self.lock = threading.Condition()
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(jobs)]
        for t in self.threads:
            t.start()

    def _worker(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            batch, part = item
            if self.model.delay_s:
                time.sleep(self.model.delay_s)
            if part.id in self.model.fail_on:
                result = RuntimeError("Exception from src/inference/src/infer_request.cpp:\nsimulated device failure")
            else:
                result = self.model.infer_now(batch[0])
                if not getattr(self.model, "keep_map", True):
                    result.anomaly_map = None
            self.callback(result, part)
            with self.lock:
                self.busy -= 1
                self.lock.notify_all()

    def start_async(self, batch, part):
        if part.id in self.model.raise_on:
            raise RuntimeError("simulated: infer request refused")
        with self.lock:
            self.busy += 1
        self.q.put((batch, part))

    def wait_all(self):
        with self.lock:
            while self.busy:
                self.lock.wait(0.1)


def frame_image(i: int, size=(32, 32), bright=False) -> np.ndarray:
    val = 200 if bright else 40 + (i % 5)
    return np.full((*size, 3), val, np.uint8)


class ScriptedSource(Source):
    """Yields frames from a script: ints are frame images (bright when i in `bright`), floats are
    stalls of that many seconds. `live` as given."""

    def __init__(self, script, live=True, size=(32, 32), bright=(), period_s=0.0, name="scripted"):
        self.script = script
        self.live = live
        self.size = size
        self.bright = set(bright)
        self.period_s = period_s
        self.name = name
        self._stop = threading.Event()

    def __iter__(self):
        i = 0
        for step in self.script:
            if self._stop.is_set():
                return
            if isinstance(step, float):
                self._stop.wait(step)
                continue
            if isinstance(step, Frame):
                yield step
                continue
            if self.period_s:
                self._stop.wait(self.period_s)
            yield Frame(i, frame_image(i, self.size, i in self.bright), time.time(), f"{self.name}#{i}")
            i += 1

    def stop(self):
        self._stop.set()


class Recorder:
    """Stands in for the PLC output: one call per decision."""

    kind = "fake"
    healthy = True

    def __init__(self):
        self.sent = []

    def deliver(self, part_id, reject, score, delay_ms=0):
        self.sent.append((part_id, reject))

    def stats(self):
        return {"sent": len(self.sent)}
