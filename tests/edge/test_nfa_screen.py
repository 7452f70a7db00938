"""The decision path's tree-NFA screening (edge.nfa.tree_nfa_screened, edge.decision.decide) must
never change a verdict, a region or a reported worst log10 NFA: it only skips trees that a lower
bound proves irrelevant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge import nfa
from edge.decision import decide

SHAPES = [(32, 32), (16, 16), (8, 8)]
CHANNELS = [24, 40, 112]


def _cases(seed: int, n: int):
    """Chi-square latents (pure H0, planted blobs of raised variance at any scale, mis-scaled,
    integer-valued so the tree has ties), as the IR's float32 zsq maps."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        scale = [1.0, 1.0, 0.9, 1.1, 1.3][i % 5]
        z = [rng.chisquare(c, s) * scale for s, c in zip(SHAPES, CHANNELS)]
        for _ in range(i % 3):
            s = int(rng.integers(0, 3))
            h = SHAPES[s][0]
            k = int(rng.integers(1, 7))
            y, x = rng.integers(0, h - k + 1, 2)
            z[s][y:y + k, x:x + k] *= [rng.uniform(1.5, 10.0), 60.0, 1e5][i % 3]  # also past the table's grid
        if i % 4 == 3:
            z = [np.round(a / 4) * 4 for a in z]  # plateaus: many equal levels
        yield [a.astype(np.float32) for a in z]


def _region_tuples(res):
    return [(r.area, r.bbox, r.log10_nfa, r.scale) for r in res.regions]


@pytest.mark.parametrize("eps", [0.0, -200.0, 300.0])
def test_screened_tree_gives_tree_nfa_mask_regions_and_minimum_exactly(eps):
    for zsq in _cases(1, 120):
        ref = nfa.tree_nfa(zsq, CHANNELS, (32, 32), eps)
        got, lower = nfa.tree_nfa_screened(zsq, CHANNELS, (32, 32), eps, need_min=True)
        np.testing.assert_array_equal(got.mask, ref.mask)
        assert _region_tuples(got) == _region_tuples(ref)
        assert got.min_log10_nfa == ref.min_log10_nfa
        assert lower <= ref.min_log10_nfa
        skipped, lower2 = nfa.tree_nfa_screened(zsq, CHANNELS, (32, 32), eps, need_min=False)
        assert lower2 <= ref.min_log10_nfa + 1e-3  # another valid bound (sort-free, or epsilon when no node is significant)
        if skipped is None:  # only when no region exists (bound or level-set trees)
            assert not ref.regions
        else:  # regions from the level-set trees: exactly the full tree's
            assert ref.regions and _region_tuples(skipped) == _region_tuples(ref)
            np.testing.assert_array_equal(skipped.mask, ref.mask)
            assert skipped.min_log10_nfa == ref.min_log10_nfa


def test_bound_is_below_every_value_of_every_scale_map():
    for zsq in _cases(2, 60):
        for z, c in zip(zsq, CHANNELS):
            exact = nfa._tree_log10_prob(z, c)
            assert nfa._tree_bound(nfa._levels(z), c) <= exact.min()


def test_bound_holds_far_in_the_tail_where_it_uses_the_closed_form():
    for c in (2, 3, 24, 40, 112, 304):
        x = np.array([0.0, c, c + 40 * np.sqrt(2 * c) + 101.0, 1e3, 1e4, 1e6, 1e12, 1e30, 1e300])
        z = np.zeros((3, 3))
        for i, v in enumerate(x):  # one hot pixel at a time: the bound must stay under its single-pixel node
            z.flat[0] = v
            f = nfa._levels(z)
            exact = nfa._tree_log10_prob(z, c)
            assert nfa._tree_bound(f, c) <= exact.min(), (c, v)
            assert nfa._tree_bound(f, c) <= max(nfa.log10_chi2_sf(np.array([v]), c)[0], -1e30) + 1e-8  # table error


def test_screening_skips_the_trees_of_good_parts_and_keeps_planted_defects():
    rng = np.random.default_rng(3)
    good = [rng.chisquare(c, s).astype(np.float32) for s, c in zip(SHAPES, CHANNELS)]
    res, lower = nfa.tree_nfa_screened(good, CHANNELS, (32, 32), 0.0, need_min=False)
    assert res is None and lower > 0
    bad = [a.copy() for a in good]
    bad[0][4:12, 20:28] *= 6.0
    res, lower = nfa.tree_nfa_screened(bad, CHANNELS, (32, 32), 0.0, need_min=False)
    ref = nfa.tree_nfa(bad, CHANNELS, (32, 32), 0.0)
    assert res is not None and ref.regions and _region_tuples(res) == _region_tuples(ref)


