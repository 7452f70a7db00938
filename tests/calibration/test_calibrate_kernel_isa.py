"""edge-calibrate --kernel-isa: the calibration host times and scores with the edge PC's kernels and says so.

oneDNN reads its instruction-set cap once per process, at its first compilation: every calibration under a cap runs
here in a process of its own (in pytest's process it would change the kernels of every later test).
"""

from __future__ import annotations

import json
import subprocess
import sys

import openvino as ov
import pytest

from edge.cpu import KERNEL_ISA_ENV, cpu_flags
from edge.metadata import read_info
from tests.helpers import REPO, copy_ir, env_without_kernel_cap, one_line_error, run_cli

HAS_AMX = "amx_int8" in cpu_flags()
HAS_VNNI512 = "avx512_vnni" in cpu_flags()


def test_edge_calibrate_refuses_an_unknown_kernel_isa_in_one_line(fp32_ir, tmp_path):
    xml = copy_ir(fp32_ir, tmp_path / "tile.xml")
    proc = run_cli("calibration.cli", "--model", str(xml), "--set", "kernel_isa=sse9")
    assert "kernel_isa must be one of native" in one_line_error(proc, "edge-calibrate")


@pytest.mark.skipif(not (HAS_AMX and HAS_VNNI512), reason="needs a CPU with AMX-INT8 (to tell the cap from no cap)")
def test_edge_calibrate_times_and_scores_under_the_cap_it_records(trained_run, synthetic_data, tmp_path):
    out = tmp_path / "tile.xml"
    proc = run_cli("calibration.cli", "--checkpoint", str(trained_run), "--data", str(synthetic_data), "--out", str(out),
                   "--precision", "int8", "--kernel-isa", "avx512_core_vnni", "--no-progress",
                   env={KERNEL_ISA_ENV: ""})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["host"]["kernel_isa"] == "avx512_core_vnni" and report["host"]["int8_kernels"] == "AVX-512"
    assert read_info(ov.Core().read_model(str(out))).kernel_isa == "avx512_core_vnni"


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8 (where a late cap shows)")
def test_a_cap_set_after_the_process_compiled_a_model_is_an_error_not_a_silent_mismatch(int8_ir, trained_run,
                                                                                          synthetic_data, tmp_path):
    script = f"""
import sys, openvino as ov
from edge.errors import EdgeError
from calibration.calibrate import CalibrationConfig, calibrate
ov.Core().compile_model({str(int8_ir)!r}, "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})  # kernels chosen: no cap
try:
    calibrate(CalibrationConfig({str(trained_run)!r}, {str(synthetic_data)!r}, {str(tmp_path / 'tile.xml')!r},
                                kernel_isa="avx512_core_vnni", progress=False))
except EdgeError as err:
    print("ERROR", err)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env=env_without_kernel_cap(), timeout=600)
    assert "ERROR INT8 layers run on AMX here although the kernels were to be capped at avx512_core_vnni" in done.stdout, done.stderr
    assert not (tmp_path / "tile.xml").exists()
