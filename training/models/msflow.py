"""MS-Flow (seed): multi-scale features from a frozen ImageNet CNN, a FrEIA flow per scale.

This is the walking-skeleton version of the flagship model: parallel per-scale flows of
AllInOneBlocks over frozen EfficientNet-Lite features, the anomaly map is the per-pixel negative
log-likelihood 0.5 · mean_c z² summed over scales, the image score the mean of the top 1 % of
the map. The sub-feature split and the hierarchical fusion of the paper come with the MS-Flow issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.backbones import create_feature_extractor, normalization

from . import register


@dataclass(frozen=True)
class MSFlowConfig:
    backbone: str = "tf_efficientnet_lite0"
    stages: tuple[int, ...] = (1, 2, 3)
    input_size: tuple[int, int] = (256, 256)
    pool_stride: int = 2  # AvgPool(3, stride, 1) on each feature map before its flow
    flow_depth: tuple[int, ...] = (2, 4, 6)  # AllInOneBlocks per scale, shallow for fine
    clamp: float = 1.9
    hidden_ratio: float = 1.0
    top_fraction: float = 0.01  # image score = mean of the top fraction of the map


class BetaSoftplus(nn.Module):
    """softplus(beta · x) / beta, written out: OpenVINO mis-converts nn.Softplus(beta != 1)."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.beta * x) / self.beta


def _subnet(hidden_ratio: float):
    def make(c_in: int, c_out: int) -> nn.Module:
        hidden = max(8, int(c_in * hidden_ratio))
        return nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, c_out, 3, padding=1)
        )

    return make


def build_flow(channels: int, h: int, w: int, depth: int, clamp: float, hidden_ratio: float):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    flow = Ff.SequenceINN(channels, h, w)
    for _ in range(depth):
        flow.append(Fm.AllInOneBlock, subnet_constructor=_subnet(hidden_ratio), affine_clamping=clamp,
                    global_affine_type="SOFTPLUS", permute_soft=False)
    for block in flow.module_list:
        block.softplus = BetaSoftplus(0.5)
    return flow


@register("msflow", MSFlowConfig)
class MSFlow(nn.Module):
    # module paths whose ops (and everything after them) stay in floating point under INT8
    float_scopes = (".neck", ".flows.")
    def __init__(self, config: MSFlowConfig, weights: str | None = None, random_init: bool = False):
        super().__init__()
        if len(config.flow_depth) != len(config.stages):
            raise ValueError("flow_depth needs one entry per stage")
        self.config = config
        self.backbone = create_feature_extractor(config.backbone, tuple(config.stages), weights, random_init)
        self.mean, self.std = normalization(config.backbone)
        self.channels = self.backbone.spec.channels
        h, w = config.input_size
        stride = config.pool_stride
        self.shapes = [(-(-h // (s * stride)), -(-w // (s * stride))) for s in self.backbone.spec.strides]
        # the neck (pooling) and the flows stay in floating point when the IR is quantized
        self.neck = nn.AvgPool2d(3, stride, 1)
        self.flows = nn.ModuleList(
            build_flow(c, fh, fw, d, config.clamp, config.hidden_ratio)
            for c, (fh, fw), d in zip(self.channels, self.shapes, config.flow_depth)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Frozen, pooled backbone features of a normalised NCHW image batch."""
        return [self.neck(f) for f in self.backbone(x)]

    def flow(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-scale latents and the summed log|det J| per sample."""
        zs, logdet = [], 0.0
        for flow, f in zip(self.flows, feats):
            z, ld = flow(f)
            zs.append(z)
            logdet = logdet + ld
        return zs, logdet

    def loss(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood per dimension, averaged over the batch."""
        zs, logdet = self.flow(feats)
        dims = sum(z[0].numel() for z in zs)
        nll = sum(0.5 * (z**2).flatten(1).sum(1) for z in zs) - logdet
        return (nll / dims).mean()

    def anomaly_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(anomaly_map (B,1,H,W), score (B,), zsq_0 (B,1,h,w), zsq_1, ...) from a normalised image."""
        zs, _ = self.flow(self.features(x))
        size = x.shape[-2:]
        zsq = [(z**2).sum(1, keepdim=True) for z in zs]
        amap = sum(
            F.interpolate(0.5 * q / c, size=size, mode="bilinear", align_corners=False) for q, c in zip(zsq, self.channels)
        )
        flat = amap.flatten(1)
        k = max(1, int(flat.shape[1] * self.config.top_fraction))
        score = flat.topk(k, dim=1).values.mean(1)
        return (amap, score, *zsq)
