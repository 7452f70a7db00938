"""Seeded augmentation of good training images before the backbone's features are cached."""

import numpy as np
import pytest
import torch

from training.augment import PRESETS, AugmentConfig, augment, preset, views
from training.models import create_model, make_config
from training.train import extract
from training.synthetic import SyntheticConfig, generate
from training.data import load_folder
from tests.helpers import TINY_MODEL


def _image(seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    return rng.integers(30, 220, size=(*size, 3), dtype=np.uint8)


def test_views_are_reproducible_from_the_seed_and_differ_between_seeds():
    img = _image()
    cfg = preset("texture")
    a, b, c = views(img, cfg, 3, seed=1), views(img, cfg, 3, seed=1), views(img, cfg, 3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_shape_and_dtype(name):
    img = _image(size=(40, 30))
    for v in views(img, preset(name), 4, seed=0):
        assert v.shape == img.shape and v.dtype == np.uint8 and v.flags["C_CONTIGUOUS"]


def test_none_makes_no_copies_and_an_unknown_preset_is_refused():
    assert views(_image(), preset("none"), 5, seed=0) == []
    with pytest.raises(ValueError, match="unknown augmentation"):
        preset("sideways")


def test_gain_moves_the_mean_brightness_both_ways():
    img = np.full((16, 16, 3), 100, np.uint8)
    rng = np.random.default_rng(0)
    means = [augment(img, AugmentConfig(gain=0.3), rng).mean() for _ in range(40)]
    assert min(means) < 85 and max(means) > 115 and all(69 <= m <= 131 for m in means)


def test_exposure_blows_out_the_highlights_of_a_bright_image_and_keeps_its_geometry():
    """An over-exposed session (magnetic_tile's exp6) shows flat white patches; the exposure preset makes them."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(170, 40, (64, 64, 3)), 0, 254).astype(np.uint8)
    out = views(img, preset("exposure"), 8, seed=0)
    assert max((v == 255).mean() for v in out) > 0.1 > (img == 255).mean()
    for v in out:  # a gain only: the order of pixel values is kept where nothing clipped
        kept = v < 255
        assert np.all(np.diff(v[kept].astype(int)[np.argsort(img[kept], kind="stable")]) >= 0)


def test_rotation_by_180_degrees_turns_a_marked_corner_over():
    img = np.zeros((21, 21, 3), np.uint8)
    img[:3, :3] = 255
    m = augment(img, AugmentConfig(rotate_deg=1e-9), np.random.default_rng(0))  # ~identity
    assert m[:3, :3].mean() > 200
    rng = type("R", (), {"uniform": lambda self, a, b: 180.0, "random": lambda self: 1.0})()
    turned = augment(img, AugmentConfig(rotate_deg=180.0), rng)
    assert turned[-3:, -3:].mean() > 200 and turned[:3, :3].mean() < 50


def test_extract_adds_views_per_training_image(tmp_path):
    root = generate(tmp_path / "s", SyntheticConfig(train=3, test_good=1, test_defect=1, size=64, seed=0))
    samples = load_folder(root).train
    model = create_model("msflow", make_config("msflow", TINY_MODEL), random_init=True)
    plain = extract(model, samples, progress=False)
    more = extract(model, samples, progress=False, augment="texture", views=2, seed=0)
    again = extract(model, samples, progress=False, augment="texture", views=2, seed=0)
    assert [f.shape[0] for f in plain] == [3] * len(plain)
    assert [f.shape[0] for f in more] == [9] * len(more)
    assert all(torch.equal(a, b) for a, b in zip(more, again))
    # the first of every group of 1 + views is the untouched image
    assert all(torch.allclose(m[::3], p) for m, p in zip(more, plain))
