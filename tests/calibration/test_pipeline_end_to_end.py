"""train -> calibrate -> inspect on a small synthetic set, with parity between torch and the IRs."""

import json
import shutil

import numpy as np
from scipy.stats import spearmanr

from calibration.scoring import score_ir, score_torch
from edge.model import AnomalyModel
from training.checkpoint import load_model
from training.data import load_folder
from tests.helpers import copy_ir, run_cli


def test_fp32_ir_matches_torch_at_f32(trained_run, fp32_ir, synthetic_data):
    test = load_folder(synthetic_data).test
    model, _ = load_model(trained_run)
    ref = score_torch(model, test)
    ir = score_ir(AnomalyModel(fp32_ir, precision="f32"), test)
    np.testing.assert_allclose(ir.scores, ref.scores, rtol=1e-3)
    worst = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-9)) for a, b in zip(ir.maps, ref.maps))
    assert worst < 1e-3


def test_int8_scores_rank_parts_like_torch(trained_run, int8_ir, synthetic_data):
    test = load_folder(synthetic_data).test
    model, _ = load_model(trained_run)
    ref = score_torch(model, test, keep_maps=False).scores
    got = score_ir(AnomalyModel(int8_ir), test, keep_maps=False).scores
    rho = spearmanr(ref, got).statistic
    assert rho >= 0.95, rho


def test_edge_inspect_rejects_defective_parts(int8_ir, synthetic_data, tmp_path):
    folder = tmp_path / "line"
    folder.mkdir()
    data = load_folder(synthetic_data)
    for s in data.test:
        shutil.copy(s.path, folder / f"{s.defect}-{s.path.name}")
    proc = run_cli("edge.cli", "--model", str(int8_ir), "--images", str(folder))
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(decisions) == len(data.test)
    defective = [d for d in decisions if not d["origin"].startswith("good-")]
    good = [d for d in decisions if d["origin"].startswith("good-")]
    caught = sum(d["verdict"] == "reject" for d in defective) / len(defective)
    passed = sum(d["verdict"] == "pass" for d in good) / len(good)
    assert caught >= 0.8, caught
    assert passed >= 0.6, passed
    assert not [d for d in decisions if d["reason"].startswith("failsafe")]
    assert all("image_threshold" in d["reason"] for d in decisions)  # every verdict states the score rule's outcome


def test_edge_eval_reports_auroc_for_the_ir_and_the_checkpoint(int8_ir, trained_run, synthetic_data, tmp_path):
    for model in (int8_ir, trained_run):
        out = tmp_path / f"{model.name}.json"
        proc = run_cli("calibration.evaluate", "--model", str(model), "--data", str(synthetic_data), "--json", str(out))
        assert proc.returncode == 0, proc.stderr
        result = json.loads(out.read_text())
        assert result["image_auroc"] >= 0.9
        assert result["pixel_auroc"] >= 0.9


def test_threshold_rewritten_on_site_takes_effect_without_reexport(int8_ir, synthetic_data, tmp_path):
    xml = copy_ir(int8_ir, tmp_path / "tile.xml")
    proc = run_cli("calibration.cli", "--model", str(xml), "--set", "image_threshold=1e9")
    assert proc.returncode == 0, proc.stderr
    assert AnomalyModel(xml).info.image_threshold == 1e9
    run = run_cli("edge.cli", "--model", str(xml), "--images", str(synthetic_data / "test" / "crack"), "--decision", "score")
    assert run.returncode == 0, run.stderr
    assert all(json.loads(line)["verdict"] == "pass" for line in run.stdout.splitlines())


def test_calibration_report_states_threshold_bound_and_what_stayed_float(int8_ir):
    report = json.loads(int8_ir.with_suffix(".report.json").read_text())
    thr = report["thresholds"]["image"]
    assert thr["n_good"] >= 4 and 0 < thr["frr_upper_bound"] <= 1
    assert report["precision"] == "int8"
    speed = report["shipped"]["latency_vs_float_interleaved_ms_1thread"]  # what the speed warning compares
    assert speed["float"] > 0 and speed["shipped"] > 0
    chosen = [c for c in report["quantization"]["candidates"] if c["accepted"]]
    assert chosen and chosen[0]["kept_in_float_ops"] > 0 and report["quantization"]["chosen"] == chosen[0]["split"]
    assert report["quantization"]["calibration_set"] == chosen[0]["calibration_set"]
    tried = [(c["split"], c["calibration_set"]) for c in report["quantization"]["candidates"]]
    assert tried[0] == ("backbone+subnets", "good + synthetic defects")  # fastest split, defects' ranges first
    assert all(b == (a[0], "good only") for a, b in zip(tried[::2], tried[1::2]))  # then the same split on good parts
    info = AnomalyModel(int8_ir).info
    assert info.image_threshold == thr["threshold"] and info.quantized_scope == chosen[0]["split"]
    assert len(info.latent_null_scale) == len(info.latent_channels) and min(info.latent_null_scale) >= 1.0
    assert int8_ir.with_suffix(".report.html").read_text().count("<table") >= 3
