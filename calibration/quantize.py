"""Post-training INT8 quantization with NNCF, with the flow's sensitive math kept in floating point.

A plain `nncf.quantize` of backbone + flow collapses the anomaly map: the flow's outputs span
orders of magnitude and a FakeQuantize on z² has a step larger than normal values; a per-tensor
quantizer on the backbone's feature maps crushes low-range channels that the flow then
standardises into huge latents. So the model's float scopes (neck, flows, fusion) and everything
after them stay out of quantization, through an ignored scope built from the graph. Two splits
are offered, fastest first:

* ``backbone+subnets``: also the convolutions of the coupling subnets (they predict s and t; the
  soft clamp, exp, log-det and z² stay float);
* ``backbone+subnets, last taps in float``: the same, but the convolution that produces each
  feature map the flows read stays float (the last INT8 rounding before the flow standardises
  the features is what costs pixel AUROC; measured on magnetic_tile);
* ``backbone+subnets, taps in float``: also every projection convolution on the residual chain
  into those feature maps;
* ``backbone``: the backbone only.

Names in the ignored scope must come from the graph that is quantized: the converter numbers
unnamed ops afresh on every export.

Calibration images are spread over the whole training set. Each split is tried first with good images
plus the same images with synthetic defects drawn in (good images alone can clip the unusual activations
that carry defects), then with the good images alone: with min/max ranges the drawn-in defects widen
every range and cost normal values their resolution. Measured on magnetic_tile's exposure-trained main
model, backbone+subnets: pixel AUROC drop 1.23 pt with the defects, 0.61 pt without; image 0.18 / 0.22 pt.
"""

from __future__ import annotations

import numpy as np

from .export import CONV_TYPES, float_op_names, subnet_conv_names

SPLITS = ("backbone+subnets", "backbone+subnets, last taps in float", "backbone+subnets, taps in float", "backbone")
# not ".cond": a coupling's condition convolution reads the constant positional encoding, so OpenVINO folds it
# into a constant when it compiles the graph; in INT8 it would only add rounding error, never speed
SUBNET_MARKERS = (".conv1", ".conv2", ".fuse1", ".fuse2", ".heads.", ".subnet")


