"""Side-by-side latency timing of compiled IRs (calibration.timing), as edge-calibrate's speed check and
benchmarks/quantization.py use it."""

import numpy as np
import pytest

from calibration.timing import interleaved_times_ms


def _compiled(matmuls: int):
    import openvino as ov
    from openvino import opset13 as ops

    p = ops.parameter([1, 256, 256], np.float32)
    x = p
    w = ops.constant(np.eye(256, dtype=np.float32))
    for _ in range(matmuls):
        x = ops.matmul(x, w, False, False)
    return ov.Core().compile_model(ov.Model([ops.relu(x)], [p], f"mm{matmuls}"), "CPU",
                                   {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"})


def test_each_model_gets_its_runs_and_the_heavier_one_takes_longer():
    light, heavy = _compiled(1), _compiled(60)  # 60 chained 256x256 matmuls: two orders of magnitude more work
    frame = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    t_light, t_heavy = interleaved_times_ms([light, heavy], frame, runs=15, warmup=2)
    assert t_light.shape == t_heavy.shape == (15,)
    assert (t_light > 0).all() and (t_heavy > 0).all()
    assert np.median(t_heavy) > 3 * np.median(t_light)


class _Recorder:
    """Stands in for a compiled model only to record the order of inferences (the timing of real compiled models is
    the test above)."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def create_infer_request(self):
        return self

    def infer(self, batch):
        self.log.append(self.name)


def test_models_take_turns_of_untimed_settling_then_timed_inferences():
    log = []
    times = interleaved_times_ms([_Recorder("a", log), _Recorder("b", log)], np.zeros(1, np.float32), runs=5, warmup=1,
                                 turn=3, settle=1)
    assert [t.shape for t in times] == [(5,), (5,)]
    # warm-up, then turns: 1 settling + 3 timed each, then 1 settling + the last 2 timed each
    assert "".join(log) == "ab" + "aaaa" + "bbbb" + "aaa" + "bbb"


def test_a_run_count_below_one_is_refused():
    with pytest.raises(ValueError, match="runs >= 1"):
        interleaved_times_ms([], np.zeros((1,), np.float32), runs=0, warmup=0)
