"""The calibrated false-reject rate holds on good parts that calibration never saw.

edge-calibrate sets the image threshold on held-out good images and states a one-sided 95 %
Clopper–Pearson upper bound of the false-reject rate that their number supports. Fresh good
parts from the same generator (same distribution, new draws) must not be rejected significantly
more often than that bound says.

Why "significantly": the bound is itself a 95 % statement. With k = 0 of n held-out parts above
the threshold, the threshold's true rate exceeds the bound in exactly 5 % of calibration draws,
and the 150 fresh parts only estimate that rate. Comparing the point estimate with the bound
fails whenever the true rate sits near it, for any reshuffle of the pipeline (switching NNCF to
asymmetric activations moved this fixture from 33 to 40 of 150 against a bound of 25.9 %).
So the test asserts that even the 95 % lower bound of the fresh rate is within the stated bound:
what `calibration.thresholds.frr_check` calls "clearly above" never happens here.

(On the real magnetic_tile set this does not hold: its test/good images come
from a brighter capture session than train/good; benchmarks/results/quantization.md reports it.)
"""

from __future__ import annotations

import json

import numpy as np

N_FRESH = 150


def test_false_reject_rate_on_fresh_good_parts_is_within_the_stated_bound(int8_ir, synthetic_data, tmp_path):
    from calibration.thresholds import clopper_pearson_lower, clopper_pearson_upper
    from edge.decision import verdict_for_score
    from edge.model import AnomalyModel
    from training.data import load_image
    from training.synthetic import SyntheticConfig, generate

    report = json.loads(int8_ir.with_suffix(".report.json").read_text())
    image = report["thresholds"]["image"]
    model = AnomalyModel(int8_ir)
    assert model.info.image_threshold == image["threshold"]
    assert model.info.frr_upper_bound == image["frr_upper_bound"]  # the bound travels in the IR
    assert image["frr_upper_bound"] == clopper_pearson_upper(image["rejected_good"], image["n_good"])

    # same generator and size as the fixture's data set, a seed it never used: new good parts only
    fresh = generate(tmp_path / "fresh", SyntheticConfig(train=0, test_good=N_FRESH, test_defect=0, size=128, seed=2024))
    paths = sorted((fresh / "test" / "good").glob("*.png"))
    assert len(paths) == N_FRESH
    rejected = sum(verdict_for_score(model.infer(load_image(p, model.input_size)).score, model.info.image_threshold)[0]
                   == "reject" for p in paths)
    measured = rejected / N_FRESH
    assert clopper_pearson_lower(rejected, N_FRESH) <= image["frr_upper_bound"], (
        f"{rejected}/{N_FRESH} fresh good parts rejected ({measured:.1%}), clearly above the stated 95 % bound "
        f"{image['frr_upper_bound']:.1%} from {image['n_good']} held-out good images")
    assert np.isfinite(measured)


def test_thresholds_come_from_the_scores_edge_inspect_computes_on_the_held_out_parts(int8_ir, trained_run):
    # edge-calibrate once scored them at 1 thread while edge-inspect runs on all cores; on a Xeon with AMX an INT8
    # IR moved up to 15 % between the two and the threshold rejected 42 % of fresh good parts (calibration/calibrate.py)
    from pathlib import Path

    from edge.model import AnomalyModel
    from training.checkpoint import load_payload
    from training.data import load_image

    report = json.loads(int8_ir.with_suffix(".report.json").read_text())
    model = AnomalyModel(int8_ir)  # as edge-inspect opens it: f32, threads 0
    holdout = load_payload(Path(trained_run) / "checkpoint.pt")["holdout"]
    edge_scores = [model.infer(load_image(Path(p), model.input_size)).score for p in holdout]
    np.testing.assert_allclose(edge_scores, report["thresholds"]["holdout_scores"], rtol=1e-5, atol=1e-6)
