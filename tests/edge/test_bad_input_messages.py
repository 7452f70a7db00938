"""Bad input gets one line naming the problem and a non-zero exit, never a traceback."""

import shutil
import time

from tests.helpers import one_line_error, run_cli


def test_missing_camera_fails_within_five_seconds(int8_ir):
    t0 = time.monotonic()
    proc = run_cli("edge.cli", "--model", str(int8_ir), "--camera", "7", timeout=60)
    elapsed = time.monotonic() - t0
    line = one_line_error(proc, "edge-inspect")
    assert "camera 7" in line
    assert elapsed < 5 + 4  # 5 s budget for the camera, plus interpreter and model start-up


def test_missing_model_file_is_named(tmp_path, synthetic_data):
    line = one_line_error(run_cli("edge.cli", "--model", str(tmp_path / "nope.xml"), "--images", str(synthetic_data / "test" / "good")), "edge-inspect")
    assert "nope.xml not found" in line


def test_corrupt_model_xml_is_reported(tmp_path, synthetic_data):
    (tmp_path / "bad.xml").write_text("this is not an IR\n")
    (tmp_path / "bad.bin").write_bytes(b"\0" * 16)
    proc = run_cli("edge.cli", "--model", str(tmp_path / "bad.xml"), "--images", str(synthetic_data / "test" / "good"))
    assert "corrupt" in one_line_error(proc, "edge-inspect")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_truncated_weights_are_reported(tmp_path, int8_ir, synthetic_data):
    shutil.copy(int8_ir, tmp_path / "t.xml")
    (tmp_path / "t.bin").write_bytes(int8_ir.with_suffix(".bin").read_bytes()[:1000])
    line = one_line_error(run_cli("edge.cli", "--model", str(tmp_path / "t.xml"), "--images", str(synthetic_data / "test" / "good")), "edge-inspect")
    assert "truncated" in line or "corrupt" in line


def test_empty_image_folder_is_reported(tmp_path, int8_ir):
    (tmp_path / "empty").mkdir()
    assert "holds no images" in one_line_error(run_cli("edge.cli", "--model", str(int8_ir), "--images", str(tmp_path / "empty")), "edge-inspect")


def test_non_mvtec_folder_is_reported_by_eval_and_train(tmp_path, int8_ir):
    (tmp_path / "notes.txt").write_text("no images here")
    assert "not in MVTec layout" in one_line_error(run_cli("calibration.evaluate", "--model", str(int8_ir), "--data", str(tmp_path)), "edge-eval")
    assert "not in MVTec layout" in one_line_error(run_cli("training.cli", "--data", str(tmp_path), "--out", str(tmp_path / "run")), "edge-train")


def test_ir_without_edge_metadata_is_refused(tmp_path, synthetic_data):
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    p = ops.parameter([1, 128, 128, 3], np.uint8, name="image")
    ov.save_model(ov.Model([ops.convert(p, "f32")], [p], "foreign"), str(tmp_path / "foreign.xml"))
    line = one_line_error(run_cli("edge.cli", "--model", str(tmp_path / "foreign.xml"), "--images", str(synthetic_data / "test" / "good")), "edge-inspect")
    assert "no edge-inspect metadata" in line
