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
