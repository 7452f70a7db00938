"""MS-Flow: multi-scale features of a frozen ImageNet CNN, sub-feature flows and a fusion coupling.

The paper's design, written for edge export (torch -> OpenVINO, no FrEIA at run time):

* **Backbone** — any timm CNN: EfficientNet/MobileNet-style models through
  `training.backbones` (offline EfficientNet-Lite0/1/2 weights), any other timm model through
  `features_only=True` with a weights file or timm's hub (the paper's EfficientNet-B5, WRN-50-2).
  Feature maps come from `stages` of the image at each of `image_scales` (CS-Flow's image
  pyramid: the paper's B5 config is one stride-32 stage of the image at 1, 1/2 and 1/4), and each
  map goes through AvgPool(3, pool_stride, 1) (the "neck").
* **Sub-feature split** — each scale's C_s channels are split into `subfeatures` (k) groups of
  C_s / k channels, and every group gets its own normalizing flow. The k flows of a scale run in
  parallel as one module with grouped convolutions (no cross computation between groups); this is
  exactly k independent flows, conditioned on a 2-D sin/cos positional encoding.
* **Parallel flows** — per scale `flow_depth[s]` coupling blocks (shallow for fine scales, deep
  for coarse ones, as in cool-xuan/msflow's [2, 5, 8]); each block = per-channel affine (ActNorm),
  a fixed random permutation inside every sub-feature, and an affine coupling whose subnet is
  Conv3x3 -> channel LayerNorm -> ReLU -> Conv3x3 with a soft clamp exp(c·0.636·atan(s/c)).
  `coupling="swap"` replaces the random permutations by two fixed halves that trade roles every
  block (no channel gathers in the exported graph; see MSFlowConfig.coupling).
* **Hierarchical perception (fusion)** — `fusion_depth` coupling layers over all scales at once:
  the conditioning halves of every scale are pooled to the coarsest grid, concatenated and fused,
  split back, upsampled to each scale, added to that scale's own half, and per-scale heads give the
  scale/shift for the other half. Layers alternate halves, so every channel is fused.
* **Likelihood and scores** — z per scale (all k sub-features, `flow()` returns them); the map is
  Σ_s upsample(0.5 · Σ_c z² / C_s), raw (no per-image max), the image score the mean of its top
  `top_fraction` pixels (3 % as in the reference). `anomaly_outputs` also returns Σ_c z² per scale
  (over all C_s channels) for the NFA detector at the edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.backbones import (OFFLINE_WEIGHTS, FeatureExtractor, WeightsError, create_feature_extractor, normalization,
                                standardise_photometry)

from . import register
from .likelihood import anomaly_outputs, nll_per_dim

SOFT_CLAMP = 0.636  # 2/pi: c·0.636·atan(s/c) stays in (-c, c)


@dataclass(frozen=True)
class MSFlowConfig:
    backbone: str = "tf_efficientnet_lite0"
    stages: tuple[int, ...] = (1, 2, 3)  # timm feature_info indices (Lite: 1/2/3 -> stride 4/8/16)
    image_scales: tuple[float, ...] = (1.0,)  # image pyramid (CS-Flow style); every stage of every scale is a flow scale
    input_size: tuple[int, int] = (256, 256)  # (H, W); non-square allowed
    pool_stride: int = 2  # AvgPool(3, stride, 1) on each feature map before its flow
    subfeatures: int = 4  # k: sub-features per scale, each with its own flow
    flow_depth: tuple[int, ...] = (2, 4, 6)  # coupling blocks per scale, shallow for fine
    fusion_depth: int = 1  # fusion coupling layers over all scales (0 = parallel flows only)
    clamp: float = 1.9
    hidden_ratio: float = 1.0  # subnet width = hidden_ratio x sub-feature channels (at least 8)
    fusion_hidden_ratio: float = 1.0
    pos_dim: int = 32  # positional-encoding channels of the condition (0 = none)
    top_fraction: float = 0.03  # image score = mean of the top fraction of the map
    # per-image photometric standardisation inside the graph: (x - mean) / std * 0.5 over all pixels and
    # channels (colour ratios kept); makes the flow blind to global lighting drift between lots/sessions
    image_norm: bool = False
    # score and map as the excess over the "normal envelope": per position, the highest NLL that good training
    # images reach (computed after training, stored in the checkpoint). Parts that are not aligned by design
    # still have fixed things (fixtures, tray edges, specular stripes) whose high NLL would otherwise be the score.
    envelope: bool = False
    seed: int = 0  # the fixed permutations of coupling="permute"
    # "swap" (the default): each scale's channels are split once into two halves that trade roles every block
    # (RealNVP's alternating masks): no channel Gathers or joins in the exported scale flows. "permute": every
    # block permutes each sub-feature's channels at random, then splits them (the reference design; the
    # permutation and split are channel Gathers). magnetic_tile, main setting, 12 epochs, trained and calibrated
    # both ways (AMX Xeon, 2026-12-01, one run each): FP32 image/pixel AUROC 0.9850/0.8054 (permute 0.9872/0.7990);
    # INT8 (8-bit weights, backbone+subnets) 0.9861/0.7979; the INT8 IR 6-10 % faster than permute's at 1 and 2
    # threads side by side, FP32 equal within noise; training 21-23 vs 15-17 img/s. benchmarks/results/accuracy.md
    # and quantization.md state which layout each row was trained with.
    coupling: str = "swap"
    # spatial kernel of every flow subnet and fusion convolution: 3 lets a position's z depend on its
    # neighbours' features (each block widens that by 2 cells), 1 keeps each z to its own position's features
    subnet_kernel: int = 3
    # checkpoints saved before a field existed were trained with these values (training.models.saved_config)
    saved_before: ClassVar[dict] = {"coupling": "permute"}


PRESETS: dict[str, dict] = {
    # the shipped default: EfficientNet-Lite0 stride 4/8/16 at 256 px, k = 4
    "default": {},
    # the paper's configuration: EfficientNet-B5 stride-32 stage of a 768/384/192 pyramid, k = 4
    # (B5 weights come from timm's hub or --weights FILE; none install offline here)
    "paper_b5": {"backbone": "tf_efficientnet_b5", "stages": (4,), "image_scales": (1.0, 0.5, 0.25),
                 "input_size": (768, 768), "pool_stride": 1, "flow_depth": (4, 4, 4), "subfeatures": 4},
    # deeper, wider-context features for textured surfaces (grinding marks, brushed metal, fabric): stride 8/16/32
    # stages unpooled (the same 32/16/8 grids at 256 px as the default) and deeper flows; on magnetic_tile image
    # AUROC rose from 0.80 to 0.92 over the default at equal epochs (benchmarks/results/accuracy.md)
    "surface": {"stages": (2, 3, 4), "pool_stride": 1, "flow_depth": (4, 6, 8)},
    # cool-xuan/msflow's stage variant: WideResNet-50-2 stages 1-3 at 512 px, depths [2, 5, 8]
    "wrn50": {"backbone": "wide_resnet50_2", "stages": (1, 2, 3), "input_size": (512, 512), "pool_stride": 2,
              "flow_depth": (2, 5, 8), "pos_dim": 64, "subfeatures": 4},
}


# ---------------------------------------------------------------------------------------------
# backbone


class TimmFeatures(nn.Module):
    """Any timm model with `features_only=True`, frozen (weights from a file or timm's hub)."""

    def __init__(self, name: str, stages: tuple[int, ...], weights: str | None, random_init: bool):
        super().__init__()
        import timm
        from types import SimpleNamespace

        pretrained = not random_init and not weights
        try:
            self.body = timm.create_model(name, features_only=True, out_indices=stages, pretrained=pretrained)
        except Exception as err:  # hub unreachable, unknown name
            raise WeightsError(
                f"backbone {name!r} needs ImageNet weights from timm's hub or a weights file (--weights FILE): {err}"
            ) from None
        if weights:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            missing, _ = self.body.load_state_dict(state, strict=False)
            if missing:
                raise WeightsError(f"weights file {weights} lacks {len(missing)} backbone tensors (e.g. {missing[0]})")
        info = self.body.feature_info
        self.spec = SimpleNamespace(channels=tuple(info.channels()), strides=tuple(info.reduction()))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x):
        return list(self.body(x))


