"""Behaviour of the a-contrario detectors in edge/nfa.py (scipy/skimage only as references)."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge import nfa

REPO = Path(__file__).resolve().parents[2]
SHAPES = [(32, 32), (16, 16), (8, 8)]
CHANNELS = [24, 40, 112]
OUT = (64, 64)


def _latents(rng, scale=1.0, channels=CHANNELS, shapes=SHAPES):
    return [rng.standard_normal((c, h, w)) * scale for (h, w), c in zip(shapes, channels)]


def _both(zs, **kw):
    zsq = [np.einsum("chw,chw->hw", z, z) for z in zs]
    ch = [z.shape[0] for z in zs]
    tree = nfa.tree_nfa(zsq, ch, OUT, **kw)
    counts = [nfa.exceedance_counts(z, 0.9) for z in zs]
    win = nfa.window_nfa(counts, ch, OUT, window=5, p=0.9, **kw)
    return tree, win


def _iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


# ----------------------------------------------------------------------------- chi^2 tail


@pytest.mark.parametrize("k", [1, 2, 24, 40, 112, 304, 816])
def test_log10_chi2_sf_matches_scipy_logsf_to_1e6_relative(k):
    st = pytest.importorskip("scipy.stats")
    x = np.unique(np.concatenate([np.linspace(0, 50 * k, 1501), np.linspace(0, 3 * k, 1501),
                                  np.geomspace(1e-8, 50 * k, 300)]))
    ref = st.chi2.logsf(x, k) / math.log(10)
    got = nfa.log10_chi2_sf(x, k)
    finite = np.isfinite(ref)
    assert finite[: x.size // 4].all()
    # atol 1e-300: for tiny x we return subnormal values where scipy rounds to -0.0.
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-6, atol=1e-300)
    # Where scipy underflows to -inf we return the finite true value (checked against mpmath next).
    assert np.isfinite(got).all()
    assert np.all(np.diff(got) <= 1e-13 * np.abs(got[1:]))  # non-increasing (up to 1 ulp)


@pytest.mark.parametrize("k,x", [(1, 2000.0), (24, 5000.0), (304, 15200.0), (816, 40800.0),
                                 (1000, 1e6)])
def test_log10_chi2_sf_is_exact_far_in_the_tail_where_scipy_gives_minus_inf(k, x):
    mpmath = pytest.importorskip("mpmath")
    st = pytest.importorskip("scipy.stats")
    mpmath.mp.dps = 40
    ref = float(mpmath.log10(mpmath.gammainc(k / 2, x / 2, mpmath.inf, regularized=True)))
    got = float(nfa.log10_chi2_sf(x, k))
    print(f"k={k} x={x}: log10 sf = {got:.6f} (mpmath {ref:.6f}, scipy {st.chi2.logsf(x, k)})")
    assert got == pytest.approx(ref, rel=1e-9)


def test_log10_chi2_sf_clamps_to_zero_at_or_below_zero_and_handles_inf_nan():
    got = nfa.log10_chi2_sf(np.array([-5.0, 0.0, np.inf, np.nan]), 304)
    assert got[0] == 0.0 and got[1] == 0.0
    assert got[2] == -np.inf
    assert np.isnan(got[3])
    assert nfa.log10_chi2_sf(1e-300, 1) <= 0.0
    with pytest.raises(ValueError):
        nfa.log10_chi2_sf(1.0, 0)


@pytest.mark.parametrize("k", [1, 2, 24, 112, 304, 816])
def test_tree_fast_chi2_table_agrees_with_exact_tail(k):
    x = np.random.default_rng(k).uniform(0, 4 * k + 300, 20000)
    x = np.concatenate([x, [0.0, 1e-9, 1e-3, 1e5]])
    err = np.abs(nfa._chi2_table(k)(x) - nfa.log10_chi2_sf(x, k))
    assert err.max() < 1e-8


@pytest.mark.parametrize("k", [1, 2, 3, 24, 112, 816])
def test_chi2_table_far_tail_agrees_with_the_continued_fraction(k):
    """Past the grid the table uses the closed-form asymptote times a tabulated correction: a
    defect's Z can be 1e3..1e12; relative error must stay far below float32's (the map's) 6e-8."""
    t = nfa._chi2_table(k)
    x = np.concatenate([np.geomspace(t.u_max ** 2 * (1 + 1e-9), 1e12, 5000),
                        np.random.default_rng(k).uniform(t.u_max ** 2, 50 * t.u_max ** 2, 5000)])
    exact = nfa.log10_chi2_sf(x, k)
    assert np.max(np.abs(t(x) - exact) / np.abs(exact)) < 1e-10
    assert np.all(np.diff(t(np.sort(x))) <= 0)  # still a decreasing tail
    got = t(np.array([np.inf, 1e300]))
    assert got[0] == -np.inf and np.isfinite(got[1])


def test_chernoff_bound_defect_is_absent_for_a_shrunken_latent():
    # The published tree code used -(C/2)(x/C - 1 - ln(x/C)) for every x; with std 0.93,
    # C = 192 at 14x14 that bound flags every pixel. The exact tail flags none.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((192, 14, 14)) * 0.93
    zsq = np.einsum("chw,chw->hw", z, z)
    r = zsq.min() / 192  # the whole image is a node of the tree, with m = min Z
    chernoff = -(192 / 2) * (r - 1 - math.log(r)) / math.log(10)
    assert nfa.log10_n_tests(14, 14) + 196 * chernoff < 0  # the old rule: whole image flagged
    res = nfa.tree_nfa([zsq], [192], (112, 112))
    assert not res.mask.any()
    assert nfa.log10_chi2_sf(np.array([0.5, 1.0]) * 192, 192).min() > math.log10(0.45)  # P > 0.45


# ----------------------------------------------------------------------------- counts, tables


def test_log10_n_tests_reproduces_published_14x14_and_28x28_values():
    assert nfa.log10_n_tests(14, 14) == pytest.approx(118.9, abs=0.05)
    assert nfa.log10_n_tests(28, 28) == pytest.approx(476.9, abs=0.05)
    # multi-scale: log10 of the sum of the per-scale counts
    tot = nfa.log10_n_tests_total([(28, 28), (14, 14)])
    assert tot == pytest.approx(476.9, abs=0.05) and tot >= nfa.log10_n_tests(28, 28)
    assert nfa.log10_n_tests_total([(8, 8), (8, 8)]) == pytest.approx(
        nfa.log10_n_tests(8, 8) + math.log10(2), abs=1e-12)
    # direct (small) sum agrees with the log-space formula
    direct = math.log10(16 * sum(0.316915 * 4.062570**r / r for r in range(1, 17)))
    assert nfa.log10_n_tests(4, 4) == pytest.approx(direct, abs=1e-12)
    assert nfa.log10_n_tests.cache_info().hits + nfa.log10_n_tests.cache_info().misses > 0


def test_binomial_tail_table_and_exceedance_threshold_match_scipy():
    st = pytest.importorskip("scipy.stats")
    for n, q in [(25, 0.1), (49, 0.5), (9, 0.5), (121, 0.1)]:
        t = nfa.log10_binom_sf_table(n, q)
        ref = st.binom.logsf(np.arange(n + 1) - 1, n, q) / math.log(10)
        np.testing.assert_allclose(t, ref, rtol=1e-9, atol=1e-12)
    for p in [0.5, 0.9, 0.99, 0.999999]:
        assert nfa.exceedance_threshold(p) == pytest.approx(st.chi2.ppf(p, 1), rel=1e-12)


def test_window_statistic_is_binomial_tail_of_ceil_of_count_over_channels():
    st = pytest.importorskip("scipy.stats")
    # one 9x9 scale, constant counts, window 3: K = 9 * count, x = K / C.
    C = 24
    for count in [0, 2, 3, 8, 11]:
        res = nfa.window_nfa([np.full((9, 9), count)], [C], (9, 9), window=3, p=0.9)
        k = math.ceil(9 * count / C)
        expect = math.log10(81) + st.binom.logsf(k - 1, 9, 0.1) / math.log(10)
        np.testing.assert_allclose(res.log10_nfa_map, expect, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- tree structure


def _reference_tree_log10_prob(zsq, C):
    """Slow, literal port of the published prune/merge loop (skimage max-tree, dict tree)."""
    from skimage.morphology import max_tree

    h, w = zsq.shape
    f = zsq.ravel()
    parent, trav = max_tree(zsq, connectivity=1)
    par = parent.ravel()
    n = h * w
    canon = [(par[x] == x) or f[par[x]] != f[x] for x in range(n)]
    nodes = [v for v in range(n) if canon[v]]
    children = {v: set() for v in nodes}
    up = {}
    for v in nodes:
        up[v] = int(par[v]) if par[v] != v else None
        if up[v] is not None:
            children[up[v]].add(v)
    region = {v: set() for v in nodes}
    for x in range(n):
        region[x if canon[x] else int(par[x])].add(x)
    for x in trav[::-1]:
        x = int(x)
        if canon[x] and up[x] is not None:
            region[up[x]] |= region[x]
    logp = {v: len(region[v]) * float(nfa.log10_chi2_sf(f[v], C)) for v in nodes}

    def remove(u):
        p = up.pop(u)
        for c in children.pop(u):
            up[c] = p
            if p is not None:
                children[p].add(c)
        if p is not None:
            children[p].discard(u)

    def prune():
        for leaf in [v for v in children if not children[v]]:
            b = [leaf]
            while up[b[-1]] is not None and len(children[up[b[-1]]]) == 1:
                b.append(up[b[-1]])
            keep = int(np.argmin([logp[u] for u in b]))
            for i, u in enumerate(b):
                if i != keep:
                    remove(u)

    def merge():
        merged = False
        for b in [v for v in children if len(children[v]) > 1]:
            ch = list(children[b])
            if any(children[c] for c in ch):
                continue
            if logp[b] <= min(logp[c] for c in ch):
                merged = True
                for c in ch:
                    remove(c)
        return merged

    prune()
    while merge():
        prune()
    prune()
    out = np.zeros(n)
    for v in children:
        if not children[v]:
            out[list(region[v])] = logp[v]
    return out.reshape(h, w)


def test_tree_prune_merge_equals_the_published_iterative_procedure():
    pytest.importorskip("skimage")
    rng = np.random.default_rng(1)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(3, 12, 2))
        C = int(rng.choice([1, 2, 24, 112]))
        z = rng.standard_normal((C, h, w)) * rng.choice([0.8, 1.0, 1.3, 2.0])
        if trial % 3 == 0:
            z[:, h // 3 : h // 3 + 3, w // 3 : w // 3 + 3] *= 2
        zsq = np.einsum("chw,chw->hw", z, z)
        if trial % 4 == 1 and C != 2:  # plateaus (C = 2 would make exact log P ties)
            zsq = np.round(zsq / (C / 4)) * (C / 4)
        if trial % 4 == 2:  # what an fp16 output gives
            zsq = zsq.astype(np.float16).astype(np.float64)
        got = nfa._tree_log10_prob(zsq, C)
        np.testing.assert_allclose(got, _reference_tree_log10_prob(zsq, C), rtol=1e-7, atol=1e-7,
                                   err_msg=f"trial {trial} {h}x{w} C={C}")


# ----------------------------------------------------------------------------- statistics


def test_pure_gaussian_latents_give_at_most_one_false_alarm_region_per_image():
    rng = np.random.default_rng(2024)
    n_img = 500
    regions_t = regions_w = 0
    min_t, min_w = [], []
    for _ in range(n_img):
        tree, win = _both(_latents(rng))
        regions_t += len(tree.regions)
        regions_w += len(win.regions)
        min_t.append(tree.min_log10_nfa)
        min_w.append(win.min_log10_nfa)
    print(f"\nN(0,I), {n_img} images, scales {SHAPES} C={CHANNELS}: false-alarm regions per image "
          f"tree {regions_t / n_img:.3f} (min log10 NFA {min(min_t):.1f}), "
          f"window {regions_w / n_img:.3f} (min log10 NFA {min(min_w):.2f})")
    assert regions_t / n_img <= 1.0
    assert regions_w / n_img <= 1.0


@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_slightly_mis_scaled_latents_do_not_flag_the_whole_image(scale):
    rng = np.random.default_rng(7)
    n_img = 100
    frac_t, frac_w, reg_t, reg_w = [], [], 0, 0
    for _ in range(n_img):
        tree, win = _both(_latents(rng, scale))
        frac_t.append(tree.mask.mean())
        frac_w.append(win.mask.mean())
        reg_t += len(tree.regions)
        reg_w += len(win.regions)
    print(f"\nstd {scale}: flagged fraction tree mean {np.mean(frac_t):.5f} max {np.max(frac_t):.5f}, "
          f"window mean {np.mean(frac_w):.5f} max {np.max(frac_w):.5f}; regions/image tree "
          f"{reg_t / n_img:.3f} window {reg_w / n_img:.3f}")
    for frac in (frac_t, frac_w):
        assert max(frac) < 0.5  # never the whole image
        if scale < 1:
            assert np.mean(frac) == 0.0
        else:
            assert np.mean(frac) < 0.01


def _planted(rng, channels, std):
    zs = _latents(rng, channels=channels)
    # a 6x6 patch of raised variance at 32x32, and its footprint at 16x16 and 8x8
    zs[0][:, 10:16, 14:20] *= std
    zs[1][:, 5:8, 7:10] *= std
    zs[2][:, 2:4, 3:5] *= std
    gt = np.zeros(OUT, dtype=bool)
    gt[20:32, 28:40] = True
    return zs, gt


def test_planted_raised_variance_blob_is_found_with_iou_at_least_half():
    rng = np.random.default_rng(11)
    ious_w, ious_t = [], []
    for _ in range(5):
        zs, gt = _planted(rng, CHANNELS, 2.0)
        _, win = _both(zs)
        ious_w.append(_iou(win.mask, gt))
        assert win.regions and win.regions[0].scale in (0, 1, 2)
        # The tree needs many channels at 32x32 (log10 N_test ~ 623): C = 304 as in U-Flow.
        zs, gt = _planted(rng, [304, 304, 304], 2.0)
        tree, _ = _both(zs)
        ious_t.append(_iou(tree.mask, gt))
        assert len(tree.regions) == 1
    print(f"\nstd-2 6x6 blob: window (C={CHANNELS}) IoU {np.round(ious_w, 3).tolist()}, "
          f"tree (C=304) IoU {np.round(ious_t, 3).tolist()}")
    assert min(ious_w) >= 0.5
    assert min(ious_t) >= 0.5


def test_tree_cannot_confirm_a_std2_blob_with_only_24_channels_at_32x32():
    # Documented limitation, not a bug: N_test ~ 10^623 at 32x32 needs |R| log10 P < -623.
    rng = np.random.default_rng(12)
    zs, _ = _planted(rng, CHANNELS, 2.0)
    tree, _ = _both(zs)
    assert tree.min_log10_nfa > 0
    zs, gt = _planted(rng, CHANNELS, 4.0)
    tree, _ = _both(zs)
    assert tree.min_log10_nfa < 0 and _iou(tree.mask, gt) > 0


# ----------------------------------------------------------------------------- mask semantics


def test_mask_is_true_exactly_where_log_nfa_is_below_epsilon_and_moves_with_epsilon():
    rng = np.random.default_rng(5)
    zs, _ = _planted(rng, [304, 304, 304], 1.6)
    for which in (0, 1):
        prev_mask, prev_map = None, None
        for eps in (-50.0, -2.0, 0.0, 1.0, 3.0):
            res = _both(zs, epsilon=eps)[which]
            np.testing.assert_array_equal(res.mask, res.log10_nfa_map < eps)
            assert res.mask.dtype == bool and res.log10_nfa_map.dtype == np.float32
            if prev_mask is not None:
                np.testing.assert_array_equal(res.log10_nfa_map, prev_map)  # eps only thresholds
                assert np.all(res.mask >= prev_mask)  # monotone: a larger eps flags a superset
            prev_mask, prev_map = res.mask, res.log10_nfa_map
            if eps == 0.0:
                assert res.mask.any() and not res.mask.all()
                # anomalous pixels are the LOW-NFA ones (anomalib's port returns the inverse)
                assert res.log10_nfa_map[res.mask].max() < res.log10_nfa_map[~res.mask].min()


def test_regions_are_the_connected_components_of_the_mask():
    log_map = np.full((20, 30), 5.0, dtype=np.float32)
    log_map[2:5, 3:7] = -3.0
    log_map[3, 4] = -9.0
    log_map[10:18, 20:22] = -1.0
    log_map[17, 22] = -0.5  # 8-connected to the second blob
    res = nfa._finish(log_map, [log_map, log_map + 1], (20, 30), "nearest", 0.0)
    assert [(r.area, r.bbox, r.log10_nfa, r.scale) for r in res.regions] == [
        (12, (3, 2, 7, 5), -9.0, 0),
        (17, (20, 10, 23, 18), -1.0, 0),
    ]
    assert res.is_anomalous and res.min_log10_nfa == -9.0


def test_numpy_labelling_fallback_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    for density in (0.05, 0.3, 0.55, 0.9):
        mask = rng.random((40, 37)) < density
        n_np, lab_np = nfa._label_numpy(mask)
        n_cv, lab_cv = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        assert n_np == n_cv - 1
        # same partition: a bijection between labels
        pairs = set(zip(lab_np[mask].tolist(), lab_cv[mask].tolist()))
        assert len(pairs) == n_np
    assert nfa._label_numpy(np.zeros((4, 4), bool))[0] == 0


def test_region_boxes_and_areas_agree_between_cv2_and_the_numpy_fallback():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    for density in (0.02, 0.3, 0.6):
        mask = rng.random((23, 41)) < density
        n_cv, _, st_cv = nfa._label_stats(mask)
        n_np, lab_np = nfa._label_numpy(mask)
        st_np = nfa._region_stats(lab_np, n_np)
        assert n_cv == n_np
        assert sorted(map(tuple, st_cv.tolist())) == sorted(map(tuple, st_np.tolist()))
        assert st_np[:, 4].sum() == mask.sum()


def test_accepts_ir_shaped_outputs_and_rejects_mismatched_channels():
    rng = np.random.default_rng(9)
    zs = _latents(rng)
    zsq = [np.einsum("chw,chw->hw", z, z) for z in zs]
    a = nfa.tree_nfa(zsq, CHANNELS, OUT)
    b = nfa.tree_nfa([m[None, None].astype(np.float32) for m in zsq], CHANNELS, OUT)
    c = nfa.tree_nfa_from_latent([z[None] for z in zs], OUT)
    np.testing.assert_allclose(a.log10_nfa_map, b.log10_nfa_map, rtol=1e-4)
    np.testing.assert_allclose(a.log10_nfa_map, c.log10_nfa_map, rtol=1e-6)
    w1 = nfa.window_nfa_from_latent(zs, OUT)
    w2 = nfa.window_nfa([nfa.exceedance_counts(z[None], 0.9)[None, None] for z in zs], CHANNELS, OUT)
    np.testing.assert_array_equal(w1.log10_nfa_map, w2.log10_nfa_map)
    assert a.log10_nfa_map.shape == OUT and w1.mask.shape == OUT
    with pytest.raises(ValueError):
        nfa.tree_nfa(zsq, CHANNELS[:2], OUT)
    with pytest.raises(ValueError):
        nfa.tree_nfa([np.full((4, 4), np.nan)], [24], OUT)
    # degenerate inputs: an infinite Z is the most significant region, finite; 1-pixel maps
    r = nfa.tree_nfa([np.full((6, 6), np.inf)], [24], (12, 12))
    assert r.mask.all() and np.isfinite(r.log10_nfa_map).all() and len(r.regions) == 1
    assert nfa.tree_nfa([np.zeros((1, 1))], [24], (4, 4)).mask.sum() == 0
    with pytest.raises(ValueError):  # n = 1 windows would flag any pixel with one exceedance
        nfa.window_nfa([np.ones((1, 5), int)], [24], (4, 4))
    # non-square output, bilinear and nearest
    for up in ("bilinear", "nearest"):
        r = nfa.tree_nfa(zsq, CHANNELS, (48, 80), upsample=up)
        assert r.log10_nfa_map.shape == (48, 80)


def test_resize_matches_cv2_linear_and_nearest_and_point_evaluation():
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)
    lin = nfa._resize(a.astype(np.float64), (64, 40), "bilinear")
    np.testing.assert_allclose(lin, cv2.resize(a, (40, 64), interpolation=cv2.INTER_LINEAR),
                               atol=1e-5)
    near = nfa._resize(a.astype(np.float64), (64, 48), "nearest")
    np.testing.assert_array_equal(near, cv2.resize(a, (48, 64), interpolation=cv2.INTER_NEAREST))
    for py, px in [(0, 0), (63, 39), (17, 5), (40, 22)]:
        assert nfa._resize_at(a, py, px, (64, 40), "bilinear") == pytest.approx(lin[py, px], abs=1e-5)
        assert nfa._resize_at(a, py, px, (64, 48), "nearest") == near[py, px]


# ----------------------------------------------------------------------------- edge imports


def test_nfa_module_imports_neither_torch_nor_scipy():
    code = (
        "import sys, numpy as np\n"
        "import edge.nfa as m\n"
        "z = [np.random.default_rng(0).standard_normal((24, 16, 16))]\n"
        "m.tree_nfa_from_latent(z, (32, 32)); m.window_nfa_from_latent(z, (32, 32))\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('torch', 'scipy', 'skimage')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    tree = ast.parse((REPO / "edge" / "nfa.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "math", "dataclasses", "functools", "typing", "numpy", "cv2"}
