"""Synthetic anomalies made from the user's own good images, for validation without defect samples.

Three kinds, so that a collapse of the INT8 model is caught even when no labelled defect exists:
pasted patches (a patch of another good image, at another place, with a soft edge), noise-shaped
texture blends (a smooth random mask blends in a contrast-shifted copy), and scratches/cracks/
spots as the synthetic generator draws them. Each comes with its mask.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("patch", "blend", "scratch", "crack", "spot")


def _soft_box(shape, y0, x0, h, w, feather: float) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    m[y0 : y0 + h, x0 : x0 + w] = 1.0
    return cv2.GaussianBlur(m, (0, 0), feather) if feather > 0 else m


def pasted_patch(rng: np.random.Generator, img: np.ndarray, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paste a rotated patch of `donor` (another good image) into `img`."""
    H, W = img.shape[:2]
    h = int(rng.uniform(0.08, 0.2) * H)
    w = int(rng.uniform(0.08, 0.2) * W)
    sy, sx = rng.integers(0, H - h), rng.integers(0, W - w)
    patch = cv2.resize(donor, (W, H))[sy : sy + h, sx : sx + w]
    patch = np.ascontiguousarray(np.rot90(patch, int(rng.integers(1, 4)))) if h == w else patch[::-1, ::-1]
    y0, x0 = rng.integers(0, H - h), rng.integers(0, W - w)
    alpha = _soft_box((H, W), y0, x0, h, w, 1.0)[:, :, None]
    canvas = img.astype(np.float32).copy()
    canvas[y0 : y0 + h, x0 : x0 + w] = cv2.resize(patch, (w, h)).astype(np.float32)
    out = img.astype(np.float32) * (1 - alpha) + canvas * alpha
    # the patch is only anomalous where it differs visibly from what it covers
    return out, (alpha[:, :, 0] > 0.5)


def noise_blend(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend a contrast- and brightness-shifted copy through a smooth random blob mask."""
    H, W = img.shape[:2]
    noise = cv2.GaussianBlur(rng.standard_normal((H, W)).astype(np.float32), (0, 0), min(H, W) / 20)
    noise /= noise.std() + 1e-6
    blob = (noise > np.quantile(noise, 0.96)).astype(np.float32)
    n, labels = cv2.connectedComponents(blob.astype(np.uint8))
    if n > 2:  # keep one blob
        sizes = np.bincount(labels.ravel())[1:]
        blob = (labels == 1 + int(np.argmax(sizes))).astype(np.float32)
    alpha = cv2.GaussianBlur(blob, (0, 0), 1.5)[:, :, None]
    f = img.astype(np.float32)
    shifted = (f - f.mean()) * rng.uniform(0.3, 0.6) + f.mean() + rng.choice([-1, 1]) * rng.uniform(30, 60)
    grain = rng.normal(0, 8, img.shape).astype(np.float32)
    return f * (1 - alpha) + (shifted + grain) * alpha, blob > 0.5


def make_anomalies(good: list[np.ndarray], n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """n (image uint8, mask bool, kind) from good uint8 BGR images, cycling through KINDS."""
    from training.synthetic import draw_defect

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        base = good[int(rng.integers(len(good)))]
        if kind == "patch":
            img, mask = pasted_patch(rng, base, good[int(rng.integers(len(good)))])
        elif kind == "blend":
            img, mask = noise_blend(rng, base)
        else:
            img, m = draw_defect(rng, base.astype(np.float32), kind)
            mask = m > 0
        out.append((np.clip(np.round(img), 0, 255).astype(np.uint8), mask, kind))
    return out
