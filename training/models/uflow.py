"""U-Flow: a U-shaped normalizing flow whose latent is N(0, I) per pixel, for a-contrario (NFA) segmentation.

Coarse to fine over the frozen backbone's scales (Tailanian et al., "U-Flow", 2022; written here from the
paper's description, no code taken):

    coarsest map -> flow stage -> split: first part is an output latent,
                                         the rest is invertibly upsampled (i-RevNet depth-to-space,
                                         C -> C/4 channels at 2x the resolution, a pure permutation: log-det 0)
    concat(upsampled, next finer map) -> flow stage -> split -> ... -> finest stage: all of it is output.

Every output latent is a slice of one invertible map trained against a standard normal prior, so under
normality each output pixel's vector is N(0, I_{C_s}) and zsq_s = sum_c z_c^2 ~ chi^2_{C_s}: it feeds the tree
NFA (edge.nfa.tree_nfa) directly, with C_s = `channels[s]`.

Defaults (EfficientNet-Lite0, stages 2/3/4 = strides 8/16/32, 256 input, no pooling) give maps of
40 @ 32^2, 112 @ 16^2, 320 @ 8^2 and latents of 59 @ 32^2, 76 @ 16^2, 160 @ 8^2: the same 32/16/8 grid as the
MS-Flow seed, with many more channels per latent at the fine scales (the tree NFA's power grows with C).
The paper uses CaiT features at two image scales (448/224); only EfficientNet-Lite weights are available
offline here.

The anomaly map and the image score follow the project's convention (as MS-Flow's seed, so that the
edge-calibrate metadata string stays true): map = sum over scales of upsample(0.5 * zsq_s / C_s), score = mean
of its top fraction. The paper's map is 1 - mean_s upsample(exp(-0.5 * zsq_s / C_s)) with max as score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.backbones import create_feature_extractor, normalization, standardise_photometry

from . import register
from .likelihood import anomaly_outputs, nll_per_dim


@dataclass(frozen=True)
class UFlowConfig:
    backbone: str = "tf_efficientnet_lite0"
    stages: tuple[int, ...] = (2, 3, 4)  # fine to coarse; each stride must be twice the previous one
    input_size: tuple[int, int] = (256, 256)
    pool_stride: int = 1  # AvgPool(3, stride, 1) on each feature map (stride 1: 3x3 local smoothing only)
    flow_depth: tuple[int, ...] = (4, 4, 4)  # AllInOneBlocks per stage, fine to coarse
    clamp: float = 2.0
    hidden_ratio: float = 1.0
    top_fraction: float = 0.01  # image score = mean of the top fraction of the map
    envelope: bool = False  # map and score as the excess over the normal envelope (see MSFlowConfig)
    image_norm: bool = False  # per-image photometric standardisation inside the graph (see MSFlowConfig)


class _BetaSoftplus(nn.Module):
    """softplus(beta * x) / beta written out: OpenVINO mis-converts nn.Softplus(beta != 1) (NOTES.md)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.beta * x) / self.beta


def _subnet(kernel: int, hidden_ratio: float):
    def make(c_in: int, c_out: int) -> nn.Module:
        hidden = max(8, int(c_in * hidden_ratio))
        pad = kernel // 2
        return nn.Sequential(nn.Conv2d(c_in, hidden, kernel, padding=pad), nn.ReLU(),
                             nn.Conv2d(hidden, c_out, kernel, padding=pad))

    return make