def build_backbone(name: str, stages: tuple[int, ...], weights: str | None, random_init: bool) -> nn.Module:
    """EfficientNet/MobileNet-style timm models are truncated after the deepest stage; others use features_only."""
    import timm

    try:
        probe = timm.create_model(name, pretrained=False)
    except Exception as err:
        raise WeightsError(f"unknown backbone {name!r} ({err})") from None
    if not (hasattr(probe, "blocks") and hasattr(probe, "conv_stem")):
        return TimmFeatures(name, stages, weights, random_init)
    if weights or random_init or name in OFFLINE_WEIGHTS:
        return create_feature_extractor(name, stages, weights, random_init)
    try:  # e.g. the paper's EfficientNet-B5: timm's hub, where a host can reach it
        classifier = timm.create_model(name, pretrained=True)
    except Exception as err:
        raise WeightsError(f"backbone {name!r} has no offline weights and timm's hub is unreachable ({type(err).__name__}): "
                           f"pass a timm state dict with --weights FILE") from None
    return FeatureExtractor(classifier.eval(), stages)


# ---------------------------------------------------------------------------------------------
# flow pieces


def positional_encoding(dim: int, h: int, w: int) -> torch.Tensor:
    """2-D sin/cos encoding (dim, h, w): half the channels along x, half along y (dim % 4 == 0)."""
    if dim % 4:
        raise ValueError("pos_dim must be a multiple of 4")
    pe = torch.zeros(dim, h, w)
    half = dim // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(math.log(1e4) / half))
    pos_w = torch.arange(0.0, w).unsqueeze(1)
    pos_h = torch.arange(0.0, h).unsqueeze(1)
    pe[0:half:2] = torch.sin(pos_w * div).T.unsqueeze(1).repeat(1, h, 1)
    pe[1:half:2] = torch.cos(pos_w * div).T.unsqueeze(1).repeat(1, h, 1)
    pe[half::2] = torch.sin(pos_h * div).T.unsqueeze(2).repeat(1, 1, w)
    pe[half + 1 :: 2] = torch.cos(pos_h * div).T.unsqueeze(2).repeat(1, 1, w)
    return pe


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    return clamp * SOFT_CLAMP * torch.atan(s / clamp)


