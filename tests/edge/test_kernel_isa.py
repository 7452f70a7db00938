"""The instruction-set cap on OpenVINO's CPU kernels travels in the IR and the edge applies it.

edge-calibrate --kernel-isa caps the kernels it times and scores with at the edge PC's instruction set, records the
cap in the IR, and edge-inspect caps its own kernels the same way. oneDNN reads the cap once per process, at its
first compilation, so everything that sets one runs here in a process of its own: setting it in pytest's process
would change the kernels of every later test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import openvino as ov
import pytest

import edge.cpu
from edge.cpu import KERNEL_ISA_ENV, cap_kernel_isa, cpu_flags
from edge.errors import ModelError
from edge.metadata import read_info, write_info
from edge.model import AnomalyModel
from tests.helpers import REPO, copy_ir, env_without_kernel_cap, run_cli

HAS_AMX = "amx_int8" in cpu_flags()
HAS_VNNI512 = "avx512_vnni" in cpu_flags()

# loads an IR with the edge runtime in a fresh process and prints what ran
LOAD = """
import json, os, sys
from edge.model import AnomalyModel
m = AnomalyModel(sys.argv[1])
print(json.dumps({"cap": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "int8_kernels": m.int8_kernels,
                  "kernel_isa": m.info.kernel_isa}))
"""


def _load_in_fresh_process(xml, env_cap: str | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD, str(xml)], capture_output=True, text=True, cwd=REPO,
                          env=env_without_kernel_cap(env_cap or ""), timeout=300)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def _with_kernel_isa(ir, tmp_path, isa: str):
    xml = copy_ir(ir, tmp_path / "tile.xml")
    proc = run_cli("calibration.cli", "--model", str(xml), "--set", f"kernel_isa={isa}")
    assert proc.returncode == 0, proc.stderr
    return xml


def test_an_unknown_instruction_set_is_refused():
    with pytest.raises(ValueError, match="unknown kernel instruction set 'sse9'.*native, avx512_core_vnni"):
        cap_kernel_isa("sse9")


def test_native_sets_no_cap_and_a_cap_the_user_set_is_kept(monkeypatch):
    monkeypatch.delenv(KERNEL_ISA_ENV, raising=False)
    assert cap_kernel_isa("native") == ""
    assert KERNEL_ISA_ENV not in os.environ
    monkeypatch.setenv(KERNEL_ISA_ENV, "AVX2")
    assert cap_kernel_isa("avx512_core_vnni") == "AVX2"
    assert os.environ[KERNEL_ISA_ENV] == "AVX2"


def test_an_ir_asking_for_an_unknown_kernel_isa_is_refused_before_anything_is_capped(fp32_ir, tmp_path, monkeypatch):
    monkeypatch.delenv(KERNEL_ISA_ENV, raising=False)
    model = ov.Core().read_model(str(fp32_ir))
    info = read_info(model)
    info.kernel_isa = "sse9"
    write_info(model, info)
    xml = tmp_path / "tile.xml"  # not over the IR it was read from: its weights are mapped from that .bin
    ov.save_model(model, str(xml), compress_to_fp16=False)
    with pytest.raises(ModelError, match=r"kernel instruction set 'sse9'.*--set kernel_isa=native"):
        AnomalyModel(xml)
    assert KERNEL_ISA_ENV not in os.environ


@pytest.mark.skipif(not (HAS_AMX and HAS_VNNI512), reason="needs a CPU with AMX-INT8 (to tell the cap from no cap)")
def test_the_edge_runs_int8_layers_on_the_kernels_the_ir_names(int8_ir, tmp_path):
    native = _load_in_fresh_process(int8_ir)
    assert native == {**native, "cap": "", "int8_kernels": "AMX", "kernel_isa": "native"}
    capped = _load_in_fresh_process(_with_kernel_isa(int8_ir, tmp_path, "avx512_core_vnni"))
    assert capped == {**capped, "cap": "AVX512_CORE_VNNI", "int8_kernels": "AVX-512", "kernel_isa": "avx512_core_vnni"}
    assert "warning" not in capped["stderr"]


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8 (to tell the cap from no cap)")
def test_the_edge_warns_when_another_cap_is_in_force(int8_ir, tmp_path):
    # the environment's cap wins (the user's choice), and the edge says that the IR's scores were set with another
    out = _load_in_fresh_process(_with_kernel_isa(int8_ir, tmp_path, "avx512_core_vnni"), env_cap="AVX512_CORE_AMX")
    assert out["int8_kernels"] == "AMX"
    assert "calibrated with kernels capped at avx512_core_vnni, but its INT8 layers run on AMX" in out["stderr"]


def test_kernels_that_ran_names_the_int8_kernels_of_an_int8_ir_and_none_for_float(int8_ir, fp32_ir):
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    assert edge.cpu.kernels_that_ran(core.compile_model(str(fp32_ir), "CPU", config)) == "none"
    assert edge.cpu.kernels_that_ran(core.compile_model(str(int8_ir), "CPU", config)) in ("AMX", "AVX-512", "AVX2")


def test_a_cap_is_in_force_when_no_int8_layer_runs_above_it():
    assert edge.cpu.cap_in_force("native", "AMX")
    assert edge.cpu.cap_in_force("avx512_core_vnni", "AVX-512") and not edge.cpu.cap_in_force("avx512_core_vnni", "AMX")
    assert edge.cpu.cap_in_force("avx2", "AVX2") and not edge.cpu.cap_in_force("avx2_vnni", "AVX-512")
    assert edge.cpu.cap_in_force("avx2", "none")  # a float IR runs no INT8 layer


@pytest.mark.skipif(not (HAS_AMX and HAS_VNNI512), reason="needs a CPU with AMX-INT8 (to tell the cap from no cap)")
def test_the_one_layer_probe_sees_the_cap_of_its_process():
    code = "from edge.cpu import probe_int8_kernels; print(probe_int8_kernels())"
    seen = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                           env=env_without_kernel_cap(cap)).stdout.strip() for cap in ("", "AVX512_CORE_VNNI", "AVX2")]
    assert seen == ["AMX", "AVX-512", "AVX2"]
