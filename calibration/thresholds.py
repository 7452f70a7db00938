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


def clopper_pearson_lower(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of a binomial rate after k events in n trials."""
    if n <= 0 or k <= 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, k, n - k + 1))


def frr_check(threshold: ImageThreshold, test_good_scores, model: str = "tile.xml") -> str | None:
    """A warning when good test parts, which calibration never saw, are rejected more often than the
    stated bound allows, or None. The bound speaks for parts imaged like the held-out training images;
    a capture session the training set lacks breaks it (magnetic_tile: test/good is mostly exp6, which no
    training image comes from, and whose blown highlights no training image had: 4.7 % measured against a
    stated 2.6 % before the model was trained with the `exposure` augmentation). "Clearly" when even the lower
    confidence bound of the test rate is above the stated one, not a small-sample accident."""
    scores = np.asarray(test_good_scores, dtype=np.float64)
    n = len(scores)
    k = int((scores >= threshold.threshold).sum())
    if n == 0 or k / n <= threshold.frr_upper_bound:
        return None
    clearly = clopper_pearson_lower(k, n, threshold.confidence) > threshold.frr_upper_bound
    return (f"{k} of {n} good test images ({k / n:.1%}) reach the image threshold, {'clearly ' if clearly else ''}above "
            f"the stated false-reject bound of {threshold.frr_upper_bound:.1%}: these parts are imaged unlike the held-out "
            "training images (another capture session or lighting?); re-threshold from good parts imaged at the line: "
            f"edge-calibrate --model {model} --rethreshold GOOD_DIR")


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
