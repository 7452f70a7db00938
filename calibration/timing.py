"""Latency of compiled OpenVINO models at batch 1, timed side by side.

Two models timed minutes apart on a shared host are not comparable: load from other jobs comes and goes.
Timed in interleaved rounds (one inference of each model per round), that load hits every model alike, so
their ratio means something even on a busy machine. edge-calibrate's speed check and
benchmarks/quantization.py both time this way.
"""

from __future__ import annotations

import time

import numpy as np


def interleaved_times_ms(compiled_models: list, frame: np.ndarray, runs: int, warmup: int) -> list[np.ndarray]:
    """Per model, `runs` wall times in ms of one batch-1 inference of `frame` (the model's input without its batch
    axis), after `warmup` untimed rounds; the models take turns, one inference each per round."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    requests = [c.create_infer_request() for c in compiled_models]
    batch = {0: frame[None]}
    times = np.zeros((len(requests), runs))
    for i in range(warmup + runs):
        for j, request in enumerate(requests):
            t0 = time.perf_counter()
            request.infer(batch)
            if i >= warmup:
                times[j, i - warmup] = 1e3 * (time.perf_counter() - t0)
    return list(times)
