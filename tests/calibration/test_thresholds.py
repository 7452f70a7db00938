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
