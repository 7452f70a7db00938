"""edge-eval: AUPRO against hand-computed cases, per-defect breakdown, complexity and the HTML report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.metrics import aupro, image_auroc, pixel_auroc


def _masks():
    masks = [np.zeros((40, 40), bool) for _ in range(4)]
    masks[0][5:15, 5:15] = True
    masks[1][20:30, 2:38] = True
    return masks


def test_aupro_perfect_random_and_inverted():
    rng = np.random.default_rng(0)
    masks = _masks()
    perfect = [m + 0.01 * rng.random(m.shape) for m in masks]
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=1e-3)
    random = [rng.random(m.shape) for m in masks]
    assert aupro(masks, random) == pytest.approx(0.15, abs=0.03)  # PRO ≈ FPR: ∫₀^0.3 x dx / 0.3
    inverted = [-p for p in perfect]
    assert aupro(masks, inverted) < 0.01


def test_aupro_weights_regions_not_pixels():
    """A small region found and a large one missed: PRO = (1 + FPR) / 2 whatever their sizes, so the
    normalised area is 0.5 + 0.5 · 0.15 = 0.575 (the missed region's noise rises with the good pixels')."""
    masks = [np.zeros((50, 50), bool)]
    masks[0][2:4, 2:4] = True  # 4 pixels, found
    masks[0][20:45, 20:45] = True  # 625 pixels, missed
    amap = np.zeros((50, 50))
    amap[2:4, 2:4] = 1.0
    assert aupro(masks, [amap + 1e-3 * np.random.default_rng(1).random((50, 50))]) == pytest.approx(0.575, abs=0.02)
    assert pixel_auroc(masks, [amap]) < 0.6  # pixel AUROC is dominated by the large region


def test_image_auroc_signature():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert np.isnan(image_auroc([0, 0], [0.1, 0.2]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("eval")
    data = generate(root / "data", SyntheticConfig(train=12, test_good=3, test_defect=2, size=64, seed=1))
    train(TrainConfig(data=str(data), out=str(root / "run"), epochs=1, batch_size=4, threads=1, progress=False,
                      model_overrides={"stages": [1, 2], "input_size": [32, 32], "flow_depth": [1, 1], "pos_dim": 8}))
    return data, root / "run"


def test_evaluate_reports_everything(tiny_run, tmp_path):
    from calibration.evaluate import main

    data, run = tiny_run
    out, html = tmp_path / "eval.json", tmp_path / "report.html"
    assert main(["--model", str(run), "--data", str(data), "--json", str(out), "--report", str(html), "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "per_defect", "per_defect_image_auroc", "complexity"):
        assert key in result
    assert set(result["per_defect"]) == {"crack", "scratch", "spot"}
    for v in result["per_defect"].values():
        assert v["n"] == 2 and {"image_auroc", "pixel_auroc", "aupro"} <= set(v)
    c = result["complexity"]
    assert c["params_flow_m"] > 0 and c["params_backbone_m"] > 0 and c["gmacs_flow"] > 0 and c["gmacs_backbone"] > 0
    page = html.read_text()
    assert "Worst-scored good parts" in page and "Worst-detected defects" in page
    assert page.count("data:image/png;base64,") >= 3 + 2 * 6  # 3 good, 6+6 defect tiles
