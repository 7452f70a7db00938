"""What this CPU can do for INT8 and BF16 inference, from /proc/cpuinfo.

The model name alone hides what decides an INT8 IR's accuracy and speed: two cloud "AMD EPYC"s differ in
exactly this. Without a dot-product instruction for 8-bit integers (VNNI or AMX), OpenVINO sums u8 x s8
products pairwise in saturating 16-bit registers, so an IR quantized with full 8-bit weights can overflow
and lose accuracy without any error (edge.model refuses to run one there).
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

# the instruction-set extensions that decide how fast INT8 and BF16 inference can be (in the order printed)
ISA_FLAGS = (("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("avx512_bf16", "AVX512-BF16"), ("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"))
# any of these sums 8-bit products in 32 bits: no 16-bit saturation, 8-bit weights are safe
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _cpuinfo(key: str) -> str | None:
    """The value of the first `key` line of /proc/cpuinfo, or None where there is none."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where it cannot be read, e.g. not Linux)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_isa(flags: set[str] | None = None) -> str:
    """The vector extensions this CPU reports that matter for INT8/BF16 inference, e.g. "AVX2 only" or
    "AVX2, AVX-512, AVX512-VNNI, AVX512-BF16". Without VNNI, INT8 convolutions run on AVX2 multiply-add
    pairs and small grouped ones fall back to a slower GEMM."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "unknown"
    found = [label for flag, label in ISA_FLAGS if flag in flags]
    base = "AVX2" if "avx2" in flags else "no AVX2"
    return ", ".join([base, *found]) if found else f"{base} only"


def has_int8_dot_product(flags: set[str] | None = None) -> bool | None:
    """True where the CPU has VNNI or AMX-INT8, False where it has neither, None where it cannot be told."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return None
    return any(f in flags for f in INT8_DOT_FLAGS)


# OpenVINO's CPU plugin runs its convolutions on oneDNN kernels for the best instruction set the CPU has, capped by
# this variable, which oneDNN reads once per process, at the first model it compiles.
KERNEL_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# edge-calibrate --kernel-isa / ModelInfo.kernel_isa -> oneDNN's name for the cap ("native": no cap)
KERNEL_ISAS = {"native": "", "avx512_core_vnni": "AVX512_CORE_VNNI", "avx512_core": "AVX512_CORE",
               "avx2_vnni": "AVX2_VNNI", "avx2": "AVX2"}


def cap_kernel_isa(isa: str) -> str:
    """Cap the instruction set of OpenVINO's CPU kernels in this process at `isa` (a KERNEL_ISAS key) and return
    the oneDNN cap now in force ("" = none).

    Why: on a CPU with AMX, OpenVINO runs INT8 convolutions on AMX tiles, which pad the reduction to 64 channels:
    for this project's small maps and 5-80-channel flow groups that is slower than AVX-512 VNNI and gains nothing
    from a second thread (magnetic_tile's INT8 IR, 2026-12-02: 11.4 -> 10.1 ms from 1 to 2 threads on AMX, 11.2 ->
    8.2 on VNNI; FP32 22.0 -> 15.4). An edge PC without BF16 has no AMX either, so capping the calibration host at
    its instruction set also makes the host time and score the IR with the kernels the edge runs. Must be called
    before the process compiles its first model (oneDNN ignores later changes); a cap already set in the
    environment (by the user) is kept."""
    if isa not in KERNEL_ISAS:
        raise ValueError(f"unknown kernel instruction set {isa!r}: one of {', '.join(KERNEL_ISAS)}")
    import os

    current = os.environ.get(KERNEL_ISA_ENV, "")
    if KERNEL_ISAS[isa] and not current:
        os.environ[KERNEL_ISA_ENV] = current = KERNEL_ISAS[isa]
    return current


def conv_kernels(compiled) -> list[tuple[str, str, str]]:
    """(layer type, runtime precision, kernel name) of each (Group)Convolution in a compiled OpenVINO model's
    executed graph, in execution order, e.g. ("Convolution", "u8", "brgconv_avx512_amx_I8")."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "primitiveType" in info and info["layerType"].astype(str) in ("Convolution", "GroupConvolution"):
            out.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str),
                        info["primitiveType"].astype(str)))
    return out


def kernels_that_ran(compiled) -> str:
    """Which instruction set a compiled OpenVINO model's INT8 convolutions run on: "AMX", "AVX-512", "AVX2" or
    "none" (no INT8 convolution), from the kernel names of its executed graph."""
    kinds = set()
    for _, _, kernel in conv_kernels(compiled):
        prim = kernel.lower()
        if "i8" in prim:
            kinds.add("AMX" if "amx" in prim else "AVX-512" if "avx512" in prim else "AVX2" if "avx2" in prim else prim)
    for name in ("AMX", "AVX-512", "AVX2"):
        if name in kinds:
            return name
    return ", ".join(sorted(kinds)) or "none"


# how far each kernel family reaches: a cap is in force when no INT8 layer runs on a family above it
_KERNEL_RANK = {"AVX2": 1, "AVX-512": 2, "AMX": 3}
_CAP_RANK = {"avx512_core_vnni": 2, "avx512_core": 2, "avx2_vnni": 1, "avx2": 1}


def cap_in_force(isa: str, kernels: str) -> bool:
    """Whether INT8 layers running on `kernels` (kernels_that_ran) respect the cap `isa` (a KERNEL_ISAS key)."""
    return isa == "native" or _KERNEL_RANK.get(kernels, 0) <= _CAP_RANK[isa]


def probe_int8_kernels() -> str:
    """The kernel family (kernels_that_ran) this process runs INT8 convolutions on, from a one-layer INT8 model
    compiled here (a tenth of a second). Compiling fixes oneDNN's instruction set for the process: call it after
    cap_kernel_isa."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 64, 8, 8], np.float32)
    act = ops.fake_quantize(x, np.float32(0), np.float32(2.55), np.float32(0), np.float32(2.55), 256)
    w = ops.constant(np.random.default_rng(0).uniform(-1, 1, (64, 64, 1, 1)).astype(np.float32))
    wq = ops.fake_quantize(w, np.float32(-1), np.float32(1), np.float32(-1), np.float32(1), 255)
    conv = ops.convolution(act, wq, [1, 1], [0, 0], [0, 0], [1, 1])
    compiled = ov.Core().compile_model(ov.Model([conv], [x]), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return kernels_that_ran(compiled)