class GroupChannelNorm(nn.Module):
    """LayerNorm over the channels of each of `groups` groups, per pixel (the reference's LN(channels)).

    The group means are 1x1 grouped convolutions with a constant 1/channels kernel: the same numbers as a
    reshape to (b, groups, channels, h, w) and a mean over axis 2, but 4-D throughout. OpenVINO's CPU
    plugin reorders every such 5-D reshape between memory layouts and runs its ReduceMean slowly there:
    2.3 of 16.1 ms of magnetic_tile's INT8 IR (one thread, per-layer counters) went to the 19 norms."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(1, groups, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, groups, channels, 1, 1))
        self.register_buffer("average", torch.full((groups * channels, channels, 1, 1), 1.0 / channels), persistent=False)
        # True once fold_norm_means has moved the mean subtraction into the convolutions that feed this norm
        self.centered = False

    def forward(self, x):
        d = x if self.centered else x - F.conv2d(x, self.average, groups=self.groups)
        var = F.conv2d(d * d, self.average, groups=self.groups)
        return d / torch.sqrt(var + self.eps) * self.weight.flatten(1, 2) + self.bias.flatten(1, 2)


def center_output_channels(conv: nn.Conv2d, groups: int) -> None:
    """Subtract from every output channel's kernel and bias their mean over its group of output channels
    (`groups` equal, consecutive groups), in place: the convolution then outputs its former output minus
    that group mean at every pixel, zero padding included (the mean of convolutions is the convolution with
    the mean kernel)."""
    with torch.no_grad():
        w = conv.weight.view(groups, -1, *conv.weight.shape[1:])
        w -= w.mean(1, keepdim=True)
        if conv.bias is not None:
            b = conv.bias.view(groups, -1)
            b -= b.mean(1, keepdim=True)


def fold_norm_means(model: nn.Module) -> nn.Module:
    """Rewrite `model` in place into the same function with fewer ops for export: every GroupChannelNorm is fed
    by convolutions alone (a subnet's conv1 plus its positional-condition conv; the fusion's fuse1), so its mean
    subtraction moves into their weights (center_output_channels) and the norm keeps only the variance. Exact up
    to float rounding; removes one grouped 1x1 convolution and one subtraction per norm (19 of each in
    magnetic_tile's main model). For an export copy only: training the folded weights would train a different
    parametrisation."""
    for m in model.modules():
        if isinstance(m, (SwapCoupling, GroupedCoupling)):
            for conv in (m.conv1, m.cond):
                if conv is not None:
                    center_output_channels(conv, m.norm.groups)
            m.norm.centered = True
        elif isinstance(m, FusionCoupling):
            center_output_channels(m.fuse1, m.norm.groups)
            m.norm.centered = True
    return model


def subnet_hidden(block: nn.Module, a: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The coupling subnet up to its last convolution, shared by both block layouts:
    ReLU(LN(conv1(a) + cond(pos)))."""
    hid = block.conv1(a)
    if block.cond is not None:
        hid = hid + block.cond(pos)
    return F.relu(block.norm(hid))


class GroupedCoupling(nn.Module):
    """One flow block for k sub-features at once: ActNorm, in-group permutation, affine coupling.

    Channels are laid out sub-feature by sub-feature ([g0 | g1 | ...], `cg` each). Every
    convolution is grouped by sub-feature, so the k flows share no computation; the positional
    condition enters each group's first convolution through its own (ungrouped-input) conv.
    """

    def __init__(self, k: int, cg: int, hidden: int, clamp: float, pos_dim: int, rng: np.random.Generator,
                 kernel: int = 3):
        super().__init__()
        self.k, self.cg, self.clamp = k, cg, clamp
        self.ca = cg // 2
        self.cb = cg - self.ca
        c = k * cg
        self.log_scale = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, c, 1, 1))
        perm = np.concatenate([g * cg + rng.permutation(cg) for g in range(k)])
        # channel indices, so that permutation, split and join are Gathers on 4-D tensors (no 5-D reshapes,
        # which OpenVINO's CPU plugin reorders between memory layouts): a = the first ca channels of each
        # group, b = the other cb; the join puts [a_g | b_g] back group by group; the subnet's output holds
        # [s_g | t_g] per group
        part_a = np.array([g * cg + i for g in range(k) for i in range(self.ca)])
        part_b = np.array([g * cg + self.ca + i for g in range(k) for i in range(self.cb)])
        s_idx = np.array([g * 2 * self.cb + j for g in range(k) for j in range(self.cb)])
        for name, idx in (("inv_perm", np.argsort(perm)), ("part_a", part_a), ("part_b", part_b),
                          ("perm_a", perm[part_a]), ("perm_b", perm[part_b]),
                          ("join", np.argsort(np.concatenate([part_a, part_b]))), ("s_idx", s_idx),
                          ("t_idx", s_idx + self.cb)):
            self.register_buffer(name, torch.as_tensor(idx, dtype=torch.long), persistent=False)
        pad = kernel // 2
        self.conv1 = nn.Conv2d(k * self.ca, k * hidden, kernel, padding=pad, groups=k)
        self.cond = nn.Conv2d(pos_dim, k * hidden, kernel, padding=pad, bias=False) if pos_dim else None
        self.norm = GroupChannelNorm(k, hidden)
        self.conv2 = nn.Conv2d(k * hidden, k * 2 * self.cb, kernel, padding=pad, groups=k)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def _join(self, a, bb):
        return torch.cat([a, bb], 1)[:, self.join]

    def _scale_shift(self, a, pos):
        out = self.conv2(subnet_hidden(self, a, pos))
        return soft_clamp(out[:, self.s_idx], self.clamp), out[:, self.t_idx]

    def forward(self, x, pos):
        hw = x.shape[-2] * x.shape[-1]
        x = x * torch.exp(self.log_scale) + self.shift
        a, bb = x[:, self.perm_a], x[:, self.perm_b]  # the permutation and the split in one gather each
        s, t = self._scale_shift(a, pos)
        bb = bb * torch.exp(s) + t
        logdet = s.flatten(1).sum(1) + self.log_scale.sum() * hw
        return self._join(a, bb), logdet

    def reverse(self, y, pos):
        a, bb = y[:, self.part_a], y[:, self.part_b]
        s, t = self._scale_shift(a, pos)
        bb = (bb - t) * torch.exp(-s)
        x = self._join(a, bb)[:, self.inv_perm]
        return (x - self.shift) * torch.exp(-self.log_scale)


