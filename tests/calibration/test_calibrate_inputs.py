"""edge-calibrate with no defect images, and its one-line errors for data it cannot calibrate on."""

import json
import shutil

import cv2
import pytest

from calibration.calibrate import CalibrationConfig, calibrate
from training.data import DataError
from tests.helpers import one_line_error, run_cli


def _copy_train_only(src, dst):
    shutil.copytree(src / "train", dst / "train")
    return dst


def test_calibrating_without_defect_images_validates_on_synthetic_anomalies_and_says_what_it_skipped(tmp_path, trained_run, synthetic_data):
    data = _copy_train_only(synthetic_data, tmp_path / "goods")
    out = tmp_path / "tile.xml"
    proc = run_cli("calibration.cli", "--checkpoint", str(trained_run), "--data", str(data), "--out", str(out),
                   "--precision", "fp32", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["validation"]["source"] == "synthetic anomalies from good images"
    assert report["validation"]["n_defective"] > 0 and report["float"]["image_auroc"] > 0.5
    assert any("labelled defects" in s for s in report["skipped"])
    assert "miss_rate_on_labelled_defects" not in report["thresholds"]
    assert json.loads(proc.stdout)["validated_on"] == "synthetic anomalies from good images"


def test_images_of_mixed_sizes_need_an_explicit_flag(tmp_path, trained_run, synthetic_data):
    data = _copy_train_only(synthetic_data, tmp_path / "mixed")
    (data / "test" / "good").mkdir(parents=True)
    img = cv2.imread(str(next((synthetic_data / "test" / "good").iterdir())))
    cv2.imwrite(str(data / "test" / "good" / "odd.png"), cv2.resize(img, (100, 60)))
    proc = run_cli("calibration.cli", "--checkpoint", str(trained_run), "--data", str(data), "--out", str(tmp_path / "t.xml"))
    assert "--allow-mixed-sizes" in one_line_error(proc, "edge-calibrate")


def test_a_model_trained_on_too_few_good_images_is_refused(tmp_path, synthetic_data):
    from training.train import TrainConfig, train

    small = tmp_path / "small" / "train" / "good"
    small.mkdir(parents=True)
    for p in sorted((synthetic_data / "train" / "good").iterdir())[:14]:
        shutil.copy(p, small / p.name)
    run = train(TrainConfig(data=str(tmp_path / "small"), out=str(tmp_path / "run"), model_overrides={"input_size": [64, 64]},
                            epochs=1, progress=False))
    with pytest.raises(DataError, match="at least 20"):
        calibrate(CalibrationConfig(str(run), str(tmp_path / "small"), str(tmp_path / "t.xml"), progress=False))


def test_a_checkpoint_that_is_not_ours_and_a_folder_without_good_images_get_one_line(tmp_path, trained_run):
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "checkpoint.pt").write_bytes(b"not a torch file")
    proc = run_cli("calibration.cli", "--checkpoint", str(bogus), "--data", str(tmp_path), "--out", str(tmp_path / "t.xml"))
    assert "not from edge-train" in one_line_error(proc, "edge-calibrate")
    empty = tmp_path / "empty"
    (empty / "train" / "good").mkdir(parents=True)
    proc = run_cli("calibration.cli", "--checkpoint", str(trained_run), "--data", str(empty), "--out", str(tmp_path / "t.xml"))
    assert "no good images" in one_line_error(proc, "edge-calibrate")


def test_8_bit_int8_weights_are_refused_on_a_host_without_vnni_that_could_not_check_them(tmp_path, trained_run,
                                                                                        synthetic_data, monkeypatch, capsys):
    import edge.cpu
    from calibration.cli import main

    cpuinfo = tmp_path / "cpuinfo"  # the CPU is the one thing a test cannot swap: point edge.cpu at a file
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse sse2 avx avx2 fma\n")
    monkeypatch.setattr(edge.cpu, "CPUINFO", cpuinfo)
    code = main(["--checkpoint", str(trained_run), "--data", str(synthetic_data), "--out", str(tmp_path / "t.xml"),
                 "--int8-weights", "8", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert "--int8-weights 8 needs VNNI or AMX-INT8 on the calibration host" in err[0] and "AVX2 only" in err[0]
    assert not (tmp_path / "t.xml").exists()
