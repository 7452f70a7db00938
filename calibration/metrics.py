"""Detection metrics used everywhere: image AUROC, pixel AUROC (scikit-learn) and AUPRO."""

from __future__ import annotations

import numpy as np


def image_auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def pixel_auroc(masks: list[np.ndarray], maps: list[np.ndarray], max_pixels: int = 4_000_000, seed: int = 0) -> float:
    """AUROC over all pixels of all test images (sub-sampled uniformly above max_pixels)."""
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([m.reshape(-1) for m in masks]).astype(np.uint8)
    s = np.concatenate([a.reshape(-1) for a in maps]).astype(np.float32)
    if y.min() == y.max():
        return float("nan")
    if y.size > max_pixels:
        idx = np.random.default_rng(seed).choice(y.size, max_pixels, replace=False)
        y, s = y[idx], s[idx]
    return float(roc_auc_score(y, s))


def aupro(masks: list[np.ndarray], maps: list[np.ndarray], fpr_limit: float = 0.3, n_thresholds: int = 1000) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit` false-positive rate, divided by `fpr_limit`.

    MVTec AD's AUPRO: for each threshold, PRO = mean over connected ground-truth regions of the
    fraction of the region above the threshold; FPR = fraction of defect-free pixels (of all
    images) above it. The curve is integrated (trapezoid) over FPR in [0, fpr_limit], with the end
    point interpolated, and normalised so that a perfect map scores 1. Thresholds are
    `n_thresholds` equally spaced between the minimum and maximum score (histogram counting).
    """
    from scipy import ndimage

    maps = [np.asarray(a, dtype=np.float64) for a in maps]
    lo = min(float(a.min()) for a in maps)
    hi = max(float(a.max()) for a in maps)
    if hi <= lo:
        return float("nan")
    edges = np.linspace(lo, hi, n_thresholds + 1)

    def above(values: np.ndarray) -> np.ndarray:  # count of values >= each edge
        hist, _ = np.histogram(values, bins=edges)
        return np.concatenate([np.cumsum(hist[::-1])[::-1], [0]])

    normal = np.zeros(n_thresholds + 1)
    n_normal = 0
    pros = []
    for m, a in zip(masks, maps):
        m = np.asarray(m, dtype=bool)
        normal += above(a[~m])
        n_normal += int((~m).sum())
        if m.any():
            labels, n = ndimage.label(m)
            for r in range(1, n + 1):
                region = a[labels == r]
                pros.append(above(region) / region.size)
    if not pros or n_normal == 0:
        return float("nan")
    fpr = normal / n_normal
    pro = np.mean(pros, axis=0)
    order = np.lexsort((pro, fpr))  # by FPR, ties by PRO: the curve is monotone
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x.size == 0 or x[-1] < fpr_limit:
        nxt = np.searchsorted(fpr, fpr_limit)
        if nxt < fpr.size:
            y_end = np.interp(fpr_limit, [fpr[nxt - 1], fpr[nxt]], [pro[nxt - 1], pro[nxt]]) if nxt > 0 else pro[nxt]
        else:
            y_end = pro[-1]
        x, y = np.append(x, fpr_limit), np.append(y, y_end)
    trapz = getattr(np, "trapezoid", None) or np.trapz
    return float(trapz(y, x) / fpr_limit)
