"""Seeded synthetic surfaces with defects, written in MVTec layout.

Ceramic-like (mottled, grainy) and metal-like (brushed, with a light gradient) tiles; defects
are scratches (thin bright or dark strokes), cracks (dark jagged random walks, sometimes
branched) and spots (soft dark or bright blobs), each with its exact mask. Same seed, same files.

    python -m training.synthetic OUT_DIR [--train 120] [--test-good 30] [--test-defect 30] [--size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("scratch", "crack", "spot")


@dataclass(frozen=True)
class SyntheticConfig:
    train: int = 120
    test_good: int = 30
    test_defect: int = 30  # per defect type
    size: int = 256
    seed: int = 0


def _noise(rng: np.random.Generator, size: int, sigma: float, ksize: tuple[int, int] | None = None) -> np.ndarray:
    n = rng.standard_normal((size, size)).astype(np.float32)
    if ksize is not None:
        n = cv2.blur(n, ksize)
    elif sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / (n.std() + 1e-6)


def surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A good part: float32 (size, size, 3) BGR in 0..255."""
    if rng.random() < 0.5:  # ceramic: mottled, fine grain
        base = rng.uniform(150, 185)
        gray = base + 7 * _noise(rng, size, size / 12) + 4 * _noise(rng, size, 1.0)
        tint = np.array([1.0, 0.99, 0.96]) * rng.uniform(0.97, 1.03, 3)
    else:  # brushed metal: streaks along one axis, soft light gradient
        base = rng.uniform(120, 160)
        streak = _noise(rng, size, 0, ksize=(41, 1))
        if rng.random() < 0.5:
            streak = streak.T
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        angle = rng.uniform(0, 2 * np.pi)
        gradient = 12 * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5)
        gray = base + 8 * streak + gradient + 3 * _noise(rng, size, 0.7)
        tint = np.array([1.02, 1.0, 0.98]) * rng.uniform(0.98, 1.02, 3)
    return np.clip(gray[:, :, None] * tint[None, None, :], 0, 255).astype(np.float32)


def _polyline(rng, shape, start, n, step, turn, heading):
    pts = [np.asarray(start, dtype=np.float64)]
    for _ in range(n):
        heading += rng.normal(0, turn)
        pts.append(pts[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.clip(np.round(np.array(pts)), 0, [shape[1] - 1, shape[0] - 1]).astype(np.int32)


def draw_defect(rng: np.random.Generator, img: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (image with one defect, uint8 mask 0/255); any image size, defects scale with it."""
    shape = img.shape[:2]
    size = min(shape)
    layer = np.zeros(shape, np.float32)
    start = np.array([rng.uniform(shape[1] / 6, shape[1] * 5 / 6), rng.uniform(shape[0] / 6, shape[0] * 5 / 6)])
    if kind == "scratch":
        length = rng.uniform(0.25, 0.5) * size
        n = 12
        pts = _polyline(rng, shape, start, n, length / n, 0.04, rng.uniform(0, 2 * np.pi))
        width = int(rng.integers(2, 4))
        cv2.polylines(layer, [pts], False, 1.0, width, cv2.LINE_AA)
        amplitude = rng.choice([-1, 1]) * rng.uniform(45, 70)
    elif kind == "crack":
        n = int(rng.integers(20, 35))
        pts = _polyline(rng, shape, start, n, size / 70, 0.5, rng.uniform(0, 2 * np.pi))
        cv2.polylines(layer, [pts], False, 1.0, int(rng.integers(2, 4)), cv2.LINE_8)
        if rng.random() < 0.5:
            branch = _polyline(rng, shape, pts[n // 2], n // 3, size / 70, 0.5, rng.uniform(0, 2 * np.pi))
            cv2.polylines(layer, [branch], False, 1.0, 2, cv2.LINE_8)
        amplitude = -rng.uniform(60, 95)
    elif kind == "spot":
        axes = (int(rng.uniform(0.02, 0.055) * size), int(rng.uniform(0.02, 0.055) * size))
        cv2.ellipse(layer, (int(start[0]), int(start[1])), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.2)
        amplitude = rng.choice([-1, 1]) * rng.uniform(45, 75)
    else:
        raise ValueError(f"unknown defect {kind!r}; known: {', '.join(DEFECTS)}")
    out = img + amplitude * layer[:, :, None]
    mask = (layer > 0.25).astype(np.uint8) * 255
    return np.clip(out, 0, 255), mask


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.clip(np.round(img), 0, 255).astype(np.uint8)):
        raise OSError(f"cannot write {path}")


def generate(root: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write an MVTec-layout folder of synthetic tiles; returns the root."""
    root = Path(root)
    rng = np.random.default_rng(cfg.seed)
    for i in range(cfg.train):
        _write(root / "train" / "good" / f"{i:04d}.png", surface(rng, cfg.size))
    for i in range(cfg.test_good):
        _write(root / "test" / "good" / f"{i:04d}.png", surface(rng, cfg.size))
    for kind in DEFECTS:
        for i in range(cfg.test_defect):
            img, mask = draw_defect(rng, surface(rng, cfg.size), kind)
            _write(root / "test" / kind / f"{i:04d}.png", img)
            _write(root / "ground_truth" / kind / f"{i:04d}_mask.png", mask)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a seeded synthetic MVTec-layout dataset of textured tiles.")
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=SyntheticConfig.train)
    ap.add_argument("--test-good", type=int, default=SyntheticConfig.test_good)
    ap.add_argument("--test-defect", type=int, default=SyntheticConfig.test_defect, help="per defect type")
    ap.add_argument("--size", type=int, default=SyntheticConfig.size)
    ap.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    a = ap.parse_args(argv)
    generate(a.out, SyntheticConfig(a.train, a.test_good, a.test_defect, a.size, a.seed))
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
