"""Detection metrics used everywhere: image AUROC and pixel AUROC (scikit-learn)."""

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
