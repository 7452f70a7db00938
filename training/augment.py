"""Seeded augmentation of good training images (uint8 BGR at the model input size).

A flow learns "normal" from a few hundred images; what a line changes between lots (lighting
gain, contrast, where and how a round part lies) must be inside that normal, or every new lot
looks anomalous. DifferNet and CS-Flow train with the same kind of photometric and geometric
jitter. Augmented copies are made once, before the frozen backbone's features are cached, so
training stays as fast as without them; held-out images are never augmented.

Presets (`edge-train --augment NAME`):
* `none`    — the images as they are;
* `texture` — flips and photometric jitter (gain, contrast, gamma): surfaces whose pattern has no
  up/down, shot under drifting light (magnetic tiles, sheet metal, fabric);
* `object`  — any rotation about the centre, small shifts, flips and milder photometric jitter:
  parts that lie in any orientation on a conveyor (cookies, washers).
* `exposure` — lighting gain only, clipped at 255 as the sensor clips: a brighter session's blown
  highlights (flat white patches with no texture) are normal, not a defect. With the model's per-image
  standardisation (`image_norm`) a gain without clipping changes nothing; the clipping is the point.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    hflip: bool = False
    vflip: bool = False
    rotate_deg: float = 0.0  # uniform in ±rotate_deg about the centre, reflected border
    shift: float = 0.0  # uniform in ±shift × size, reflected border
    gain: float = 0.0  # brightness: pixel × uniform(1 - gain, 1 + gain)
    contrast: float = 0.0  # (pixel - mean) × uniform(1 - contrast, 1 + contrast) + mean
    gamma: float = 0.0  # (pixel / 255) ** uniform(1 - gamma, 1 + gamma)

    @property
    def active(self) -> bool:
        return any((self.hflip, self.vflip, self.rotate_deg, self.shift, self.gain, self.contrast, self.gamma))


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "texture": AugmentConfig(hflip=True, vflip=True, gain=0.3, contrast=0.2, gamma=0.2),
    "object": AugmentConfig(hflip=True, vflip=True, rotate_deg=180.0, shift=0.05, gain=0.15, contrast=0.15, gamma=0.1),
    "exposure": AugmentConfig(gain=0.4),
}


def preset(name: str) -> AugmentConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random variant of a uint8 BGR image, same size and dtype."""
    out = img
    if cfg.hflip and rng.random() < 0.5:
        out = out[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        out = out[::-1]
    out = np.ascontiguousarray(out)
    h, w = out.shape[:2]
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg else 0.0
    dx = rng.uniform(-cfg.shift, cfg.shift) * w if cfg.shift else 0.0
    dy = rng.uniform(-cfg.shift, cfg.shift) * h if cfg.shift else 0.0
    if angle or dx or dy:
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
        m[:, 2] += (dx, dy)
        out = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.gain or cfg.contrast or cfg.gamma:
        x = out.astype(np.float32)
        if cfg.contrast:
            mean = x.mean()
            x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
        if cfg.gain:
            x = x * rng.uniform(1 - cfg.gain, 1 + cfg.gain)
        if cfg.gamma:
            x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
        out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return out


def views(img: np.ndarray, cfg: AugmentConfig, n: int, seed: int) -> list[np.ndarray]:
    """`n` random variants of one image, reproducible from `seed`."""
    if not cfg.active or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    return [augment(img, cfg, rng) for _ in range(n)]
