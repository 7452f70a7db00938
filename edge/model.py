"""Load an edge-inspect OpenVINO IR and run it on 8-bit BGR frames.

The IR takes one u8 NHWC BGR image at its input size (normalisation is inside the graph) and
returns `anomaly_map_capped` (for OpenVINO model_api, which reads only the first output),
`anomaly_map` (1, 1, H, W), `score` (1,) and `zsq` (1, Σ h_s·w_s): the per-pixel Σ_c z_c² of
every flow scale, flattened and concatenated; the metadata's `latent_shapes` splits it back into
one map per scale for the NFA detector. IRs from before that packing (one `zsq<i>` output per
scale) still load.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cpu import KERNEL_ISA_ENV, KERNEL_ISAS, cap_in_force, cap_kernel_isa, cpu_isa, has_int8_dot_product, kernels_that_ran
from .errors import FrameError, ModelError
from .metadata import ModelInfo, read_info

# edge-calibrate quantizes weights to 7 bits (|w| <= 64, NNCF's overflow fix in every layer); a larger int8
# weight means full 8-bit weights, which overflow on CPUs without VNNI (see edge/cpu.py)
SAFE_INT8_WEIGHT = 64


@dataclass
class Inference:
    score: float
    anomaly_map: np.ndarray | None  # (H, W) float32 at the model input size; None when not asked for
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
    if not _looks_like_ir(path):
        raise ModelError(f"model {path} is corrupt or not an OpenVINO IR (no <net> root): re-export it with edge-calibrate")
    try:
        return ov.Core().read_model(str(path), str(weights))
    except Exception as err:  # OpenVINO raises RuntimeError with multi-line text
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
        reason = lines[-1][:160] if lines else type(err).__name__
        raise ModelError(f"model {path} is corrupt or truncated ({reason}): re-export it with edge-calibrate") from None


def _looks_like_ir(path: Path) -> bool:
    """Check the XML root before OpenVINO tries every frontend on it (they print to stderr)."""
    import xml.etree.ElementTree as ET

    try:
        for _, elem in ET.iterparse(str(path), events=("start",)):
            return elem.tag == "net"
    except ET.ParseError:
        return False
    return False


def _weighted_op(const, depth: int = 8):
    """The convolution or MatMul that a weight constant feeds (through Convert/Subtract/Multiply/Reshape)."""
    frontier = [const]
    for _ in range(depth):
        nxt = []
        for node in frontier:
            for target in node.output(0).get_target_inputs():
                op = target.get_node()
                if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
                    return op
                nxt.append(op)
        frontier = nxt
    return None


def _depthwise(op) -> bool:
    """A GroupConvolution with one input channel per group: OpenVINO accumulates it in 32 bits on every CPU,
    so NNCF leaves its weights at 8 bits and they cannot overflow."""
    if op is None or op.get_type_name() != "GroupConvolution":
        return False
    shape = op.input(1).get_partial_shape()
    return shape.rank.get_length() == 5 and shape[2].is_static and shape[2].get_length() == 1


def int8_weight_max(model) -> int | None:
    """Largest |value| among the IR's int8 weights of convolutions that can overflow (all but depthwise)
    and MatMuls; None in a float IR."""
    import openvino as ov

    top = None
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8:
            data = op.get_data()
            if data.size and not _depthwise(_weighted_op(op)):
                m = int(np.abs(data.astype(np.int16)).max())
                top = m if top is None else max(top, m)
    return top


def check_int8_weights(model, path: Path) -> None:
    """Refuse an IR with full 8-bit weights on a CPU that would overflow them (no VNNI, no AMX).

    Measured on an AVX2-only EPYC, magnetic_tile's main model: image AUROC 0.988 float, 0.854 with 8-bit
    weights, 0.982 with 7-bit ones; nothing in OpenVINO reports the loss. Where the CPU cannot be told
    (no /proc/cpuinfo) the IR runs. The weights are only read on a CPU that lacks VNNI and AMX."""
    if has_int8_dot_product() is not False:
        return
    top = int8_weight_max(model)
    if top is not None and top > SAFE_INT8_WEIGHT:
        raise ModelError(f"model {path} has 8-bit INT8 weights (up to {top}), which overflow on this CPU without VNNI "
                         f"({cpu_isa()}) and cost accuracy silently: re-run edge-calibrate on it without --int8-weights 8 (7-bit weights) "
                         "or ship the FP32 IR")


def compile_config(info: ModelInfo | None, threads: int = 0, precision: str = "f32", hint: str = "LATENCY") -> dict:
    """The OpenVINO compile properties edge-inspect runs an IR with.

    Anyone else who opens the IR (OpenVINO model_api, benchmark_app) and wants the edge's numbers
    bit for bit passes the same: OpenVINO ignores such settings in the IR's rt_info, and a score
    near a threshold can flip between thread counts on some CPUs (why edge-calibrate pins one).
    `info=None` is for a graph that has no metadata yet (edge-calibrate's candidates): `threads`
    alone then decides, 0 meaning OpenVINO's default (all cores).
    """
    config = {"PERFORMANCE_HINT": hint}
    if precision:
        # f32: thresholds and the NFA null scale are calibrated at f32; OpenVINO's default BF16 keeps AUROC but
        # moves scores and latents enough to flip verdicts (docs/edge-runtime.md, benchmarks/precision_accuracy.py)
        config["INFERENCE_PRECISION_HINT"] = precision
    threads = threads or (info.inference_threads if info is not None else 0)  # the IR's pin (edge.metadata) unless told otherwise
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class AnomalyModel:
    """A compiled edge-inspect IR."""

    def __init__(self, path: str | Path, threads: int = 0, precision: str = "f32", device: str = "CPU",
                 hint: str = "LATENCY"):
        import openvino as ov

        self.path = Path(path)
        model = read_ir(self.path)
        self.info: ModelInfo = read_info(model, str(self.path))
        if device.upper().startswith("CPU"):
            check_int8_weights(model, self.path)
            if self.info.kernel_isa not in KERNEL_ISAS:
                raise ModelError(f"model {self.path} asks for kernel instruction set {self.info.kernel_isa!r}, which this "
                                 f"edge-inspect does not know ({', '.join(KERNEL_ISAS)}): fix it with edge-calibrate --set "
                                 "kernel_isa=native")
            cap_kernel_isa(self.info.kernel_isa)  # before the compile below: oneDNN reads the cap once per process
        self.model_hash = file_sha256(self.path.with_suffix(".bin"))
        config = compile_config(self.info, threads, precision, hint)
        try:
            self.compiled = ov.Core().compile_model(model, device, config)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"model {self.path} cannot be compiled for {device} ({first[:160]})") from None
        self.request = self.compiled.create_infer_request()
        names = [o.get_any_name() for o in self.compiled.outputs]
        if "score" not in names or "anomaly_map" not in names:
            raise ModelError(f"model {self.path} lacks the score/anomaly_map outputs: export it with edge-calibrate")
        self._zsq_shapes = self.info.latent_hw
        if "zsq" in names:
            if not self._zsq_shapes:
                raise ModelError(f"model {self.path} has a packed zsq output but no latent_shapes metadata: "
                                 "re-export it with edge-calibrate")
            n_zsq = int(np.prod(self.compiled.output("zsq").get_partial_shape().to_shape()))
            if n_zsq != sum(h * w for h, w in self._zsq_shapes):
                raise ModelError(f"model {self.path}: zsq has {n_zsq} values but latent_shapes {self.info.latent_shapes} "
                                 "describe another size: re-export it with edge-calibrate")
            self._zsq_names = [f"zsq[{i}]" for i in range(len(self._zsq_shapes))]  # one label per scale
        else:  # older IRs: one output per scale
            self._zsq_names = sorted((n for n in names if n.startswith("zsq")), key=lambda n: int(n[3:]))
            self._zsq_shapes = []
        shape = list(self.compiled.input(0).get_partial_shape().to_shape())
        self.input_shape = tuple(shape)  # (1, H, W, 3)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.int8_kernels = kernels_that_ran(self.compiled) if device.upper().startswith("CPU") else ""
        if self.int8_kernels and not cap_in_force(self.info.kernel_isa, self.int8_kernels):
            # the cap came after this process compiled another model, or the environment set another one
            print(f"edge-inspect: warning: {self.path} was calibrated with kernels capped at {self.info.kernel_isa}, but its "
                  f"INT8 layers run on {self.int8_kernels} here ({os.environ.get(KERNEL_ISA_ENV) or 'no cap set'}): scores may differ "
                  "slightly from calibration; run edge-inspect in a process of its own", file=sys.stderr)

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

    def optimal_requests(self) -> int:
        """OpenVINO's optimal number of parallel infer requests for this compiled model."""
        try:
            return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:
            return max(1, default_threads())

    def async_queue(self, jobs: int, callback, keep_map: bool = True) -> "RequestQueue":
        """`jobs` infer requests run in turn; `callback(inference_or_exception, userdata)` runs on
        one collector thread with the outputs already copied out of the request (see RequestQueue).

        keep_map=False leaves the anomaly map in the request (`Inference.anomaly_map` is None): only
        an evidence archive needs it, and copying 256 KB per part is CPU taken from inference."""
        return RequestQueue(self, jobs, callback, keep_map)

    def reload_info(self) -> ModelInfo:
        """Re-read the IR's metadata from disk (thresholds changed on site); the weights stay."""
        self.info = read_info(read_ir(self.path), str(self.path))
        return self.info

    def _collect(self, request, keep_map: bool = True) -> Inference:
        get = request.get_tensor
        score = float(get("score").data.reshape(-1)[0])
        amap = np.array(get("anomaly_map").data[0, 0], dtype=np.float32) if keep_map else None
        if self._zsq_shapes:
            # one copy out of the request; the maps are views of it
            zsq = split_zsq(np.array(get("zsq").data, dtype=np.float32), self._zsq_shapes)
        else:
            zsq = [np.array(get(n).data[0, 0], dtype=np.float32) for n in self._zsq_names]
        return Inference(score=score, anomaly_map=amap, zsq=zsq)


def split_zsq(flat, shapes) -> list:
    """The flat `zsq` output -> one (h, w) map per scale (views, no copy)."""
    flat = np.asarray(flat).reshape(-1)
    sizes = [h * w for h, w in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"zsq has {flat.size} values, latent_shapes {list(shapes)} need {sum(sizes)}")
    ends = np.cumsum(sizes)
    return [flat[e - n:e].reshape(h, w) for e, n, (h, w) in zip(ends, sizes, shapes)]


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class RequestQueue:
    """A pool of infer requests that never runs Python on OpenVINO's threads.

    OpenVINO's `AsyncInferQueue` calls its Python callback on the inference stream's own thread,
    which must first take the GIL: while the pipeline's capture or NFA thread holds it (up to the
    interpreter's 5 ms switch interval), the stream sits idle. Here requests are started without a
    callback and a collector thread waits for them in start order (`wait()` releases the GIL),
    copies the outputs, hands the request back, then calls `callback`. The streams run
    back-to-back like `benchmark_app`'s (measured: edge pipeline ~+3 % FPS on 2 cores).

    `start_async` blocks while every request is busy (back-pressure); `wait_all` lets the requests
    in flight finish, delivers their results and stops the collector.
    """

    def __init__(self, model: AnomalyModel, jobs: int, callback, keep_map: bool = True):
        import queue
        import threading

        self._model, self._callback, self._keep_map = model, callback, keep_map
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(max(1, int(jobs))):
            request = model.compiled.create_infer_request()
            # the request's own input tensor as a numpy view: frames are copied straight into it
            self._free.put((request, request.get_input_tensor(0).data))
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._collect_loop, name="collect", daemon=True)
        self._thread.start()

    def start_async(self, batch: np.ndarray, userdata=None) -> None:
        """Start one inference on `batch`, the (1, H, W, 3) uint8 input: copied into a free
        request's input tensor (one memcpy, none of OpenVINO's per-call input dispatch)."""
        request, buf = self._free.get()
        try:
            self._model.check_frame(batch[0])  # a batch of another size fails in copyto
            np.copyto(buf, batch)
            request.start_async()
        except Exception:
            self._free.put((request, buf))
            raise
        self._pending.put((request, buf, userdata))

    def _collect_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            request, buf, userdata = item
            try:
                request.wait()
                result = self._model._collect(request, self._keep_map)
            except Exception as err:  # a failed request: the part is rejected fail-safe
                result = err
            self._free.put((request, buf))
            try:
                self._callback(result, userdata)
            except Exception:  # pragma: no cover - the pipeline's deadline rejects an unreported part
                pass

    def wait_all(self) -> None:
        self._pending.put(None)
        self._thread.join()
