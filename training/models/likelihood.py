"""What every flow model computes from its latents: the training loss and the exported outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nll_per_dim(zs: list[torch.Tensor], logdet: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per dimension, averaged over the batch (Σ_s 0.5 Σ z² − log|det J|)."""
    dims = sum(z[0].numel() for z in zs)
    nll = sum(0.5 * (z**2).flatten(1).sum(1) for z in zs) - logdet
    return (nll / dims).mean()


# weight of the raw map inside the normal envelope: keeps the order of pixels that good parts also reach
ENVELOPE_TIE = 1e-3


def envelope_excess(amap: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
    """What a raw NLL map shows beyond the highest value good parts reach at each position."""
    return torch.relu(amap - envelope) + ENVELOPE_TIE * amap


def anomaly_outputs(zs: list[torch.Tensor], channels, size, top_fraction: float,
                    envelope: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(anomaly_map (B,1,H,W), score (B,), zsq_0 (B,1,h0,w0), zsq_1, ...).

    zsq_s = Σ_c z_c² over all C_s channels of scale s; raw map = Σ_s upsample(0.5 · zsq_s / C_s) (the
    negative log-likelihood per channel); with a normal `envelope` (1,1,H,W) the map is the raw map's
    excess over it (`envelope_excess`); score = mean of the map's top `top_fraction`."""
    size = tuple(size)
    zsq = [(z**2).sum(1, keepdim=True) for z in zs]
    amap = sum(F.interpolate(0.5 * q / c, size=size, mode="bilinear", align_corners=False) for q, c in zip(zsq, channels))
    if envelope is not None:
        amap = envelope_excess(amap, envelope)
    flat = amap.flatten(1)
    k = max(1, int(flat.shape[1] * top_fraction))
    score = flat.topk(k, dim=1).values.mean(1)
    return (amap, score, *zsq)


def normal_envelope(raw_maps: torch.Tensor, spread: int = 5) -> torch.Tensor:
    """(1,1,H,W): per position, the highest raw map value over good images (N,1,H,W), widened by a
    `spread`-pixel max filter so that a part lying a few pixels off does not leave it."""
    env = raw_maps.amax(0, keepdim=True)
    if spread > 1:
        env = F.max_pool2d(env, spread, 1, spread // 2)
    return env
