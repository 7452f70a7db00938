"""Latency of compiled OpenVINO models at batch 1, timed side by side.

Two models timed minutes apart on a shared host are not comparable: load from other jobs comes and goes.
Timed in interleaved turns, that load hits every model alike, so their ratio means something even on a busy
machine. edge-calibrate's speed check and benchmarks/quantization.py both time this way.

A turn is several inferences of one model, and the first ones after another model ran are not timed: those
are slower (the model's weights and its thread pool are cold), and an edge PC runs one model back to back, so
it never pays that cost. Measured here (AMX Xeon, magnetic_tile's MS-Flow, turns of 10, 60 turns each,
2026-12-02): INT8 / FP32 of the medians 0.536 at 1 thread and 0.667 at 2 threads over inferences 3-10 of a
turn, 0.561 and 0.704 over the first inference of a turn, which is all that one inference per turn (the method
before) timed: the INT8 IR pays the switch more than the float one.
"""

from __future__ import annotations

import time

import numpy as np

TURN = 10  # timed inferences of one model per turn: a fraction of a second, so load changes reach all models
SETTLE = 2  # untimed inferences that start each turn


def interleaved_times_ms(compiled_models: list, frame: np.ndarray, runs: int, warmup: int, turn: int = TURN,
                         settle: int = SETTLE) -> list[np.ndarray]:
    """Per model, `runs` wall times in ms of one batch-1 inference of `frame` (the model's input without its batch
    axis), after `warmup` untimed inferences of each; the models take turns of `settle` untimed and then up to
    `turn` timed inferences each."""
    if runs < 1 or warmup < 0 or turn < 1 or settle < 0:
        raise ValueError(f"need runs >= 1, warmup >= 0, turn >= 1 and settle >= 0, got runs={runs}, warmup={warmup}, "
                         f"turn={turn}, settle={settle}")
    requests = [c.create_infer_request() for c in compiled_models]
    batch = {0: frame[None]}
    for request in requests:
        for _ in range(warmup):
            request.infer(batch)
    times = np.zeros((len(requests), runs))
    for start in range(0, runs, turn):
        for j, request in enumerate(requests):
            for _ in range(settle):
                request.infer(batch)
            for i in range(start, min(start + turn, runs)):
                t0 = time.perf_counter()
                request.infer(batch)
                times[j, i] = 1e3 * (time.perf_counter() - t0)
    return list(times)
