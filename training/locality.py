"""Locality training: a defect pasted into a good image must not raise the likelihood cost far from it.

A flow whose subnets see their neighbours (3x3 convolutions, the fusion's coarse grid) learns to use context,
and nothing in the maximum-likelihood loss stops that context from carrying a defect's strangeness onto the
normal texture around it: on magnetic_tile the main model lit up 73 % of the pixels 32-64 px from a blowhole
pasted into a good tile (1 % before pasting). That halo is where a pixel-level metric, and a segmentation at
the line, lose most. Here every training image also gets one synthetic defect (training.synthetic's scratches,
cracks and spots, seeded), and the loss adds, per scale, the mean excess of the pasted image's per-position
cost 0.5·Σ_c z²/C over the clean image's, over the flow positions whose whole cell lies at least `radius`
input pixels from the defect. Near the defect nothing is asked; no real defect image is used.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .synthetic import DEFECTS, draw_defect

DEFAULT_RADIUS = 32  # input pixels: one cell of a stride-32 feature map


def paste(img: np.ndarray, seed: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image with one synthetic defect, uint8 (H, W) mask of the pixels within `radius` of it)."""
    rng = np.random.default_rng(seed)
    out, mask = draw_defect(rng, img.astype(np.float32), DEFECTS[int(rng.integers(len(DEFECTS)))])
    distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), (distance < radius).astype(np.uint8)


def far_cells(near: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per flow scale, (N, h, w) floats: 1 where no input pixel of the cell is near the defect. `near` is
    (N, 1, H, W), 1 within the radius."""
    return [1.0 - F.adaptive_max_pool2d(near.float(), shape)[:, 0] for shape in shapes]


def far_excess(zs_clean: list[torch.Tensor], zs_pasted: list[torch.Tensor], far: list[torch.Tensor],
               channels: tuple[int, ...]) -> torch.Tensor:
    """Σ over scales of the mean, over far cells, of max(0, q_pasted − q_clean), q = 0.5·Σ_c z²/C per position;
    the clean cost is a fixed target (no gradient), so the term only pulls the pasted image's far cost down."""
    total = zs_pasted[0].new_zeros(())
    for zc, zp, cells, c in zip(zs_clean, zs_pasted, far, channels):
        q_clean = 0.5 * (zc.detach() ** 2).sum(1) / c
        q_pasted = 0.5 * (zp**2).sum(1) / c
        total = total + (F.relu(q_pasted - q_clean) * cells).sum() / cells.sum().clamp(min=1.0)
    return total
