"""Locality training (training/locality.py): pasted synthetic defects must not raise the cost far from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.locality import far_cells, far_excess, paste


def test_paste_is_seeded_and_its_near_mask_covers_every_changed_pixel():
    img = np.full((64, 96, 3), 128, np.uint8)
    a, near_a = paste(img, seed=7, radius=6)
    b, near_b = paste(img, seed=7, radius=6)
    c, _ = paste(img, seed=8, radius=6)
    assert np.array_equal(a, b) and np.array_equal(near_a, near_b) and not np.array_equal(a, c)
    changed = np.abs(a.astype(int) - img).max(2) > 0
    assert changed.any() and near_a[changed].all()
    assert 0 < near_a.mean() < 0.9  # a neighbourhood, not the whole image


def test_far_cells_exclude_every_cell_that_touches_the_near_region():
    near = torch.zeros(1, 1, 32, 32)
    near[0, 0, 9:11, 17:19] = 1  # pixels in cell (1, 2) of an 8-px grid
    (cells,) = far_cells(near, [(4, 4)])
    expected = torch.ones(4, 4)
    expected[1, 2] = 0
    assert torch.equal(cells[0], expected)


def test_far_excess_counts_only_far_cells_and_only_increases():
    torch.manual_seed(0)
    clean = [torch.randn(2, 6, 4, 4)]
    far = [torch.ones(2, 4, 4)]
    far[0][:, 0, 0] = 0  # the defect's cell
    base = far_excess(clean, [clean[0].clone()], far, (6,))
    assert float(base) == 0.0
    near_change = clean[0].clone()
    near_change[:, :, 0, 0] *= 10
    assert float(far_excess(clean, [near_change], far, (6,))) == 0.0
    lower = clean[0].clone()
    lower[:, :, 2, 2] *= 0.1
    assert float(far_excess(clean, [lower], far, (6,))) == 0.0
    higher = clean[0].clone().requires_grad_(True)
    grown = higher * torch.where(torch.arange(4)[None, None, :, None] == 3, 3.0, 1.0)
    assert float(far_excess(clean, [grown], far, (6,)).detach()) > 0
    (grad,) = torch.autograd.grad(far_excess(clean, [grown], far, (6,)), higher)
    assert float(grad[:, :, :3].abs().max()) == 0.0 and float(grad[:, :, 3].abs().max()) > 0


def test_training_with_locality_lowers_the_far_cost_of_pasted_defects(tmp_path):
    """The same tiny model trained on the same tiles with and without the term: with it, pasted defects raise
    the cost of far cells less (measured on the pasted views the term saw and on freshly pasted good tiles)."""
    from training.checkpoint import load_model
    from training.data import load_folder
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, extract, extract_pasted, train

    data = generate(tmp_path / "data", SyntheticConfig(train=24, test_good=8, test_defect=2, size=96, seed=4))
    overrides = {"stages": [1, 2], "input_size": [64, 64], "flow_depth": [3, 3], "pos_dim": 8}
    excess = {}
    for weight in (0.0, 2.0):
        run = train(TrainConfig(data=str(data), out=str(tmp_path / f"run{weight}"), model_overrides=overrides,
                                epochs=6, batch_size=4, threads=1, progress=False, locality=weight, locality_radius=8))
        model, _ = load_model(run)
        good = [s for s in load_folder(data, require_test=True).test if s.defect == "good"]
        with torch.no_grad():
            clean = extract(model, good, progress=False)
            pasted, far = extract_pasted(model, good, radius=8, progress=False, seed=11)
            zc, _ = model.flow(clean)
            zp, _ = model.flow(pasted)
            excess[weight] = float(far_excess(zc, zp, far, model.channels))
    assert excess[2.0] < 0.7 * excess[0.0], excess


def test_locality_refuses_a_negative_weight_other_models_and_no_radius_before_writing_anything(tmp_path, capsys):
    from training.cli import main
    from training.data import DataError
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    data = generate(tmp_path / "data", SyntheticConfig(train=12, test_good=2, test_defect=1, size=64, seed=0))
    for kwargs in ({"locality": -1.0}, {"locality": 1.0, "model": "uflow"}, {"locality": 1.0, "locality_radius": 0}):
        with pytest.raises(DataError, match="locality"):
            train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, progress=False, **kwargs))
    assert not (tmp_path / "run").exists()
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--locality", "-1", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--locality -1.0" in err