class SwapCoupling(nn.Module):
    """One flow block of the "swap" layout for k sub-features at once: ActNorm on both halves, then an affine
    coupling of half b conditioned on half a; the caller hands the outputs on swapped, so a and b trade roles.

    Each half is laid out sub-feature by sub-feature (`ca`, `cb` channels per sub-feature), so the grouped
    convolutions keep the k flows apart without any channel gather; s and t come from two convolutions so
    that neither needs splitting out of an interleaved output.
    """

    def __init__(self, k: int, ca: int, cb: int, hidden: int, clamp: float, pos_dim: int, kernel: int = 3):
        super().__init__()
        self.clamp = clamp
        self.log_scale_a = nn.Parameter(torch.zeros(1, k * ca, 1, 1))
        self.shift_a = nn.Parameter(torch.zeros(1, k * ca, 1, 1))
        self.log_scale_b = nn.Parameter(torch.zeros(1, k * cb, 1, 1))
        self.shift_b = nn.Parameter(torch.zeros(1, k * cb, 1, 1))
        pad = kernel // 2
        self.conv1 = nn.Conv2d(k * ca, k * hidden, kernel, padding=pad, groups=k)
        self.cond = nn.Conv2d(pos_dim, k * hidden, kernel, padding=pad, bias=False) if pos_dim else None
        self.norm = GroupChannelNorm(k, hidden)
        self.conv2s = nn.Conv2d(k * hidden, k * cb, kernel, padding=pad, groups=k)
        self.conv2t = nn.Conv2d(k * hidden, k * cb, kernel, padding=pad, groups=k)
        for conv in (self.conv2s, self.conv2t):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _scale_shift(self, a, pos):
        h = subnet_hidden(self, a, pos)
        return soft_clamp(self.conv2s(h), self.clamp), self.conv2t(h)

    def forward(self, a, b, pos):
        hw = a.shape[-2] * a.shape[-1]
        a = a * torch.exp(self.log_scale_a) + self.shift_a
        b = b * torch.exp(self.log_scale_b) + self.shift_b
        s, t = self._scale_shift(a, pos)
        logdet = s.flatten(1).sum(1) + (self.log_scale_a.sum() + self.log_scale_b.sum()) * hw
        return a, b * torch.exp(s) + t, logdet

    def reverse(self, a, b, pos):
        s, t = self._scale_shift(a, pos)
        b = (b - t) * torch.exp(-s)
        return (a - self.shift_a) * torch.exp(-self.log_scale_a), (b - self.shift_b) * torch.exp(-self.log_scale_b)


