"""Image thresholds at a target false-reject rate and the bound the sample size supports."""

import numpy as np
import pytest

from calibration.thresholds import clopper_pearson_upper, threshold_at_frr


def test_threshold_rejects_at_most_the_allowed_number_of_good_images():
    scores = np.arange(1000, dtype=float)
    thr = threshold_at_frr(scores, 0.01)
    assert thr.rejected_good == 10 and (scores >= thr.threshold).sum() == 10
    assert 990 > thr.threshold > 989


def test_few_images_put_the_threshold_just_above_the_largest_good_score():
    thr = threshold_at_frr([1.0, 3.0, 2.0], 0.005)
    assert thr.rejected_good == 0 and 3.0 < thr.threshold < 3.0 + 1e-9


def test_clopper_pearson_bound_matches_the_rule_of_three_and_scipy():
    assert clopper_pearson_upper(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300), rel=1e-9)  # ~3/n
    assert clopper_pearson_upper(0, 300) == pytest.approx(3 / 300, rel=0.01)
    assert clopper_pearson_upper(5, 5) == 1.0
    assert clopper_pearson_upper(2, 100) > 2 / 100


def test_clopper_pearson_lower_bound_matches_scipy_and_brackets_the_rate():
    from scipy.stats import beta

    from calibration.thresholds import clopper_pearson_lower

    assert clopper_pearson_lower(0, 50) == 0.0
    assert clopper_pearson_lower(9, 190) == pytest.approx(beta.ppf(0.05, 9, 182), rel=1e-9)
    assert clopper_pearson_lower(9, 190) < 9 / 190 < clopper_pearson_upper(9, 190)


def test_frr_check_warns_only_when_good_test_parts_break_the_stated_bound():
    from calibration.thresholds import frr_check

    thr = threshold_at_frr(np.arange(114, dtype=float), 0.005)  # 114 held-out: bound 2.6 %, nothing rejected
    assert thr.frr_upper_bound == pytest.approx(0.0259, abs=1e-3)
    assert frr_check(thr, np.full(190, 50.0)) is None  # no good test part reaches it
    assert frr_check(thr, [200.0] + [50.0] * 189) is None  # 0.5 %: within the bound
    one_of_20 = frr_check(thr, [200.0] + [50.0] * 19, "line3.xml")  # 5 %, but 1 of 20 proves little
    assert one_of_20.startswith("1 of 20 good test images (5.0%)") and "clearly" not in one_of_20
    assert "edge-calibrate --model line3.xml --rethreshold GOOD_DIR" in one_of_20 and "\n" not in one_of_20
    shifted = frr_check(thr, [200.0] * 20 + [50.0] * 170)  # 10.5 %: a session shift, not chance
    assert "20 of 190" in shifted and "clearly above the stated false-reject bound of 2.6%" in shifted
