"""The inspection pipeline: capture → inference + NFA/decision → output, joined by queues.

* capture: reads the source, stamps each part (id, wall and monotonic capture time, deadline),
  checks and resizes the frame. A live source never waits: a frame that finds the inference
  queue full is rejected fail-safe. A recorded video waits instead (back-pressure).
* inference: two infer requests per stream the compiled model wants for the cores
  (`edge.model.RequestQueue`: no Python runs on OpenVINO's threads; its collector thread copies
  the score and latent maps out, the anomaly map too only when an evidence archive wants it).
* decision: on that collector thread, as each result arrives: the image-score and tree-NFA
  rules (`edge.decision.decide`). Decisions are made in capture order.
* output: the only writer of the audit log, stdout, the PLC link and the evidence archive, so
  every part gets exactly one record and one PLC message.
* ticker: enforces the per-part deadline (a part still undecided at its deadline is rejected
  fail-safe; a late result is discarded and counted), rejects the parts that pass while a live
  source is stalled or reconnecting (at the nominal part rate), pings the systemd watchdog while
  frames flow, sends STATUS, applies a SIGHUP reload.

Every part is registered in `inflight` when it is captured and leaves it exactly once through
`_finish`, which is what makes "one decision per part" hold under every fault.
"""

from __future__ import annotations

import collections
import json
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .decision import PASS, REJECT, Decision, Verdict, check_nfa_ready, decide, failsafe
from .errors import EdgeError, FrameError, ModelError
from .preprocess import prepare

_END = object()
EVIDENCE_BACKLOG = 32  # queued decisions that may still hold their frame and map for the archive (~0.5 MB each)