class ScaleFlow(nn.Module):
    """The k parallel sub-feature flows of one scale.

    coupling="permute": channels laid out sub-feature by sub-feature, a random permutation inside each
    sub-feature before every coupling (GroupedCoupling). coupling="swap": the first half of the channels holds
    every sub-feature's first part, the second half their second parts; the halves trade roles every block
    (SwapCoupling), and z comes out in the order [a | b] of the last block."""

    def __init__(self, channels: int, k: int, h: int, w: int, depth: int, clamp: float, hidden_ratio: float,
                 pos_dim: int, rng: np.random.Generator, coupling: str = "permute", kernel: int = 3):
        super().__init__()
        if coupling not in ("permute", "swap"):
            raise ValueError(f"unknown coupling {coupling!r}: 'permute' or 'swap'")
        if channels % k:
            raise ValueError(f"{channels} channels cannot be split into {k} equal sub-features")
        cg = channels // k
        if cg < 2:
            raise ValueError(f"{channels} channels into {k} sub-features leaves fewer than 2 channels each")
        hidden = max(8, int(round(cg * hidden_ratio)))
        self.register_buffer("pos", positional_encoding(pos_dim, h, w)[None] if pos_dim else torch.zeros(1, 0, h, w),
                             persistent=False)
        self.swap = coupling == "swap"
        if self.swap:
            ca, cb = cg // 2, cg - cg // 2
            self.half = k * ca  # the first half: every sub-feature's first ca channels
            # block i conditions on the half that block i-1 transformed: widths alternate when cg is odd
            self.blocks = nn.ModuleList(SwapCoupling(k, *((ca, cb) if i % 2 == 0 else (cb, ca)), hidden, clamp, pos_dim,
                                                     kernel) for i in range(depth))
        else:
            self.blocks = nn.ModuleList(GroupedCoupling(k, cg, hidden, clamp, pos_dim, rng, kernel)
                                        for _ in range(depth))

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        if self.swap:
            a, b = x[:, : self.half], x[:, self.half :]
            for block in self.blocks:
                a, b, ld = block(a, b, self.pos)
                a, b = b, a
                logdet = logdet + ld
            return torch.cat([a, b], 1), logdet
        for block in self.blocks:
            x, ld = block(x, self.pos)
            logdet = logdet + ld
        return x, logdet

    def reverse(self, z):
        if self.swap:
            n_first = self.blocks[-1].conv2s.out_channels if self.blocks else self.half  # the last block's output a = its b
            a, b = z[:, :n_first], z[:, n_first:]
            for block in reversed(self.blocks):
                a, b = block.reverse(b, a, self.pos)
            return torch.cat([a, b], 1)
        for block in reversed(self.blocks):
            z = block.reverse(z, self.pos)
        return z