def spread(items: list, n: int) -> list:
    """n items evenly spaced over the list, first and last included (all of them when n >= len).

    Training files come in name order and a capture session is often a name prefix: magnetic_tile's first
    300 were the three darkest of its six exposure sessions, so INT8 ranges never saw a bright part."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


def calibration_frames(good: list[np.ndarray], target: int = 300, defect_fraction: float = 0.25, seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Good frames (flipped copies when fewer than target) plus a share with synthetic defects."""
    from training.synthetic import DEFECTS, draw_defect

    rng = np.random.default_rng(seed)
    frames = list(good)
    variants = [lambda f: f[:, ::-1], lambda f: f[::-1, :], lambda f: f[::-1, ::-1]]
    i = 0
    while len(frames) < target and i < 3 * len(good):
        frames.append(np.ascontiguousarray(variants[i // len(good)](good[i % len(good)])))
        i += 1
    n_def = int(len(frames) * defect_fraction)
    for j in range(n_def):
        base = good[int(rng.integers(len(good)))].astype(np.float32)
        img, _ = draw_defect(rng, base, DEFECTS[j % len(DEFECTS)])
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return frames, n_def


def feature_tap_convs(ov_model, float_names: list[str], through_add: bool = True) -> list[str]:
    """The backbone convolutions whose outputs reach the float region through non-convolution ops
    only: the projection convolutions of the stages the flows read. Keeping them in float removes
    the last INT8 rounding from the feature maps the flow standardises.

    through_add=True follows residual Adds too, so every projection convolution of a tapped
    stage's residual chain stays float (8 convolutions of EfficientNet-Lite0 at three taps: 2.3 of
    9.7 ms of the INT8 IR, measured with OpenVINO's per-layer counters); False stops at the
    first Add, keeping only each tap's own last convolution in float."""
    inside = set(float_names)
    ops = {op.get_friendly_name(): op for op in ov_model.get_ordered_ops()}
    found: set[str] = set()
    for name in inside:
        op = ops.get(name)
        if op is None:
            continue
        stack = [v.get_node() for v in op.input_values()]
        seen: set[str] = set()
        while stack:
            node = stack.pop()
            nm = node.get_friendly_name()
            if nm in inside or nm in seen or node.get_type_name() in ("Constant", "Parameter"):
                continue
            seen.add(nm)
            if node.get_type_name() in CONV_TYPES:
                found.add(nm)
            elif (not through_add and node.get_type_name() == "Add"
                  and not any(v.get_node().get_type_name() == "Constant" for v in node.input_values())):
                # a residual sum: follow only the block's own branch (its output feeds this Add alone);
                # the skip input also feeds the block's first convolution
                stack += [v.get_node() for v in node.input_values() if len(v.get_target_inputs()) == 1]
            else:
                stack += [v.get_node() for v in node.input_values()]
    return sorted(found)


def subnet_convs(ov_model, float_scopes: tuple[str, ...]) -> set[str]:
    """The coupling-subnet convolutions that the ``backbone+subnets`` splits let into INT8."""
    return subnet_conv_names(ov_model, float_op_names(ov_model, float_scopes), SUBNET_MARKERS)


def ignored_names(ov_model, float_scopes: tuple[str, ...], split: str, keep_float=()) -> tuple[list[str], int]:
    """Ops to keep in float for a split, and how many subnet convolutions were let into INT8; `keep_float`
    names subnet convolutions that stay float all the same (those `slower_in_int8` found)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    names = float_op_names(ov_model, float_scopes)
    taps = feature_tap_convs(ov_model, names, through_add="last taps" not in split) if "taps in float" in split else []
    if split.startswith("backbone+subnets"):
        convs = subnet_conv_names(ov_model, names, SUBNET_MARKERS) - set(keep_float)
        return [n for n in names if n not in convs] + taps, len(convs)
    return names + taps, 0


# Asymmetric activation quantizers (nncf's MIXED preset) instead of symmetric ones (PERFORMANCE, the
# default). Measured on magnetic_tile's main model, the
# backbone+subnets split, all 582 test images: pixel AUROC drop 1.60 -> 0.83 pt, image 0.40 -> 0.06 pt,
# 15.6 -> 15.9 ms at 1 thread (float 26.1 ms). The quantile range estimator instead: pixel 0.72, image 3.9 pt.
def _preset():
    import nncf

    return nncf.QuantizationPreset.MIXED


WEIGHT_BITS = (7, 8)  # 7: runs on every x86 CPU (the default); 8: only where the CPU has VNNI or AMX-INT8


def _advanced(weight_bits: int = 7):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # Min/max activation ranges keep the rare large activations that carry defects (the default
    # quantile estimator clips them), and full bias correction keeps the ranking of parts: on
    # the test suite's tiny model, Spearman of INT8 vs torch scores 0.948 (defaults) -> 0.990.
    # 7-bit weights in every layer (overflow_fix ENABLE; NNCF's default fixes the first layer only): CPUs
    # without VNNI (AVX2, which many industrial PCs are) sum u8 x s8 products pairwise in saturating 16-bit
    # registers, and EfficientNet-Lite's INT8 convolutions overflow there. Measured on an AVX2-only EPYC,
    # magnetic_tile's main model, backbone+subnets, 150 good calibration images: image AUROC 0.988 float,
    # 0.854 INT8 with the default, 0.982 with the fix. The IR is calibrated on one CPU and runs on another.
    # The seventh bit costs the map resolution, though: on a Xeon with AMX (2026-12-01), the same model's
    # backbone+subnets split, good-only ranges, lost 0.0125 pixel AUROC with 7-bit weights (0.7990 -> 0.7865; no
    # split stayed within 0.01) and 0.004 with 8-bit ones (0.7947, accepted). weight_bits=8 (no overflow fix)
    # is for edge PCs with VNNI/AMX; edge-inspect refuses such an IR on a CPU without them (edge/model.py).
    if weight_bits not in WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {WEIGHT_BITS}, not {weight_bits!r}")
    return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                                          overflow_fix=OverflowFix.ENABLE if weight_bits == 7 else OverflowFix.DISABLE)


def conv_times_ms(ov_model, frame: np.ndarray, threads: int = 1, runs: int = 30) -> dict[str, float]:
    """Mean time per (Group)Convolution layer in ms, from OpenVINO's per-layer counters at f32 inference
    precision (as the edge runs). A convolution keeps its name through compilation (fused bias and
    activation included), so the same layer can be looked up in a float and an INT8 graph."""
    import openvino as ov

    from edge.model import compile_config

    compiled = ov.Core().compile_model(ov_model, "CPU", {**compile_config(None, threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer({0: frame[None]})
    total: dict[str, float] = {}
    for _ in range(runs):
        request.infer({0: frame[None]})
        for p in request.profiling_info:
            if p.node_type in CONV_TYPES:
                total[p.node_name] = total.get(p.node_name, 0.0) + p.real_time.total_seconds() * 1e3 / runs
    return total


def slower_in_int8(float_times: dict[str, float], int8_times: dict[str, float], names) -> list[str]:
    """The layers among `names` that this CPU runs slower in INT8 than in float.

    Without VNNI (AVX2 only), OpenVINO runs small grouped INT8 convolutions (a coupling subnet's 3x3 over
    5-28 channels per group) with a generic GEMM: measured on magnetic_tile's model, 0.76 ms INT8 against
    0.34 ms float for a 4 x 10-channel 3x3 layer at 32x32. Such a layer gains nothing from INT8 but
    its quantization error, so it stays float. The times are the calibration host's: an edge PC of
    another CPU generation may rank them differently (the report names the host's vector extensions)."""
    return sorted(n for n in names if n in float_times and n in int8_times and int8_times[n] > float_times[n])


def quantize(ov_model, frames: list[np.ndarray], ignored: list[str], weight_bits: int = 7):
    """nncf.quantize with the given ops kept in float, weights in `weight_bits` (7 or 8, see _advanced)."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)
    return nncf.quantize(ov_model, nncf.Dataset(frames, lambda f: f[None]), subset_size=len(frames), preset=_preset(),
                         fast_bias_correction=False, advanced_parameters=_advanced(weight_bits),
                         ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))


def quantize_with_accuracy_control(ov_model, frames: list[np.ndarray], ignored: list[str], val_frames: list[np.ndarray],
                                   metric, max_drop: float, weight_bits: int = 7):
    """nncf.quantize_with_accuracy_control: reverts the quantizers that cost the most of `metric`
    (a function of the compiled model and the validation frames, higher is better) until the
    drop against the float model is at most max_drop."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)
    return nncf.quantize_with_accuracy_control(
        ov_model, nncf.Dataset(frames, lambda f: f[None]), nncf.Dataset(val_frames, lambda f: f[None]),
        validation_fn=metric, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(frames),
        preset=_preset(), fast_bias_correction=False, advanced_quantization_parameters=_advanced(weight_bits),
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
