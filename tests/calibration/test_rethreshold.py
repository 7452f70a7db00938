"""On-site re-thresholding: good parts imaged at the line set a new image threshold in the IR's
metadata, with the bound their number supports, without re-export."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import copy_ir


def _copy_ir(ir, folder):
    folder.mkdir()
    return copy_ir(ir, folder / "tile.xml")


def test_rethreshold_sets_the_threshold_from_site_images_and_states_its_bound(fp32_ir, synthetic_data, tmp_path, capsys):
    from calibration.cli import main
    from calibration.rethreshold import site_scores
    from calibration.thresholds import clopper_pearson_upper
    from edge.model import AnomalyModel

    ir = _copy_ir(fp32_ir, tmp_path / "ir")
    good = sorted((synthetic_data / "train" / "good").iterdir())[:30]
    site = tmp_path / "site"
    site.mkdir()
    for p in good:
        shutil.copy(p, site / p.name)
    assert main(["--model", str(ir), "--rethreshold", str(site), "--target-frr", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    scores = sorted(site_scores(ir, sorted(site.iterdir())), reverse=True)
    info = AnomalyModel(ir).info
    assert info.image_threshold == out["image_threshold"] and info.n_calibration_good == 30
    # 5 % of 30: one good part may be rejected, the threshold sits just above the second-largest score
    assert scores[1] < info.image_threshold <= scores[0]
    assert out["rejected_good"] == 1
    assert info.frr_upper_bound == pytest.approx(clopper_pearson_upper(1, 30))
    assert info.target_frr == 0.05 and info.calibrated_at
    assert AnomalyModel(fp32_ir).info.image_threshold != info.image_threshold  # the shipped IR is untouched


@pytest.mark.parametrize("n, words", [(5, "at least 20 good parts"), (None, "not found")])
def test_rethreshold_refuses_too_few_or_missing_images_in_one_line(fp32_ir, synthetic_data, tmp_path, capsys, n, words):
    from calibration.cli import main

    ir = _copy_ir(fp32_ir, tmp_path / "ir")
    site = tmp_path / "site"
    if n is not None:
        site.mkdir()
        for p in sorted((synthetic_data / "train" / "good").iterdir())[:n]:
            shutil.copy(p, site / p.name)
    before = ir.read_bytes()
    assert main(["--model", str(ir), "--rethreshold", str(site)]) != 0
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert ir.read_bytes() == before
