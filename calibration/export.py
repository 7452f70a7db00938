"""Export a trained model whole (u8 BGR image in; map, score and per-scale Σ z² out) to OpenVINO.

Pre-processing (u8 -> f32, BGR -> RGB, mean/scale, NHWC -> NCHW) is embedded with OpenVINO's
PrePostProcessor, so the edge feeds camera frames resized to the input size and nothing else.

Outputs, in this order (OpenVINO model_api's `AnomalyDetection` wrapper accepts 1 or 4 outputs,
reads only the FIRST one when they are not anomalib's pred_* quartet, and takes that map's
maximum as the image score it compares with `image_threshold`):

  0. `anomaly_map_capped` (1, 1, H, W): the anomaly map capped at the image score, so its
     maximum IS the image score (the model's score is the mean of the map's top fraction, not
     its max). model_api's pred_label, pred_score and pred_mask then agree with edge-inspect's
     `image_threshold` and `pixel_threshold` in the same units;
  1. `anomaly_map` (1, 1, H, W): the raw map (heatmaps, pixel AUROC);
  2. `score` (1,): the image score;
  3. `zsq` (1, Σ_s h_s·w_s): every scale's Σ_c z_c² map flattened and concatenated in the model's
     scale order; the shapes are `latent_shapes` in the IR metadata ("h0 w0 h1 w1 ...").
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from training.models.likelihood import envelope_excess

INPUT_NAME = "image"


def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix R with R @ v == F.interpolate(v, n_out, mode="linear", align_corners=False)
    along one axis (PyTorch's source index: max((i + 0.5) · n_in / n_out − 0.5, 0), edge clamped)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.float()


TOP_K_STEPS = 20


def top_k_mean(flat: torch.Tensor, k: int, steps: int = TOP_K_STEPS) -> torch.Tensor:
    """Mean of the k largest values of each row of `flat` (B, N), without a TopK op.

    The sum of the k largest values is min over t of k·t + Σ relu(x − t), reached at any t between
    the (k+1)-th and the k-th largest value. Bisection on t keeps count(x > lo) ≥ k > count(x > hi);
    after `steps` halvings of [min, max], t = hi is within (max − min) / 2^steps of the k-th
    largest value and the mean is off by at most (1 − count(x > hi) / k) · that gap: with 20 steps,
    under 1e-6 of the map's range, i.e. float rounding for any threshold (the tests check it on
    ties, spikes and constant maps). Each step is a compare and a count over the map. OpenVINO's
    TopK took 1.5 ms for k = 1966 of 256² on one thread (numpy's partition: 0.16 ms); in the
    magnetic_tile FP32 IR (AMX Xeon, f32, same run) the bisection took the median from 23.08 to
    22.53 ms at 1 thread and left 2 threads unchanged (19.57 / 19.51 ms). Ties and a constant map
    are exact; a NaN in the map gives NaN (a reject at the edge), as TopK's mean does.

    The count is a float sum (exact below 2^24 pixels): counted as integers, OpenVINO's CPU plugin ran
    each step's bool -> int Convert with its reference kernel and a separate int ReduceSum, 20 times;
    as floats the compare folds into the sum's input. magnetic_tile FP32 IR, same run, median of 200:
    26.49 -> 25.05 and 24.84 -> 24.30 ms at 1 thread, 19.67 -> 19.10 and 16.96 -> 16.49 ms at 2."""
    lo = flat.amin(1, keepdim=True)
    hi = flat.amax(1, keepdim=True)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        enough = (flat > mid).float().sum(1, keepdim=True) >= k
        lo = torch.where(enough, mid, lo)
        hi = torch.where(enough, hi, mid)
    return (torch.relu(flat - hi).sum(1) + k * hi[:, 0]) / k


class ExportGraph(nn.Module):
    """BGR normalised NCHW in (the PrePostProcessor feeds it), the four outputs out.

    The map and score are the formula of `training.models.likelihood.anomaly_outputs`
    (map = Σ_s bilinear_upsample(0.5 · zsq_s / C_s), score = mean of the map's top fraction),
    written in ops OpenVINO's CPU plugin runs fast: the bilinear upsampling of each 1-channel
    map as two small MatMuls with constant interpolation matrices (R_y · q · R_xᵀ, exact up to
    float rounding). Measured here on three maps upsampled to 256²: 11.6 ms -> 1.2 ms (best of
    100, one thread), which was most of the float work left after INT8. The score's top-k mean
    is `top_k_mean` (a bisection, not OpenVINO's TopK: see there). The export parity tests
    compare these outputs with the torch model's own `anomaly_outputs`.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.size = tuple(int(v) for v in model.config.input_size)
        if self.size[0] * self.size[1] >= 2**24:  # top_k_mean counts pixels in float32
            raise ValueError(f"input {self.size[0]}x{self.size[1]} has more pixels than the exported score counts exactly (2^24)")
        self.top_fraction = float(model.config.top_fraction)
        self.channels = [int(c) for c in model.channels]
        shapes = latent_shapes(model)
        for i, ((h, w), c) in enumerate(zip(shapes, self.channels)):
            # 0.5 / C folded into the row matrix
            self.register_buffer(f"ry{i}", bilinear_matrix(h, self.size[0]) * (0.5 / c), persistent=False)
            self.register_buffer(f"rxt{i}", bilinear_matrix(w, self.size[1]).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor):
        _, _, *zsq = self.model.anomaly_outputs(x)  # the model's own map and score are dead code here
        amap = sum(getattr(self, f"ry{i}") @ q @ getattr(self, f"rxt{i}") for i, q in enumerate(zsq))
        if getattr(self.model.config, "envelope", False):  # the map beyond what good parts reach (training.models.likelihood)
            amap = envelope_excess(amap, self.model.map_envelope)
        flat = amap.flatten(1)
        k = max(1, int(flat.shape[1] * self.top_fraction))
        score = top_k_mean(flat, k)
        capped = torch.minimum(amap, score.view(-1, 1, 1, 1))
        return capped, amap, score, torch.cat([q.flatten(1) for q in zsq], 1)


def bgr_input_copy(model: nn.Module) -> nn.Module:
    """A copy of the model that takes BGR: the stem convolution's input channels are reversed.

    conv(W, rgb) == conv(W[:, ::-1], bgr), so the swap costs nothing at run time. A channel
    swap in front of the graph (PrePostProcessor's convert_color(RGB), or a gather in torch) was
    folded away by OpenVINO's optimiser ahead of the backbone's padded stem convolution: the IR
    then saw BGR and its scores moved by up to 15 % (measured on colour tiles).
    """
    import copy

    clone = copy.deepcopy(model)
    stem = next((m for m in clone.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None)
    if stem is None:
        raise ValueError("no 3-channel input convolution found to take BGR input")
    with torch.no_grad():
        stem.weight.copy_(stem.weight.flip(1))
    return clone


def export_copy(model: nn.Module) -> nn.Module:
    """The copy of the model that is exported: BGR input (bgr_input_copy), and the model's own exact rewrites into
    fewer ops where it has them (`fold_for_export`, e.g. MS-Flow's norm means folded into convolutions)."""
    clone = bgr_input_copy(model)
    fold = getattr(clone, "fold_for_export", None)
    if fold is not None:
        fold()
    return clone


OUTPUT_NAMES = ("anomaly_map_capped", "anomaly_map", "score", "zsq")


def output_names(n_scales: int | None = None) -> list[str]:
    return list(OUTPUT_NAMES)


def latent_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(h, w) of each scale's Σ z² map at the model's input size, in output order."""
    h, w = model.config.input_size
    with torch.no_grad():
        _, _, *zsq = model.eval().anomaly_outputs(torch.zeros(1, 3, h, w))
    return [(int(q.shape[-2]), int(q.shape[-1])) for q in zsq]


def to_openvino(model: nn.Module):
    """torch model -> ov.Model with embedded pre-processing and named outputs."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    h, w = model.config.input_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(ExportGraph(export_copy(model).eval()), example_input=torch.zeros(1, 3, h, w),
                                    input=[(1, 3, h, w)])
    replace_atan(ov_model)
    for out, name in zip(ov_model.outputs, OUTPUT_NAMES):
        out.get_tensor().set_names({name})
    ppp = PrePostProcessor(ov_model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    # mean/scale in the tensor's BGR order; ExportGraph swaps to RGB
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(
        [255.0 * m for m in reversed(model.mean)]).scale([255.0 * s for s in reversed(model.std)])
    ov_model = ppp.build()
    ov_model.input(0).get_tensor().set_names({INPUT_NAME})
    # the flat zsq output is unreadable without its shapes: they travel with the graph from the start
    ov_model.set_rt_info(" ".join(f"{a} {b}" for hw in latent_shapes(model) for a, b in [hw]), ["model_info", "latent_shapes"])
    return ov_model


def _fast_atan(x):
    """atan in elementwise ops (Cephes atanf: range reduction at tan(π/8), tan(3π/8), then a
    degree-9 odd polynomial; max error 1.2e-7 against OpenVINO's Atan, measured). OpenVINO's CPU
    plugin runs Atan as a reference kernel (about 4x slower on a 24x32x32 tensor); these ops fuse
    into one JIT subgraph."""
    import numpy as np
    from openvino import opset13 as ops

    def f32(v):
        return ops.constant(np.float32(v))

    ax = ops.abs(x)
    big = ops.greater(ax, f32(2.414213562373095))
    mid = ops.greater(ax, f32(0.4142135623730950))
    inv = ops.divide(f32(-1.0), ops.maximum(ax, f32(1e-30)))
    red = ops.divide(ops.subtract(ax, f32(1.0)), ops.add(ax, f32(1.0)))
    t = ops.select(big, inv, ops.select(mid, red, ax))
    y0 = ops.select(big, f32(np.pi / 2), ops.select(mid, f32(np.pi / 4), f32(0.0)))
    z = ops.multiply(t, t)
    p = f32(8.05374449538e-2)
    for c in (-1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1):
        p = ops.add(ops.multiply(p, z), f32(c))
    y = ops.add(y0, ops.add(ops.multiply(ops.multiply(p, z), t), t))
    return ops.select(ops.less(x, f32(0.0)), ops.negative(y), y)  # not Sign: a reference kernel too


def replace_atan(ov_model) -> int:
    """Swap every f32 Atan (the flows' soft clamp) for `_fast_atan`; returns how many."""
    n = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == "Atan" and op.get_output_element_type(0).get_type_name() == "f32":
            new = _fast_atan(op.input_value(0))
            new.set_friendly_name(op.get_friendly_name())  # keeps the float-scope markers in its name
            op.output(0).replace(new.output(0))
            n += 1
    return n


def float_op_names(ov_model, markers: tuple[str, ...]) -> list[str]:
    """Every op from the model's float scopes on: the neck, the flow, the map and the score.

    Name patterns miss ops that the converter renames (views, reshapes, z², the map), so the list
    is built from the graph: seeds are ops whose name carries a float scope's module path (the
    model's `float_scopes`), then every consumer of a seed, transitively. The neck matters: a
    per-tensor INT8 quantizer on the backbone's feature maps crushes low-range channels, which
    the flow then standardises into huge latents (measured: image AUROC 1.0 -> 0.52).
    """
    ops = ov_model.get_ordered_ops()
    downstream = {op.get_friendly_name() for op in ops if any(m in op.get_friendly_name() for m in markers)}
    for op in ops:  # topological order: one pass reaches every consumer
        if op.get_type_name() in ("Constant", "Result"):
            continue
        if any(src.get_node().get_friendly_name() in downstream for src in op.input_values()):
            downstream.add(op.get_friendly_name())
    return sorted(name for name in downstream if not name.startswith("self."))


CONV_TYPES = ("Convolution", "GroupConvolution")


def subnet_conv_names(ov_model, float_names: list[str], markers: tuple[str, ...]) -> set[str]:
    """The convolutions of coupling subnets inside the float region (candidates for INT8).

    The numerically sensitive parts of a coupling (soft clamp, exp, log-det, z²) are not
    convolutions, so they stay in float; only the subnet convolutions that predict s and t
    are handed to the quantizer."""
    names = set(float_names)
    return {op.get_friendly_name() for op in ov_model.get_ordered_ops()
            if op.get_type_name() in CONV_TYPES and op.get_friendly_name() in names
            and any(m in op.get_friendly_name() for m in markers)}


def save_ir(ov_model, path, compress_to_fp16: bool = False) -> None:
    """Write the IR atomically: a running process may have the old .bin memory-mapped, and
    overwriting it in place kills that process with SIGBUS."""
    import os
    from pathlib import Path

    import openvino as ov

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    ov.save_model(ov_model, str(tmp), compress_to_fp16=compress_to_fp16)
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)
