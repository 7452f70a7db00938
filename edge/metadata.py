"""The model's metadata, carried inside the IR's `rt_info["model_info"]`.

Keys follow OpenVINO model_api's anomaly conventions (model_type, task, labels, image_threshold,
pixel_threshold, normalization_scale) plus edge-inspect's own under the same key. The edge reads
everything it needs from the IR; no sidecar file exists.

model_api's `AnomalyDetection` reads these keys by name: `image_threshold` is compared with the
maximum of the IR's first output (`anomaly_map_capped`, whose maximum is our image score, so the
units agree), `pixel_threshold` with that map's pixels, and `normalization_scale` sets its
normalised score: clip((x - threshold) / normalization_scale + 0.5, 0, 1), reported as 1 minus
that for parts it calls normal. `embedded_processing=True` with `orig_height`/`orig_width` tells
it that pre-processing is inside the graph, so it feeds the u8 BGR frame as it is (it must already
be at the input size) and does not apply `mean_values`/`scale_values` a second time; those two
keys only document what the graph does. This module is the one place that
defines the schema: the host writes with `write_info`, the edge reads with `read_info`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import ModelError

SECTION = "model_info"


@dataclass
class ModelInfo:
    # model_api's anomaly keys
    model_type: str = "AnomalyDetection"
    task: str = "segmentation"
    labels: str = "Normal Anomaly"
    image_threshold: float = 0.0
    pixel_threshold: float = 0.0
    normalization_scale: float = 1.0
    embedded_processing: bool = True  # model_api: pre-processing is in the graph; feed the frame as it is
    orig_height: int = 0  # model_api: the input size it expects frames at (= input_height/width)
    orig_width: int = 0
    # edge-inspect's own
    edge_inspect_version: str = ""
    model_kind: str = ""
    backbone: str = ""
    input_height: int = 0
    input_width: int = 0
    input_layout: str = "NHWC"
    input_color: str = "BGR"
    input_dtype: str = "u8"
    mean_values: str = "127.5 127.5 127.5"
    scale_values: str = "127.5 127.5 127.5"
    score_kind: str = ""
    latent_channels: list[int] = field(default_factory=list)
    # (h, w) of each scale's Σ z² map inside the flat `zsq` output: "h0 w0 h1 w1 ..."
    latent_shapes: list[int] = field(default_factory=list)
    # per-scale variance of the latent on held-out good images (H0: z ~ N(0, s·I)); empty = all 1
    latent_null_scale: list[float] = field(default_factory=list)
    nfa_epsilon: float = 0.0
    decision_rule: str = "both"  # what edge-calibrate found to hold on held-out good parts: both | score | nfa
    precision: str = ""
    quantized_scope: str = ""
    target_frr: float = 0.0
    frr_upper_bound: float = 0.0
    n_calibration_good: int = 0
    training_fingerprint: str = ""
    calibrated_at: str = ""
    # the calibration host's CPU and its INT8/BF16 extensions (edge.cpu.cpu_isa): the INT8 split and the
    # subnet convolutions kept in float for speed were timed there
    calibrated_on: str = ""
    # 1 where edge-calibrate found this IR's scores depend on the thread count on its host (INT8 on an AMX Xeon:
    # up to 56 % apart at 1 and 2 threads, the 1-thread side tracking torch): edge-inspect then runs it on 1 thread
    # unless told otherwise; 0 = any thread count
    inference_threads: int = 0
    # the instruction set edge-calibrate capped OpenVINO's CPU kernels at while it timed and scored this IR
    # (edge.cpu.KERNEL_ISAS; "native" = none): edge-inspect applies the same cap so that it runs the kernels the
    # thresholds were set with (a cap above the edge CPU's own instruction set changes nothing)
    kernel_isa: str = "native"

    def __post_init__(self):
        self.orig_height = self.orig_height or self.input_height
        self.orig_width = self.orig_width or self.input_width

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    @property
    def latent_hw(self) -> list[tuple[int, int]]:
        s = self.latent_shapes
        return [(int(s[i]), int(s[i + 1])) for i in range(0, len(s) - 1, 2)]


_FIELDS = {f.name: f for f in dataclasses.fields(ModelInfo)}
REQUIRED = ("edge_inspect_version", "input_height", "input_width", "image_threshold")


def _encode(value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _decode(name: str, text: str):
    kind = _FIELDS[name].type
    if kind in ("bool", bool):
        if text not in ("True", "False", "YES", "NO"):
            raise ValueError("expected True or False")
        return text in ("True", "YES")
    if kind in ("float", float):
        return float(text)
    if kind in ("int", int):
        return int(float(text))
    if kind.startswith("list[int"):
        return [int(v) for v in text.split()]
    if kind.startswith("list[float"):
        return [float(v) for v in text.split()]
    return text


def write_info(model, info: ModelInfo) -> None:
    """Store `info` in an `openvino.Model`'s rt_info (saved with the IR)."""
    for name, value in dataclasses.asdict(info).items():
        model.set_rt_info(_encode(value), [SECTION, name])


def read_info(model, source: str = "model") -> ModelInfo:
    """Read ModelInfo from an `openvino.Model`; a model without our metadata is a ModelError."""
    missing = [k for k in REQUIRED if not model.has_rt_info([SECTION, k])]
    if missing:
        raise ModelError(
            f"{source} has no edge-inspect metadata ({', '.join(missing)} missing from rt_info): "
            "export it with edge-calibrate"
        )
    values = {}
    for name in _FIELDS:
        if model.has_rt_info([SECTION, name]):
            text = model.get_rt_info([SECTION, name]).astype(str)
            try:
                values[name] = _decode(name, text)
            except ValueError as err:
                raise ModelError(f"{source}: metadata {name}={text!r} is not valid ({err})") from None
    return ModelInfo(**values)


def update_info(model, **changes) -> ModelInfo:
    """Rewrite selected metadata keys in place (thresholds on site, without re-export)."""
    info = read_info(model)
    for name, value in changes.items():
        if name not in _FIELDS:
            raise ModelError(f"unknown metadata key {name!r}; known: {', '.join(sorted(_FIELDS))}")
        setattr(info, name, _decode(name, _encode(value)))
    write_info(model, info)
    return info