@dataclass(eq=False)
class Part:
    id: int
    origin: str
    captured_at: float
    t_mono: float
    deadline: float
    image: np.ndarray | None = None
    frame_image: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class Counters:
    """Thread-safe counters with a few labelled families."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c: collections.Counter = collections.Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.c[name] += n

    def get(self, name: str) -> int:
        return self.c.get(name, 0)

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.c)


class Pipeline:
    def __init__(self, cfg, model, source, *, plc=None, audit=None, archive=None, notifier=None, out=None,
                 log=None):
        self.cfg = cfg
        self.model = model
        self.source = source
        self.plc = plc
        self.audit = audit
        self.archive = archive
        self.notifier = notifier
        self.out = out  # a text stream for decision records (stdout), or None
        self.log = log or (lambda msg: print(f"edge-inspect: {msg}", file=sys.stderr, flush=True))
        self.counters = Counters()
        self.size = model.input_size
        self.rule = cfg["decision"] or model.info.decision_rule or "both"
        self._apply_thresholds(model.info)
        why = check_nfa_ready(self.rule, list(model.info.latent_channels), len(getattr(model, "_zsq_names", [])))
        if why:
            raise ModelError(f"model {getattr(model, 'path', '')}: {why}")
        self.deadline_s = cfg["deadline_ms"] / 1000.0
        self.live = bool(getattr(source, "live", False))
        # Two requests per stream: a stream always has a started request while the collector copies the
        # other's outputs (+5-9 % FPS on 2 cores against one request per stream, measured).
        self.jobs = cfg["infer_requests"] or 2 * model.optimal_requests()
        self.infer_q: queue.Queue = queue.Queue(maxsize=cfg["queue_size"])
        self.out_q: queue.Queue = queue.Queue()
        self.inflight: dict[int, Part] = {}
        self._evidence_backlog = False
        self.lock = threading.Lock()
        self.next_id = 0
        self.stop = threading.Event()
        self.capture_done = threading.Event()
        self.reload_requested = threading.Event()
        self.last_frame = time.monotonic()
        self.started = time.monotonic()
        self.latencies: collections.deque = collections.deque(maxlen=20_000)
        self.recent: collections.deque = collections.deque(maxlen=4096)  # (t, reject) for fps/reject rate
        self.alarms: collections.deque = collections.deque(maxlen=50)
        self.fatal: BaseException | None = None
        self._gap_next: float | None = None
        self._last_ping = 0.0
        self._last_status = 0.0
        self.frames_read = 0

    # ------------------------------------------------------------------ thresholds / reload
    def _apply_thresholds(self, info) -> None:
        t = self.cfg["threshold"]
        e = self.cfg["nfa_epsilon"]
        self.threshold = float(info.image_threshold) if t != t else float(t)
        self.epsilon = float(info.nfa_epsilon) if e != e else float(e)
        self.channels = list(info.latent_channels)
        self.null_scale = list(info.latent_null_scale) or None

    def reload(self) -> None:
        """SIGHUP: re-read thresholds from the IR metadata (command-line/config overrides still win)."""
        old = (self.threshold, self.epsilon)
        if self.notifier:
            self.notifier.reloading()
        try:
            info = self.model.reload_info()
            self._apply_thresholds(info)
            self.counters.add("reloads")
            self.log(f"reloaded thresholds from {getattr(self.model, 'path', 'the IR')}: image_threshold "
                     f"{old[0]:.6g} -> {self.threshold:.6g}, nfa_epsilon {old[1]:g} -> {self.epsilon:g}")
        except EdgeError as err:
            self.alarm("reload", f"reload failed, keeping the old thresholds: {err}")
        if self.notifier:
            self.notifier.ready(self.status_text())

    # ------------------------------------------------------------------ alarms
    def alarm(self, kind: str, message: str) -> None:
        self.counters.add(f"alarm:{kind}")
        self.alarms.append((time.time(), kind, message))
        self.log(f"ALARM {kind}: {message}")
        self.out_q.put(("alarm", kind, message, time.time()))

    # ------------------------------------------------------------------ part bookkeeping
    def _new_part(self, origin: str, captured_at: float, t_mono: float) -> Part:
        with self.lock:
            pid = self.next_id
            self.next_id += 1
            part = Part(pid, origin, captured_at, t_mono, t_mono + self.deadline_s)
            self.inflight[pid] = part
        return part

    def _finish(self, part: Part, verdict: Verdict, inference=None, category: str | None = None) -> bool:
        with self.lock:
            if self.inflight.pop(part.id, None) is None:
                return False  # already decided (deadline); this late result is discarded
        now = time.time()
        latency = (time.monotonic() - part.t_mono) * 1e3
        d = Decision(part.id, part.origin, part.captured_at, now, verdict.verdict, verdict.reason,
                     getattr(inference, "score", None), self.threshold, latency, self.model.model_hash,
                     rule=verdict.rule, log10_nfa=verdict.log10_nfa,
                     nfa_epsilon=self.epsilon if self.rule != "score" else None, regions=verdict.regions,
                     log10_nfa_bound=verdict.log10_nfa_bound)
        if verdict.rule == "failsafe":
            self.counters.add(f"failsafe:{category or 'other'}")
        # Only the evidence archive reads the frame and the maps. Without one, do not hold ~0.5 MB per
        # part while its record waits for the output thread (a slow fsync once queued 1000 parts,
        # +260 MB RSS, in a 20 000-frame soak). With one, hold them for at most EVIDENCE_BACKLOG
        # queued parts: past that the output thread is behind (slow disk or PLC link), the decision and
        # its record still go out and the archive keeps the record alone (counted, alarmed once per backlog).
        if self.archive is None or self._evidence_backlogged():
            inference = None
            part.image = part.frame_image = None
        self.out_q.put((d, part, inference))
        return True

    def _evidence_backlogged(self) -> bool:
        """True when EVIDENCE_BACKLOG or more parts wait for the output thread (counted; alarmed once
        per backlog, which ends when the queue falls below half of that)."""
        queued = self.out_q.qsize()
        if queued >= EVIDENCE_BACKLOG:
            self.counters.add("evidence_dropped_backlog")
            if not self._evidence_backlog:
                self._evidence_backlog = True
                self.alarm("evidence_backlog", f"output is {EVIDENCE_BACKLOG}+ parts behind: archiving decisions "
                                               "without their frames until it catches up")
            return True
        if queued < EVIDENCE_BACKLOG // 2:
            self._evidence_backlog = False
        return False

    def _failsafe(self, part: Part, category: str, reason: str) -> bool:
        return self._finish(part, failsafe(reason), category=category)

    # ------------------------------------------------------------------ capture
    def _check_frame(self, frame) -> str | None:
        if frame.error:
            return frame.error
        img = frame.image
        if img is None:
            return f"{frame.origin}: no image"
        color = self.cfg.get("source.color", "bgr")
        ch = frame.channels
        if ch not in (1, 3, 4):
            return f"{frame.origin}: frame has {ch} channels; the model takes 3-channel BGR (or 1-channel with source.color = gray)"
        if color == "bgr" and ch == 1:
            return (f"{frame.origin}: grayscale (1-channel) frame but the model expects colour BGR: set source.color = "
                    "\"gray\" if the model was trained on grayscale parts, or set the camera to a colour format")
        w, h = self.cfg["source.width"], self.cfg["source.height"]
        if w and h and (img.shape[1], img.shape[0]) != (w, h):
            return (f"{frame.origin}: frame is {img.shape[1]}x{img.shape[0]} but the camera is configured for {w}x{h} "
                    "(source.width/height): the part would be inspected at the wrong scale")
        return None

    def _capture(self) -> None:
        limit = self.cfg["max_frames"]
        try:
            for frame in self.source:
                self.last_frame = time.monotonic()
                self._gap_next = None
                part = self._new_part(frame.origin, frame.captured_at, frame.t_mono)
                self.frames_read += 1
                self.counters.add("frames")
                bad = self._check_frame(frame)
                if bad is None:
                    try:
                        part.image = prepare(frame.image, self.size)
                        part.frame_image = None
                    except FrameError as err:
                        bad = str(err)
                if bad is not None:
                    part.frame_image = frame.image
                    self._failsafe(part, "bad_frame", bad)
                elif self.live:
                    try:
                        self.infer_q.put_nowait(part)
                    except queue.Full:
                        part.image = None
                        self._failsafe(part, "queue_full", f"inference queue full ({self.infer_q.maxsize}): "
                                                            "the line is faster than the model")
                else:
                    self.infer_q.put(part)
                if self.stop.is_set() or (limit and self.frames_read >= limit):
                    break
        except EdgeError as err:
            self.fatal = err
        except Exception as err:  # pragma: no cover - a bug; surface it, finish the parts in flight
            self.fatal = err
        finally:
            self.capture_done.set()
            self.infer_q.put(_END)

    # ------------------------------------------------------------------ inference
    def _on_result(self, result, part: Part) -> None:
        """Runs on the request queue's collector thread (never on OpenVINO's): decide right there,
        one hand-off fewer per part than a separate decision thread."""
        self._decide_one(result, part)

    def _dispatch(self) -> None:
        aq = None
        try:
            # the map is copied out of the request only for the evidence archive (see async_queue)
            aq = self.model.async_queue(self.jobs, self._on_result, keep_map=self.archive is not None)
            while True:
                part = self.infer_q.get()
                if part is _END:
                    break
                image = part.image  # _finish (a deadline reject) may drop it meanwhile
                if image is None or part.id not in self.inflight:
                    continue
                if time.monotonic() > part.deadline:
                    self._failsafe(part, "deadline", f"deadline {self.cfg['deadline_ms']:g} ms passed before inference")
                    continue
                try:
                    aq.start_async(image[None], part)
                except Exception as err:
                    self.counters.add("inference_errors")
                    self._failsafe(part, "inference_error", f"inference failed ({type(err).__name__}: {_short(err)})")
        except Exception as err:
            self.fatal = err
            self.stop.set()
        finally:
            if aq is not None:
                try:
                    aq.wait_all()  # every result delivered, so every part in flight decided
                except Exception as err:
                    self.counters.add("inference_errors")
                    self.log(f"inference queue: {_short(err)}")

    # ------------------------------------------------------------------ decision
    def _decide_one(self, result, part: Part) -> None:
        if part.id not in self.inflight:
            self.counters.add("late_results")
            return
        if isinstance(result, BaseException):
            self.counters.add("inference_errors")
            self._failsafe(part, "inference_error", f"inference failed ({type(result).__name__}: {_short(result)})")
            return
        try:
            v = decide(result.score, result.zsq, rule=self.rule, threshold=self.threshold, epsilon=self.epsilon,
                       channels=self.channels, size=self.size, top=self.cfg["top_regions"], null_scale=self.null_scale,
                       exact_min=bool(self.cfg.get("nfa_exact_min", False)))
        except Exception as err:
            v = failsafe(f"decision failed ({type(err).__name__}: {_short(err)})")
        category = "decision_error" if v.rule == "failsafe" else None
        late = (time.monotonic() - part.deadline) * 1e3
        if late > 0 and v.verdict == PASS:
            v = failsafe(f"deadline {self.cfg['deadline_ms']:g} ms exceeded by {late:.0f} ms")
            category = "deadline"
        self._finish(part, v, result, category)

    # ------------------------------------------------------------------ output
    def _output(self) -> None:
        last_tick = time.monotonic()
        while True:
            try:
                item = self.out_q.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is _END:
                return
            if isinstance(item, tuple) and item and item[0] == "alarm":
                if self.audit is not None:
                    self.audit.write({"event": "alarm", "kind": item[1], "message": item[2], "time": round(item[3], 6)})
            elif item is not None:
                self._emit(*item)
            now = time.monotonic()
            if self.audit is not None and now - last_tick > 0.2:
                self.audit.tick()
                last_tick = now

    def _emit(self, d: Decision, part: Part, inference) -> None:
        rec = d.record()
        delay_ms = 0
        travel = self.cfg.get("reject_travel_ms", 0) or 0
        if travel:
            delay_ms = max(0, int(travel - (time.monotonic() - part.t_mono) * 1e3))
        if self.plc is not None:
            self.plc.deliver(d.frame, d.reject, d.score, delay_ms)
        if self.audit is not None:
            self.audit.write(rec)
        if self.out is not None:
            try:
                self.out.write(json.dumps(rec, default=str) + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass
        self.counters.add("decisions")
        self.counters.add("rejects" if d.reject else "passes")
        self.latencies.append(d.latency_ms)
        self.recent.append((time.monotonic(), d.reject))
        if self.archive is not None and self.archive.wants(d.reject):
            image = part.image if part.image is not None else part.frame_image
            self.archive.submit(rec, image, getattr(inference, "anomaly_map", None))
        part.image = part.frame_image = None

    # ------------------------------------------------------------------ ticker
    def _gap_rate(self) -> float:
        r = self.cfg["source.part_rate_hz"] or self.cfg["source.fps"]
        return r if r > 0 else 1.0 / self.cfg["source.stall_timeout_s"]

    def _tick(self) -> None:
        now = time.monotonic()
        # per-part deadline
        with self.lock:
            expired = [p for p in self.inflight.values() if now > p.deadline]
        for p in expired:
            self._failsafe(p, "deadline", f"no decision within the {self.cfg['deadline_ms']:g} ms deadline")
        # parts passing while a live source stalls or reconnects
        if self.live and not self.capture_done.is_set() and not self.stop.is_set():
            stalled = now - self.last_frame
            if stalled > self.cfg["source.stall_timeout_s"]:
                step = 1.0 / self._gap_rate()
                if self._gap_next is None:
                    self._gap_next = self.last_frame + step
                    down = getattr(self.source, "down_since", None)
                    why = getattr(self.source, "last_error", "") if down is not None else ""
                    self.alarm("source", f"{getattr(self.source, 'name', 'source')}: no frame for {stalled:.1f} s"
                                         + (f" ({why})" if why else "") + "; rejecting parts fail-safe until frames return")
                while self._gap_next is not None and self._gap_next <= now:
                    t_mono = self._gap_next
                    captured_at = time.time() - (now - t_mono)
                    part = self._new_part(f"gap:{getattr(self.source, 'name', 'source')}", captured_at, t_mono)
                    down = getattr(self.source, "down_since", None)
                    reason = (f"source down, reconnecting ({getattr(self.source, 'last_error', '')})" if down is not None
                              else f"source stalled (no frame for {now - self.last_frame:.1f} s)")
                    self._failsafe(part, "source_gap", reason)
                    self._gap_next += step
        # watchdog, status
        n = self.notifier
        if n is not None and n.enabled:
            interval = n.watchdog_interval_s
            if interval:
                stale = self.cfg["health.watchdog_stale_s"] or interval / 2
                progress = max(self.last_frame, getattr(self.source, "last_poll", 0.0))
                if now - progress < stale and now - self._last_ping >= interval / 4:
                    if n.watchdog():
                        self.counters.add("watchdog_pings")
                    self._last_ping = now
            if now - self._last_status >= self.cfg["health.status_interval_s"]:
                n.status(self.status_text())
                self._last_status = now
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()

    def _ticker(self, done: threading.Event) -> None:
        while not done.wait(0.05):
            try:
                self._tick()
            except Exception as err:  # pragma: no cover - never let the ticker die silently
                self.log(f"ticker: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------ status / metrics
    def rates(self, window: float = 10.0) -> tuple[float, float]:
        now = time.monotonic()
        recent = [r for t, r in list(self.recent) if now - t <= window]
        if not recent:
            return 0.0, 0.0
        span = min(window, now - self.started) or window
        return len(recent) / span, sum(recent) / len(recent)

    def status_text(self) -> str:
        fps, rr = self.rates()
        c = self.counters.snapshot()
        fs = sum(v for k, v in c.items() if k.startswith("failsafe:"))
        alarms = sum(v for k, v in c.items() if k.startswith("alarm:"))
        link = "ok" if self.plc is None or self.plc.healthy else "DOWN"
        return (f"{fps:.1f} fps, reject rate {100 * rr:.1f} %, parts {c.get('decisions', 0)}, failsafe {fs}, "
                f"alarms {alarms}, plc {link}")

    def metrics(self) -> dict:
        c = self.counters.snapshot()
        fps, rr = self.rates()
        m = {
            "edge_inspect_frames_total": ("counter", "frames read from the source", c.get("frames", 0)),
            "edge_inspect_decisions_total": ("counter", "parts decided (one audit record and PLC message each)", c.get("decisions", 0)),
            "edge_inspect_rejects_total": ("counter", "parts rejected (including fail-safe)", c.get("rejects", 0)),
            "edge_inspect_passes_total": ("counter", "parts passed", c.get("passes", 0)),
            "edge_inspect_failsafe_total": ("counter", "parts rejected fail-safe", sum(v for k, v in c.items() if k.startswith("failsafe:"))),
            "edge_inspect_alarms_total": ("counter", "alarms raised (PLC link, audit disk, source, archive)", sum(v for k, v in c.items() if k.startswith("alarm:"))),
            "edge_inspect_late_results_total": ("counter", "inference results discarded after a fail-safe deadline reject", c.get("late_results", 0)),
            "edge_inspect_fps": ("gauge", "decisions per second over the last 10 s", fps),
            "edge_inspect_reject_rate": ("gauge", "reject fraction over the last 10 s", rr),
            "edge_inspect_inflight": ("gauge", "parts captured and not yet decided", len(self.inflight)),
            "edge_inspect_image_threshold": ("gauge", "image-score threshold in use", self.threshold),
            "edge_inspect_nfa_epsilon": ("gauge", "NFA epsilon in use (log10)", self.epsilon),
            "edge_inspect_plc_healthy": ("gauge", "1 while the PLC link answers", 1.0 if self.plc is None or self.plc.healthy else 0.0),
        }
        for k, v in c.items():
            if k.startswith("failsafe:"):
                m[f"edge_inspect_failsafe_{k[9:]}_total"] = ("counter", f"fail-safe rejects: {k[9:]}", v)
            if k.startswith("alarm:"):
                m[f"edge_inspect_alarm_{k[6:]}_total"] = ("counter", f"alarms: {k[6:]}", v)
        if self.latencies:
            lat = np.asarray(self.latencies)
            m["edge_inspect_latency_p50_ms"] = ("gauge", "frame-to-decision latency p50 (last 20000)", float(np.percentile(lat, 50)))
            m["edge_inspect_latency_p99_ms"] = ("gauge", "frame-to-decision latency p99 (last 20000)", float(np.percentile(lat, 99)))
        if self.audit is not None:
            s = self.audit.stats()
            m["edge_inspect_audit_backlog"] = ("gauge", "audit records waiting for the disk", s["backlog"])
            m["edge_inspect_audit_lost_total"] = ("counter", "audit records that could not be kept", s["lost"])
        if self.archive is not None:
            m["edge_inspect_archive_bytes"] = ("gauge", "evidence archive size", self.archive.bytes_used)
        src = self.source.status() if hasattr(self.source, "status") else {}
        if "reconnects" in src:
            m["edge_inspect_source_reconnects_total"] = ("counter", "source reconnects", src["reconnects"])
        return m

    # ------------------------------------------------------------------ run
    def request_stop(self) -> None:
        self.stop.set()
        if hasattr(self.source, "stop"):
            self.source.stop()

    def run(self) -> dict:
        # OpenCV's own thread pool (resize, colour conversion) would fight inference for the cores that
        # OpenVINO's streams already fill; the pipeline's threads are the parallelism (measured ~+2 % FPS).
        cv2.setNumThreads(1)
        threads = [threading.Thread(target=self._capture, name="capture", daemon=True),
                   threading.Thread(target=self._dispatch, name="inference", daemon=True),
                   threading.Thread(target=self._output, name="output", daemon=True)]
        tick_done = threading.Event()
        ticker = threading.Thread(target=self._ticker, args=(tick_done,), name="ticker", daemon=True)
        for t in threads:
            t.start()
        ticker.start()
        if self.notifier is not None:
            self.notifier.ready(f"inspecting {getattr(self.source, 'name', '')}")
        capture = threads[0]
        while capture.is_alive():
            capture.join(0.2)
            if self.stop.is_set():
                capture.join(10.0)  # a read blocked in the driver gets 10 s, then we finish without it
                if capture.is_alive():
                    self.log("capture did not stop within 10 s (source blocked); finishing the parts in flight")
                    self.infer_q.put(_END)
                break
        if self.notifier is not None and self.stop.is_set():
            self.notifier.stopping()
        threads[1].join()
        tick_done.set()
        ticker.join()
        with self.lock:
            left = list(self.inflight.values())
        for p in left:
            self._failsafe(p, "shutdown", "service stopped before this part was decided")
        self.out_q.put(_END)
        threads[2].join()
        return self.summary()

    def summary(self) -> dict:
        c = self.counters.snapshot()
        out = {"frames": c.get("frames", 0), "decisions": c.get("decisions", 0), "rejects": c.get("rejects", 0),
               "passes": c.get("passes", 0),
               "failsafe": sum(v for k, v in c.items() if k.startswith("failsafe:")),
               "failsafe_by_reason": {k[9:]: v for k, v in c.items() if k.startswith("failsafe:")},
               "alarms": {k[6:]: v for k, v in c.items() if k.startswith("alarm:")},
               "late_results": c.get("late_results", 0), "infer_requests": self.jobs,
               "decision_rule": self.rule}
        if self.latencies:
            lat = np.asarray(self.latencies)
            out["latency_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
            out["latency_p99_ms"] = round(float(np.percentile(lat, 99)), 2)
        out["inference_precision"] = getattr(self.model, "inference_precision", "")
        out["int8_kernels"] = getattr(self.model, "int8_kernels", "")
        if self.plc is not None:
            out["plc"] = self.plc.stats()
        if self.audit is not None:
            out["audit"] = self.audit.stats()
        if self.archive is not None:
            out["archive"] = self.archive.stats()
        src = self.source.status() if hasattr(self.source, "status") else {}
        if src:
            out["source"] = src
        return out


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[-1] if text else type(err).__name__)[:200]


__all__ = ["Pipeline", "Part", "Counters", "REJECT", "PASS", "math"]