def pool_kernel(size: tuple[int, int], coarse: tuple[int, int]) -> tuple[int, int] | None:
    """The average-pooling kernel (= stride) that takes a `size` map to `coarse`, or None where it does not divide."""
    if size[0] % coarse[0] or size[1] % coarse[1]:
        return None
    return size[0] // coarse[0], size[1] // coarse[1]


class FusionCoupling(nn.Module):
    """Hierarchical perception: one affine coupling over all scales, conditioned on all of them.

    Each scale's channels are split into a conditioning half (every other channel of each
    sub-feature, `parity` picks which) and a transformed half. The conditioning halves of all
    scales are average-pooled to the coarsest grid, concatenated and fused (Conv3x3 -> LN -> ReLU
    -> Conv3x3 -> ReLU), split back per scale, upsampled, added to that scale's own half, and a
    per-scale Conv3x3 head gives the soft-clamped log-scale and shift of the other half.
    """

    def __init__(self, channels: tuple[int, ...], shapes: list[tuple[int, int]], clamp: float, hidden_ratio: float,
                 parity: int, kernel: int = 3):
        super().__init__()
        self.clamp, self.shapes = clamp, shapes
        self.coarse = min(shapes, key=lambda s: s[0] * s[1])
        # plain average pooling where the sizes divide: the same numbers as adaptive pooling, and OpenVINO's CPU plugin
        # runs it as a JIT kernel (its AdaptiveAvgPool ran as a reference one, 0.15 ms of the fusion at 2 threads);
        # kernels as plain ints, fixed here, because the export traces shapes as tensors: paired with the scales by
        # position, not looked up by a map's size (a traced size misses a dict and silently pooled adaptively)
        self.pool_kernels = [pool_kernel(tuple(s), self.coarse) for s in shapes]
        # False (set on the export copy's last fusion layer only) leaves each output in [conditioning half |
        # transformed half] channel order: the exported graph uses z only through Σ_c z², which ignores the order,
        # and the reordering gather (with the layout reorders it forces) is then dead work
        self.ordered = True
        idx_a = [torch.arange(parity, c, 2) for c in channels]
        idx_b = [torch.arange(1 - parity, c, 2) for c in channels]
        for i, (ia, ib) in enumerate(zip(idx_a, idx_b)):
            self.register_buffer(f"ia{i}", ia, persistent=False)
            self.register_buffer(f"ib{i}", ib, persistent=False)
            order = torch.argsort(torch.cat([ia, ib]))
            self.register_buffer(f"join{i}", order, persistent=False)
        self.ca = [len(i) for i in idx_a]
        self.cb = [len(i) for i in idx_b]
        total = sum(self.ca)
        hidden = max(16, int(round(total * hidden_ratio)))
        pad = kernel // 2
        self.fuse1 = nn.Conv2d(total, hidden, kernel, padding=pad)
        self.norm = GroupChannelNorm(1, hidden)
        self.fuse2 = nn.Conv2d(hidden, total, kernel, padding=pad)
        self.heads = nn.ModuleList(nn.Conv2d(ca, 2 * cb, kernel, padding=pad) for ca, cb in zip(self.ca, self.cb))
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def _halves(self, zs):
        return ([z[:, getattr(self, f"ia{i}")] for i, z in enumerate(zs)],
                [z[:, getattr(self, f"ib{i}")] for i, z in enumerate(zs)])

    def _pool(self, a, kernel):
        if tuple(a.shape[-2:]) == self.coarse:
            return a
        if kernel is not None and tuple(a.shape[-2:]) == (kernel[0] * self.coarse[0], kernel[1] * self.coarse[1]):
            return F.avg_pool2d(a, kernel, kernel)
        return F.adaptive_avg_pool2d(a, self.coarse)

    def _scale_shift(self, a_parts):
        pooled = [self._pool(a, k) for a, k in zip(a_parts, self.pool_kernels)]
        fused = F.relu(self.fuse2(F.relu(self.norm(self.fuse1(torch.cat(pooled, 1))))))
        out = []
        for a, part, head, cb in zip(a_parts, torch.split(fused, self.ca, 1), self.heads, self.cb):
            if tuple(a.shape[-2:]) != self.coarse:
                part = F.interpolate(part, size=tuple(a.shape[-2:]), mode="bilinear", align_corners=False)
            st = head(a + part)
            out.append((soft_clamp(st[:, :cb], self.clamp), st[:, cb:]))
        return out

    def _join(self, i, a, b):
        ab = torch.cat([a, b], 1)
        return ab[:, getattr(self, f"join{i}")] if self.ordered else ab

    def forward(self, zs):
        a_parts, b_parts = self._halves(zs)
        out, logdet = [], zs[0].new_zeros(zs[0].shape[0])
        for i, (a, b, (s, t)) in enumerate(zip(a_parts, b_parts, self._scale_shift(a_parts))):
            out.append(self._join(i, a, b * torch.exp(s) + t))
            logdet = logdet + s.flatten(1).sum(1)
        return out, logdet

    def reverse(self, ys):
        a_parts, b_parts = self._halves(ys)
        return [self._join(i, a, (b - t) * torch.exp(-s))
                for i, (a, b, (s, t)) in enumerate(zip(a_parts, b_parts, self._scale_shift(a_parts)))]


