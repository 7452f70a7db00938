"""Load an edge-inspect OpenVINO IR and run it on 8-bit BGR frames.

The IR takes one u8 NHWC BGR image at its input size (normalisation is inside the graph) and
returns `anomaly_map` (1, 1, H, W), `score` (1,) and `zsq<i>` (1, 1, h_i, w_i): the per-pixel
Σ_c z_c² of each flow scale, which the NFA detector reads.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FrameError, ModelError
from .metadata import ModelInfo, read_info


@dataclass
class Inference:
    score: float
    anomaly_map: np.ndarray  # (H, W) float32 at the model input size
    zsq: list[np.ndarray]  # per scale (h_i, w_i) float32, Σ_c z_c²


def file_sha256(path: Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def read_ir(path: str | Path):
    """Read an IR with clear errors for a missing, truncated or foreign file."""
    import openvino as ov

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found: pass the .xml written by edge-calibrate")
    if path.suffix.lower() != ".xml":
        raise ModelError(f"model file {path} is not an OpenVINO .xml IR")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise ModelError(f"model weights {weights} not found: copy the .bin next to the .xml")
    try:
        return ov.Core().read_model(str(path))
    except Exception as err:  # OpenVINO raises RuntimeError with multi-line text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"model {path} is corrupt or not an IR ({first[:160]}): re-export it with edge-calibrate") from None


class AnomalyModel:
    """A compiled edge-inspect IR."""

    def __init__(self, path: str | Path, threads: int = 0, precision: str = "f32", device: str = "CPU"):
        import openvino as ov

        self.path = Path(path)
        model = read_ir(self.path)
        self.info: ModelInfo = read_info(model, str(self.path))
        self.model_hash = file_sha256(self.path.with_suffix(".bin"))
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision:
            # Flow outputs need f32: OpenVINO's default BF16 on these CPUs distorts the map.
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(model, device, config)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"model {self.path} cannot be compiled for {device} ({first[:160]})") from None
        self.request = self.compiled.create_infer_request()
        names = [o.get_any_name() for o in self.compiled.outputs]
        if "score" not in names or "anomaly_map" not in names:
            raise ModelError(f"model {self.path} lacks the score/anomaly_map outputs: export it with edge-calibrate")
        self._zsq_names = sorted((n for n in names if n.startswith("zsq")), key=lambda n: int(n[3:]))
        shape = list(self.compiled.input(0).get_partial_shape().to_shape())
        self.input_shape = tuple(shape)  # (1, H, W, 3)
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.input_shape[1]), int(self.input_shape[2])

    def check_frame(self, frame: np.ndarray) -> None:
        if frame.dtype != np.uint8 or frame.shape != tuple(self.input_shape[1:]):
            raise FrameError(
                f"frame shape {frame.shape} {frame.dtype} does not match the model input "
                f"{tuple(self.input_shape[1:])} uint8"
            )

    def infer(self, frame: np.ndarray) -> Inference:
        """Run one prepared frame (uint8 BGR at the input size, see edge.preprocess.prepare)."""
        self.check_frame(frame)
        self.request.infer({0: frame[None]})
        return self._collect(self.request)

    def _collect(self, request) -> Inference:
        get = request.get_tensor
        score = float(get("score").data.reshape(-1)[0])
        amap = np.array(get("anomaly_map").data[0, 0], dtype=np.float32)
        zsq = [np.array(get(n).data[0, 0], dtype=np.float32) for n in self._zsq_names]
        return Inference(score=score, anomaly_map=amap, zsq=zsq)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))
