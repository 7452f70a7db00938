"""The IR carries its own metadata, and the runtime checks what it is fed."""

import numpy as np
import openvino as ov
import pytest

from edge.decision import verdict_for_score
from edge.errors import FrameError, ModelError
from edge.metadata import ModelInfo, read_info, update_info, write_info
from edge.model import AnomalyModel


def _tiny_model():
    from openvino import opset13 as ops

    p = ops.parameter([1, 4], np.float32, name="x")
    return ov.Model([ops.relu(p)], [p], "t")


def test_metadata_round_trips_through_a_saved_ir(tmp_path):
    m = _tiny_model()
    info = ModelInfo(edge_inspect_version="0.1.0", input_height=120, input_width=80, image_threshold=3.25,
                     latent_channels=[24, 40, 112], backbone="tf_efficientnet_lite0")
    write_info(m, info)
    ov.save_model(m, str(tmp_path / "m.xml"))
    back = read_info(ov.Core().read_model(str(tmp_path / "m.xml")))
    assert back == info
    assert back.input_size == (120, 80)


def test_update_info_rejects_unknown_keys():
    m = _tiny_model()
    write_info(m, ModelInfo(edge_inspect_version="x", input_height=1, input_width=1))
    assert update_info(m, image_threshold="7.5").image_threshold == 7.5
    with pytest.raises(ModelError, match="unknown metadata key"):
        update_info(m, image_treshold=1)


def test_model_refuses_a_frame_of_the_wrong_size(int8_ir):
    model = AnomalyModel(int8_ir)
    h, w = model.input_size
    with pytest.raises(FrameError, match="does not match"):
        model.infer(np.zeros((h + 1, w, 3), np.uint8))
    with pytest.raises(FrameError):
        model.infer(np.zeros((h, w, 3), np.float32))
    result = model.infer(np.zeros((h, w, 3), np.uint8))
    assert result.anomaly_map.shape == (h, w)
    assert [z.shape[0] for z in result.zsq] == sorted((z.shape[0] for z in result.zsq), reverse=True)
    assert model.inference_precision == "f32"


def test_nan_score_is_never_a_pass():
    assert verdict_for_score(float("nan"), 1.0)[0] == "reject"
    assert verdict_for_score(1.0, 1.0)[0] == "reject"
    assert verdict_for_score(0.99, 1.0)[0] == "pass"


def test_async_results_without_the_map_keep_score_and_latents(int8_ir):
    """keep_map=False (no evidence archive) skips only the map copy: the decision inputs match."""
    model = AnomalyModel(int8_ir)
    h, w = model.input_size
    frame = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    got = {}
    for keep in (True, False):
        aq = model.async_queue(2, lambda result, tag: got.__setitem__(tag, result), keep_map=keep)
        aq.start_async(frame[None], keep)
        aq.wait_all()
    assert got[True].anomaly_map.shape == (h, w)
    assert got[False].anomaly_map is None
    assert got[False].score == got[True].score
    for a, b in zip(got[False].zsq, got[True].zsq):
        np.testing.assert_array_equal(a, b)


def test_request_queue_returns_the_request_after_a_rejected_input(int8_ir):
    """One request: a bad input raises at start and must not leak the request (no deadlock after)."""
    model = AnomalyModel(int8_ir)
    h, w = model.input_size
    got = []
    aq = model.async_queue(1, lambda result, tag: got.append((tag, result)))
    with pytest.raises(Exception):
        aq.start_async(np.zeros((1, h + 3, w, 3), np.uint8), "bad")
    for tag in ("a", "b"):
        aq.start_async(np.zeros((1, h, w, 3), np.uint8), tag)
    aq.wait_all()
    assert [t for t, _ in got] == ["a", "b"]
    assert got[0][1].score == got[1][1].score


def test_an_ir_pinned_to_one_thread_compiles_with_one_and_threads_overrides_it(fp32_ir, tmp_path):
    """edge-calibrate pins an IR whose scores differ between 1 thread and all cores (ModelInfo.inference_threads):
    edge-inspect must then run it as it was calibrated, unless --threads says otherwise."""
    from calibration.cli import set_metadata
    from edge.model import default_threads
    from tests.helpers import copy_ir

    pinned = copy_ir(fp32_ir, tmp_path / "pinned.xml")
    assert set_metadata(str(pinned), ["inference_threads=1"]) == {"inference_threads": 1}

    model = AnomalyModel(pinned)
    assert model.info.inference_threads == 1
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert AnomalyModel(pinned, threads=2).compiled.get_property("INFERENCE_NUM_THREADS") == 2
    unpinned = AnomalyModel(fp32_ir)
    assert unpinned.info.inference_threads == 0
    if default_threads() > 1:
        assert unpinned.compiled.get_property("INFERENCE_NUM_THREADS") != 1


def test_compile_config_without_metadata_follows_threads_alone():
    """edge-calibrate compiles candidate graphs that have no ModelInfo yet with the edge's own settings
    (f32, LATENCY): `threads` alone decides, and 0 leaves OpenVINO's all-core default."""
    from edge.model import compile_config

    assert compile_config(None, 1) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                       "INFERENCE_NUM_THREADS": 1}
    assert "INFERENCE_NUM_THREADS" not in compile_config(None, 0)
    assert compile_config(ModelInfo(inference_threads=1), 0)["INFERENCE_NUM_THREADS"] == 1