@pytest.mark.parametrize("exact_min", [False, True])
def test_decide_verdicts_equal_the_unscreened_tree_on_random_latents(exact_min):
    null_scale = [1.2, 0.9, 1.1]
    n_reject = n_skipped = 0
    for zsq in _cases(4, 150):
        scaled = [z / s for z, s in zip(zsq, null_scale)]
        ref = nfa.tree_nfa(scaled, CHANNELS, (32, 32), 0.0)
        v = decide(1.0, zsq, rule="nfa", threshold=2.0, epsilon=0.0, channels=CHANNELS, size=(256, 256), top=50,
                   null_scale=null_scale, exact_min=exact_min)
        assert v.verdict == ("reject" if ref.regions else "pass")
        assert [(r["area"], tuple(r["bbox"])) for r in v.regions] == [(r.area * 64, tuple(8 * b for b in r.bbox))
                                                                      for r in ref.regions]
        if v.log10_nfa is None:
            assert not exact_min and v.verdict == "pass" and 0.0 <= v.log10_nfa_bound <= ref.min_log10_nfa + 1e-3
            n_skipped += 1
        else:
            assert v.log10_nfa == ref.min_log10_nfa and v.log10_nfa_bound is None
        n_reject += v.verdict == "reject"
    assert n_reject >= 20 and (exact_min or n_skipped >= 20)


def test_nan_latents_are_still_a_failsafe_reject():
    zsq = [np.ones(s, np.float32) * c for s, c in zip(SHAPES, CHANNELS)]
    zsq[1][3, 3] = np.nan
    v = decide(0.1, zsq, rule="both", threshold=2.0, epsilon=0.0, channels=CHANNELS, size=(256, 256))
    assert v.verdict == "reject" and v.rule == "failsafe"
    zsq[1][3, 3] = np.inf  # +inf: the most anomalous value there is, never skipped
    v = decide(0.1, zsq, rule="nfa", threshold=2.0, epsilon=0.0, channels=CHANNELS, size=(256, 256))
    assert v.verdict == "reject" and v.rule == "nfa" and math.isfinite(v.log10_nfa)


def test_pass_record_carries_the_bound_when_the_tree_was_skipped():
    from edge.decision import Decision

    rng = np.random.default_rng(5)
    good = [rng.chisquare(c, s).astype(np.float32) for s, c in zip(SHAPES, CHANNELS)]
    v = decide(0.1, good, rule="both", threshold=2.0, epsilon=0.0, channels=CHANNELS, size=(256, 256))
    assert v.verdict == "pass" and v.log10_nfa is None and v.log10_nfa_bound > 0
    d = Decision(1, "t#1", 1.0, 2.0, v.verdict, v.reason, 0.1, 2.0, 3.0, "h", rule=v.rule, log10_nfa=v.log10_nfa,
                 nfa_epsilon=0.0, regions=v.regions, log10_nfa_bound=v.log10_nfa_bound)
    rec = d.record()
    assert rec["log10_nfa"] is None and rec["log10_nfa_bound"] == round(v.log10_nfa_bound, 3)
    assert "all >=" in rec["reason"]


def test_sort_free_bound_is_below_the_exact_bound_and_close_to_it():
    """The pre-screen's binned bound must never exceed the sorted one (so never a value of the
    map), and should stay close enough to skip the same trees on good parts."""
    ratios = []
    for zsq in _cases(5, 80):
        for z, c in zip(zsq, CHANNELS):
            f = nfa._levels(z)
            quick, exact = nfa._binned_bound(f, c), nfa._tree_bound(f, c)
            assert quick <= exact <= nfa._tree_log10_prob(z, c).min()
            if exact < -1.0:
                ratios.append(quick / exact)
    assert ratios and max(ratios) < 1.3, max(ratios)


def test_scattered_high_latents_that_only_the_bound_finds_suspicious_are_a_plain_pass():
    """A checkerboard of raised Z: the bound (K pixels at that level) cannot clear the scale, but
    every node is one pixel and none is significant. The decision is a pass with a bound >= epsilon
    (found by the soak benchmark: such a part was rejected fail-safe as 'bound inconsistent')."""
    c = 24
    z0 = np.zeros((32, 32), np.float32)
    z0[::2, ::2] = z0[1::2, 1::2] = 70.0  # isolated pixels under 4-connectivity
    zsq = [z0, np.full((16, 16), 20.0, np.float32), np.full((8, 8), 100.0, np.float32)]
    f = nfa._levels(z0)
    log_n = nfa.log10_n_tests_total(SHAPES)
    assert nfa._tree_bound(f, c) + log_n < 0  # the bound alone cannot clear it
    assert not nfa.tree_nfa(zsq, CHANNELS, (32, 32), 0.0).regions
    v = decide(1.0, zsq, rule="nfa", threshold=2.0, epsilon=0.0, channels=CHANNELS, size=(256, 256))
    assert v.verdict == "pass" and v.rule == "none", v.reason
    assert v.log10_nfa is None and v.log10_nfa_bound >= 0.0


@pytest.mark.parametrize("c", [1, 2, 3, 24])
def test_sort_free_bound_stays_below_the_tree_with_levels_past_the_table(c):
    """The few levels past the last bin are bounded by their exact terms: the bound still never
    exceeds a value of the scale's map, for any channel count (C = 1 has no closed-form tail)."""
    rng = np.random.default_rng(c)
    for i in range(30):
        z = rng.chisquare(c, (16, 16))
        k = int(rng.integers(1, 5))
        y, x = rng.integers(0, 16 - k + 1, 2)
        z[y:y + k, x:x + k] *= [5.0, 60.0, 1e5][i % 3]
        if i % 2:
            z = np.round(z / 8) * 8  # ties among the high levels too
        z = z.astype(np.float32)
        f = nfa._levels(z)
        assert nfa._binned_bound(f, c) <= nfa._tree_bound(f, c) <= nfa._tree_log10_prob(z, c).min()