def build_stage(channels: int, h: int, w: int, depth: int, clamp: float, hidden_ratio: float):
    """One U-Flow stage: AllInOneBlocks, subnet kernels alternating 3 and 1, no conditioning."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    flow = Ff.SequenceINN(channels, h, w)
    for i in range(depth):
        flow.append(Fm.AllInOneBlock, subnet_constructor=_subnet(3 if i % 2 == 0 else 1, hidden_ratio),
                    affine_clamping=clamp, global_affine_type="SOFTPLUS", permute_soft=False)
    for block in flow.module_list:
        block.softplus = _BetaSoftplus(0.5)
    return flow


def carry_channels(c: int) -> int:
    """Channels passed up to the finer scale: the multiple of 4 nearest C/2 (at least 4, at most C - 1)."""
    k = 4 * max(1, round(c / 8))
    if k >= c:
        raise ValueError(f"a stage with {c} channels cannot split off a multiple of 4 and keep an output")
    return k


def plan(in_channels: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
    """Per stage, fine to coarse: (flow channels, output-latent channels, carried channels)."""
    n = len(in_channels)
    flow_c, out_c, carry_c = [0] * n, [0] * n, [0] * n
    up = 0
    for s in range(n - 1, -1, -1):  # coarse to fine
        flow_c[s] = in_channels[s] + up
        carry_c[s] = carry_channels(flow_c[s]) if s > 0 else 0
        out_c[s] = flow_c[s] - carry_c[s]
        up = carry_c[s] // 4
    return flow_c, out_c, carry_c


@register("uflow", UFlowConfig)
class UFlow(nn.Module):
    # module paths whose ops (and everything after them) stay in floating point under INT8
    float_scopes = (".neck", ".flows.")

    def __init__(self, config: UFlowConfig, weights: str | None = None, random_init: bool = False):
        super().__init__()
        if len(config.flow_depth) != len(config.stages):
            raise ValueError("flow_depth needs one entry per stage")
        self.config = config
        self.backbone = create_feature_extractor(config.backbone, tuple(config.stages), weights, random_init)
        self.mean, self.std = normalization(config.backbone)
        strides = self.backbone.spec.strides
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"U-Flow needs each stage at half the previous resolution; strides {strides}")
        h, w = config.input_size
        stride = config.pool_stride
        self.shapes = [(-(-h // (s * stride)), -(-w // (s * stride))) for s in strides]
        if any((2 * c[0], 2 * c[1]) != f for f, c in zip(self.shapes, self.shapes[1:])):
            raise ValueError(f"input size {config.input_size} gives maps {self.shapes}: each must be 2x the next; "
                             f"use a multiple of {strides[-1] * stride}")
        self.in_channels = tuple(self.backbone.spec.channels)
        self.flow_channels, out_c, self.carry = plan(self.in_channels)
        self.channels = tuple(out_c)  # C_s of each output latent / zsq_s, fine to coarse
        self.neck = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.flows = nn.ModuleList(
            build_stage(c, fh, fw, d, config.clamp, config.hidden_ratio)
            for c, (fh, fw), d in zip(self.flow_channels, self.shapes, config.flow_depth)
        )
        self.register_buffer("map_envelope", torch.zeros(1, 1, h, w))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Frozen, pooled backbone features of a normalised NCHW image batch, fine to coarse."""
        if self.config.image_norm:
            x = standardise_photometry(x)
        return [self.neck(f) for f in self.backbone(x)]

    def flow(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Output latents (fine to coarse) and the total log|det J| per sample."""
        n = len(feats)
        zs: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        logdet = 0.0
        up = None
        for s in range(n - 1, -1, -1):
            x = feats[s] if up is None else torch.cat([up, feats[s]], dim=1)
            z, ld = self.flows[s](x)
            logdet = logdet + ld
            if s == 0:
                zs[s] = z
            else:
                k = self.carry[s]
                zs[s] = z[:, k:]
                up = F.pixel_shuffle(z[:, :k], 2)  # depth-to-space: a permutation, log-det 0
        return zs, logdet

    def loss(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood per dimension, averaged over the batch."""
        return nll_per_dim(*self.flow(feats))

    def anomaly_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(anomaly_map (B,1,H,W), score (B,), zsq_0 (B,1,h0,w0), zsq_1, ...) from a normalised image."""
        return self.outputs_from_features(self.features(x), x.shape[-2:])

    def outputs_from_features(self, feats: list[torch.Tensor], size, raw: bool = False) -> tuple[torch.Tensor, ...]:
        """`anomaly_outputs` from cached `features(x)`; `raw` ignores the normal envelope."""
        envelope = self.map_envelope if self.config.envelope and not raw else None
        return anomaly_outputs(self.flow(feats)[0], self.channels, size, self.config.top_fraction, envelope)
