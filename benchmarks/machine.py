"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo(key: str) -> str | None:
    """The value of the first `key` line of /proc/cpuinfo, or None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


# the instruction-set extensions that decide how fast INT8 and BF16 inference can be (in the order printed)
ISA_FLAGS = (("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
             ("avx512_bf16", "AVX512-BF16"), ("amx_int8", "AMX-INT8"), ("amx_bf16", "AMX-BF16"))


def cpu_isa() -> str:
    """The vector extensions this CPU reports that matter for INT8/BF16 inference, e.g. "AVX2 only" or
    "AVX2, AVX-512, AVX512-VNNI, AVX512-BF16". Two machines with the same model name (a cloud "AMD EPYC")
    can differ here, and an INT8 IR's speed-up over FP32 with them: without VNNI, INT8 convolutions run on
    AVX2 multiply-add pairs and small grouped ones fall back to a slower GEMM."""
    flags = set((_cpuinfo("flags") or "").split())
    if not flags:
        return "unknown"
    found = [label for flag, label in ISA_FLAGS if flag in flags]
    base = "AVX2" if "avx2" in flags else "no AVX2"
    return ", ".join([base, *found]) if found else f"{base} only"