# ---------------------------------------------------------------------------------------------
# the model


@register("msflow", MSFlowConfig)
class MSFlow(nn.Module):
    # module paths whose ops (and everything after them) stay in floating point under INT8
    float_scopes = (".neck", ".flows.", ".fusion")

    def __init__(self, config: MSFlowConfig, weights: str | None = None, random_init: bool = False):
        super().__init__()
        n_scales = len(config.stages) * len(config.image_scales)
        if len(config.flow_depth) != n_scales:
            raise ValueError(f"flow_depth needs one entry per flow scale ({len(config.image_scales)} image scales x "
                             f"{len(config.stages)} stages = {n_scales}), got {len(config.flow_depth)}")
        if config.subfeatures < 1:
            raise ValueError("subfeatures must be >= 1")
        if config.subnet_kernel < 1 or config.subnet_kernel % 2 == 0:
            raise ValueError(f"subnet_kernel must be odd and >= 1 (3 or 1), got {config.subnet_kernel}")
        self.config = config
        self.backbone = build_backbone(config.backbone, tuple(config.stages), weights, random_init)
        self.mean, self.std = normalization(config.backbone)
        h, w = config.input_size
        st = config.pool_stride
        self.neck = nn.AvgPool2d(3, st, 1) if st > 1 else nn.Identity()
        with torch.no_grad():  # feature sizes as the graph computes them (padding conventions differ per backbone)
            probe = self.features(torch.zeros(1, 3, h, w))
        chans = [f.shape[1] for f in probe]
        shapes = [tuple(f.shape[-2:]) for f in probe]
        self.channels = tuple(chans)
        self.shapes = shapes
        # the neck (pooling), the flows and the fusion stay in floating point when the IR is quantized
        rng = np.random.default_rng(config.seed)
        self.flows = nn.ModuleList(
            ScaleFlow(c, config.subfeatures, fh, fw, d, config.clamp, config.hidden_ratio, config.pos_dim, rng,
                      config.coupling, config.subnet_kernel)
            for c, (fh, fw), d in zip(self.channels, shapes, config.flow_depth)
        )
        self.fusion = nn.ModuleList(
            FusionCoupling(self.channels, shapes, config.clamp, config.fusion_hidden_ratio, parity=i % 2,
                           kernel=config.subnet_kernel)
            for i in range(config.fusion_depth if n_scales > 1 else 0)
        )
        self.register_buffer("map_envelope", torch.zeros(1, 1, h, w))  # set by training when config.envelope

    # -- the contract used by training/ and calibration/ ------------------------------------------

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Frozen, pooled backbone features of a normalised NCHW image batch, one map per flow scale."""
        h, w = x.shape[-2:]
        if self.config.image_norm:
            x = standardise_photometry(x)
        out = []
        for r in self.config.image_scales:
            xr = x if r == 1.0 else F.interpolate(x, size=(int(round(h * r)), int(round(w * r))), mode="bilinear",
                                                  align_corners=False, antialias=False)
            out.extend(self.neck(f) for f in self.backbone(xr))
        return out

    def flow(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-scale latents z (B, C_s, h_s, w_s), all k sub-features, and the total log|det J| per sample."""
        zs, logdet = [], feats[0].new_zeros(feats[0].shape[0])
        for flow, f in zip(self.flows, feats):
            z, ld = flow(f)
            zs.append(z)
            logdet = logdet + ld
        for layer in self.fusion:
            zs, ld = layer(zs)
            logdet = logdet + ld
        return zs, logdet

    def reverse(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features from latents (the inverse of `flow`)."""
        for layer in reversed(self.fusion):
            zs = layer.reverse(zs)
        return [flow.reverse(z) for flow, z in zip(self.flows, zs)]

    def loss(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood per dimension, averaged over the batch (Σ_s 0.5 Σ z² − log|det J|)."""
        return nll_per_dim(*self.flow(feats))

    def anomaly_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(anomaly_map (B,1,H,W), score (B,), zsq_0 (B,1,h,w), zsq_1, ...) from a normalised image.

        zsq_s = Σ_c z_c² over all C_s channels of scale s; map = Σ_s upsample(0.5 · zsq_s / C_s)
        (the negative log-likelihood per channel), or its excess over the normal envelope when
        `config.envelope`; score = mean of its top `top_fraction`.
        """
        return self.outputs_from_features(self.features(x), x.shape[-2:])

    def outputs_from_features(self, feats: list[torch.Tensor], size, raw: bool = False) -> tuple[torch.Tensor, ...]:
        """`anomaly_outputs` from cached `features(x)` (benchmarks reuse one extraction for many flows);
        `raw` ignores the normal envelope."""
        envelope = self.map_envelope if self.config.envelope and not raw else None
        return anomaly_outputs(self.flow(feats)[0], self.channels, size, self.config.top_fraction, envelope)

    def fold_for_export(self) -> None:
        """In place, on the export copy (calibration.export.export_copy): the same outputs in fewer ops.
        Measured on magnetic_tile's main model (AMX Xeon, blocks of runs side by side): the norm-mean fold made the
        FP32 IR 4-5 % and the INT8 IR 3.5-7 % faster at 1 and 2 threads; leaving the last fusion layer's latents
        in split order (the outputs use z only through Σ_c z²) then 0.5-3 % and 2-11 %."""
        fold_norm_means(self)
        if self.fusion:
            self.fusion[-1].ordered = False

    # -- accounting ------------------------------------------------------------------------------

    def param_counts(self) -> dict[str, int]:
        flow = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("backbone."))
        return {"backbone": sum(p.numel() for p in self.backbone.parameters()), "flow": flow}
