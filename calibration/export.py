"""Export a trained model whole (u8 BGR image in; map, score and per-scale Σ z² out) to OpenVINO.

Pre-processing (u8 -> f32, BGR -> RGB, mean/scale, NHWC -> NCHW) is embedded with OpenVINO's
PrePostProcessor, so the edge feeds camera frames resized to the input size and nothing else.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

INPUT_NAME = "image"


class ExportGraph(nn.Module):
    """BGR normalised NCHW in (the PrePostProcessor feeds it), the model's outputs out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.anomaly_outputs(x)


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


def output_names(n_scales: int) -> list[str]:
    return ["anomaly_map", "score"] + [f"zsq{i}" for i in range(n_scales)]


def to_openvino(model: nn.Module):
    """torch model -> ov.Model with embedded pre-processing and named outputs."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    h, w = model.config.input_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(ExportGraph(bgr_input_copy(model).eval()), example_input=torch.zeros(1, 3, h, w),
                                    input=[(1, 3, h, w)])
    for out, name in zip(ov_model.outputs, output_names(len(model.channels))):
        out.get_tensor().set_names({name})
    ppp = PrePostProcessor(ov_model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    # mean/scale in the tensor's BGR order; ExportGraph swaps to RGB
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(
        [255.0 * m for m in reversed(model.mean)]).scale([255.0 * s for s in reversed(model.std)])
    ov_model = ppp.build()
    ov_model.input(0).get_tensor().set_names({INPUT_NAME})
    return ov_model


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
