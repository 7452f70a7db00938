"""Segmentation metrics: IoU conventions, the fair threshold, AUPRO against brute force, and the NFA path."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.segmentation import (aupro, count_regions, evaluate_segmentation, fair_threshold, iou_curve,
                                      iou_per_image, nfa_variant, pool_factor, sum_pool)


def test_iou_conventions():
    gt = np.zeros((8, 8), bool)
    gt[2:4, 2:4] = True
    assert iou_per_image(gt, gt) == 1.0
    assert iou_per_image(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # good part, nothing detected
    fa = np.zeros_like(gt)
    fa[0, 0] = True
    assert iou_per_image(fa, np.zeros_like(gt)) == 0.0  # good part, one false pixel
    pred = gt.copy()
    pred[4, 2] = True
    assert iou_per_image(pred, gt) == pytest.approx(4 / 5)


def test_iou_curve_matches_direct():
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(16, 16)) for _ in range(5)]
    gts = [rng.random((16, 16)) < 0.1 for _ in range(4)] + [np.zeros((16, 16), bool)]
    t = np.array([-1.0, 0.0, 0.5, 1.5, 9.0])
    curve = iou_curve(maps, gts, t)
    want = np.array([[iou_per_image(m > x, g) for x in t] for m, g in zip(maps, gts)])
    np.testing.assert_allclose(curve, want)
    lcurve = iou_curve(maps, gts, t, below=True)
    want = np.array([[iou_per_image(m < x, g) for x in t] for m, g in zip(maps, gts)])
    np.testing.assert_allclose(lcurve, want)


def test_fair_threshold_allows_one_pixel_per_image():
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(32, 32)) for _ in range(50)]
    thr = fair_threshold(maps)
    above = sum(int((m > thr).sum()) for m in maps)
    assert above <= 50 and above >= 49  # 50 images x 1024 px x 1/1024


def _pro_brute(masks, maps, max_fpr, n=4000):
    from scipy import ndimage

    values = np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]
    regions = []
    for g in masks:
        lab, k = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [(len(regions), lab == j + 1) for j in range(k)]
    neg = sum(int((~g).sum()) for g in masks)
    fprs, pros = [0.0], [0.0]
    idx = 0
    for t in values:
        fp = sum(int(((m >= t) & ~g).sum()) for m, g in zip(maps, masks)) / neg
        overl = []
        for m, g in zip(maps, masks):
            lab, k = ndimage.label(g, structure=np.ones((3, 3)))
            overl += [((m >= t) & (lab == j + 1)).sum() / (lab == j + 1).sum() for j in range(k)]
        fprs.append(fp)
        pros.append(float(np.mean(overl)))
        idx += 1
    fprs, pros = np.array(fprs), np.array(pros)
    grid = np.linspace(0, max_fpr, n)
    return float(np.trapezoid(np.interp(grid, fprs, pros), grid) / max_fpr)


def test_aupro_perfect_and_brute_force():
    rng = np.random.default_rng(2)
    masks, maps = [], []
    for i in range(3):
        g = np.zeros((12, 12), bool)
        g[i : i + 3, 2:5] = True
        g[8:10, 7 + i : 10 + i] = True
        masks.append(g)
        maps.append(np.round(g * 0.8 + rng.random((12, 12)), 2))
    assert aupro(masks, [g.astype(float) + 0.01 * rng.random(g.shape) for g in masks]) == pytest.approx(1.0)
    assert aupro(masks, maps, 0.3) == pytest.approx(_pro_brute(masks, maps, 0.3), abs=2e-3)


def test_count_regions_8_connected():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = True  # diagonal: one region
    m[4, 4] = True
    assert count_regions(m) == 2
    assert count_regions(np.zeros((3, 3), bool)) == 0


def test_pooling_is_a_chi2_sum():
    q = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(sum_pool(q, 2), [[10, 18], [42, 50]])
    maps, ch = nfa_variant([np.ones((32, 32)), np.ones((16, 16)), np.ones((8, 8))], [24, 40, 112], pool=8)
    assert ch == [24 * 16, 40 * 4, 112] and all(m.shape == (8, 8) for m in maps)
    maps, ch = nfa_variant([np.ones((8, 8)), np.ones((32, 32))], [112, 24], drop_finest=1)
    assert ch == [112] and maps[0].shape == (8, 8)


def test_pooling_non_square_grids_uses_blocks_that_divide_both_sides():
    # 320x240 input: 40x30, 20x15 and 10x8 grids (the 20x15 one used to raise "cannot be pooled by 2")
    grids = [np.ones((40, 30)), np.ones((20, 15)), np.ones((10, 8))]
    maps, ch = nfa_variant(grids, [24, 40, 112], pool=8)
    assert [m.shape for m in maps] == [(8, 6), (20, 15), (10, 8)] and ch == [24 * 25, 40, 112]
    assert all(float(m.sum()) == float(g.sum()) for m, g in zip(maps, grids))  # every pixel counted once
    assert pool_factor(32, 32, 8) == 4 and pool_factor(64, 64, 16) == 4


def _synthetic(rng, n_good=6, n_bad=6, blob_std=3.0):
    channels = [24, 40, 112]
    sizes = [32, 16, 8]
    zsq, gts, maps, labels = [], [], [], []
    for i in range(n_good + n_bad):
        bad = i >= n_good
        gt = np.zeros((64, 64), bool)
        scales = []
        for c, s in zip(channels, sizes):
            z = rng.normal(size=(c, s, s))
            if bad:
                f = 64 // s
                z[:, 16 // f : 32 // f, 16 // f : 32 // f] *= blob_std
            scales.append((z**2).sum(0).astype(np.float32))
        if bad:
            gt[16:32, 16:32] = True
        zsq.append(scales)
        gts.append(gt)
        labels.append(int(bad))
        up = sum(np.kron(q / c, np.ones((64 // q.shape[0],) * 2)) for q, c in zip(scales, channels))
        maps.append(up)
    return zsq, gts, maps, labels, channels


def test_evaluate_segmentation_on_gaussian_latents():
    rng = np.random.default_rng(3)
    zsq, gts, maps, labels, channels = _synthetic(rng)
    train = [np.kron(rng.chisquare(24, (32, 32)) / 24, np.ones((2, 2))) for _ in range(8)]
    res = evaluate_segmentation(maps, zsq, gts, labels, train, channels, variants=("all", "pool8"))
    for v in ("all", "pool8"):
        assert res.nfa[v]["false_alarm_regions_per_good"] == 0  # exact N(0, I): no false alarm
        assert res.nfa[v]["good_images_with_false_alarm"] == 0
        assert res.nfa[v]["defective_images_detected"] == 6
    assert res.nfa["all"]["miou"] > 0.8
    assert 0 <= res.miou_fair <= 1 and res.miou_oracle >= res.miou_fair - 1e-9
    assert res.pixel_auroc > 0.9 and 0 < res.aupro <= 1


def test_null_scale_restores_a_wide_latent():
    """A latent 2x too wide on good parts floods the plain NFA; the null scale from held-out good images fixes it."""
    from calibration.segmentation import null_scale

    rng = np.random.default_rng(4)
    zsq, gts, maps, labels, channels = _synthetic(rng, n_good=4, n_bad=4, blob_std=4.5)
    wide = [[q * 4.0 for q in z] for z in zsq]  # std 2 everywhere
    hold = [[(rng.normal(size=(c, s, s)) ** 2).sum(0) * 4.0 for c, s in zip(channels, (32, 16, 8))] for _ in range(4)]
    for method in ("mean", "q999"):
        assert null_scale(hold, channels, method) == pytest.approx([4.0] * 3, rel=0.1)
    train = [np.ones((64, 64)) for _ in range(4)]
    res = evaluate_segmentation(maps, wide, gts, labels, train, channels, variants=("all", "all+cal_q999"),
                                holdout_zsq=hold)
    assert res.nfa["all"]["good_images_with_false_alarm"] == 4
    assert res.nfa["all+cal_q999"]["good_images_with_false_alarm"] == 0
    assert res.nfa["all+cal_q999"]["defective_images_detected"] == 4
