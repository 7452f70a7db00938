"""Image-score thresholds from held-out good images at a target false-reject rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class ImageThreshold:
    threshold: float
    target_frr: float
    n_good: int
    rejected_good: int  # held-out good images at or above the threshold
    frr_upper_bound: float  # one-sided 95 % Clopper-Pearson upper bound of the false-reject rate
    confidence: float = 0.95


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial rate after k events in n trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, k + 1, n - k))


def threshold_at_frr(good_scores, target_frr: float, confidence: float = 0.95) -> ImageThreshold:
    """The smallest threshold that rejects at most floor(target_frr · n) held-out good images.

    A part is rejected when score >= threshold, so the threshold sits just above the
    (k+1)-th largest good score. With few images k is 0: the threshold is just above the
    largest good score and the report states how loose the bound on the rate still is.
    """
    scores = np.sort(np.asarray(good_scores, dtype=np.float64))[::-1]
    n = len(scores)
    if n == 0:
        raise ValueError("no held-out good scores")
    k = int(math.floor(target_frr * n))
    threshold = float(np.nextafter(scores[k], np.inf))  # just above the (k+1)-th largest good score
    rejected = int((scores >= threshold).sum())
    return ImageThreshold(threshold, target_frr, n, rejected, clopper_pearson_upper(rejected, n, confidence), confidence)


def pixel_threshold_fair(good_maps: list[np.ndarray]) -> float:
    """The "fair" pixel threshold: about one false-positive pixel per good image (FPR = 1/(H·W))."""
    pixels = np.concatenate([m.reshape(-1) for m in good_maps])
    per_image = good_maps[0].size
    return float(np.quantile(pixels, 1.0 - 1.0 / per_image))
