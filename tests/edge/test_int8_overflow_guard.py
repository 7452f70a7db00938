"""An INT8 IR with full 8-bit weights is refused on a CPU without VNNI, where its products overflow.

The CPU is the one thing a test machine cannot swap, so these tests point edge.cpu at a cpuinfo file
written here; the IRs and the loading path are the real ones.
"""

import numpy as np
import openvino as ov
import pytest

import edge.cpu
from edge.errors import ModelError
from edge.metadata import read_info, write_info
from edge.model import SAFE_INT8_WEIGHT, AnomalyModel, int8_weight_max

AVX2_ONLY = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma"
WITH_VNNI = AVX2_ONLY + " avx512f avx512bw avx512_vnni"


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Make edge.cpu read a cpuinfo with the given flags."""
    def use(flags: str) -> None:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
        monkeypatch.setattr(edge.cpu, "CPUINFO", info)
    return use


@pytest.fixture(scope="module")
def eight_bit_ir(tmp_path_factory, trained_run, fp32_ir):
    """The test model quantized as edge-calibrate --int8-weights 8 does (no overflow fix: 8-bit weights),
    for edge PCs with VNNI or AMX."""
    from calibration import quantize as q
    from calibration.export import to_openvino
    from training.checkpoint import load_model

    model, _ = load_model(str(trained_run))
    source = to_openvino(model)
    h, w = model.config.input_size
    frames = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) for i in range(8)]
    ignored, _ = q.ignored_names(source, model.float_scopes, "backbone+subnets")
    quantized = q.quantize(source, frames, ignored, weight_bits=8)
    write_info(quantized, read_info(ov.Core().read_model(str(fp32_ir))))
    out = tmp_path_factory.mktemp("ir8bit") / "tile.xml"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def test_edge_calibrate_writes_7_bit_weights(int8_ir):
    top = int8_weight_max(ov.Core().read_model(str(int8_ir)))
    assert top is not None and top <= SAFE_INT8_WEIGHT


def test_a_float_ir_has_no_int8_weights(fp32_ir):
    assert int8_weight_max(ov.Core().read_model(str(fp32_ir))) is None


def test_8_bit_weights_are_refused_without_vnni(eight_bit_ir, cpu):
    assert int8_weight_max(ov.Core().read_model(str(eight_bit_ir))) > SAFE_INT8_WEIGHT
    cpu(AVX2_ONLY)
    with pytest.raises(ModelError, match=r"8-bit INT8 weights .* without VNNI \(AVX2 only\).*re-run edge-calibrate"):
        AnomalyModel(eight_bit_ir)


def test_8_bit_weights_run_where_the_cpu_has_vnni(eight_bit_ir, cpu):
    cpu(WITH_VNNI)
    model = AnomalyModel(eight_bit_ir)
    out = model.infer(np.zeros(model.input_shape[1:], np.uint8))
    assert np.isfinite(out.score)


def test_7_bit_weights_run_without_vnni(int8_ir, cpu):
    cpu(AVX2_ONLY)
    model = AnomalyModel(int8_ir)
    assert np.isfinite(model.infer(np.zeros(model.input_shape[1:], np.uint8)).score)


def test_an_unknown_cpu_does_not_block_the_line(eight_bit_ir, tmp_path, monkeypatch):
    monkeypatch.setattr(edge.cpu, "CPUINFO", tmp_path / "absent")
    assert edge.cpu.has_int8_dot_product() is None
    AnomalyModel(eight_bit_ir)


def test_cpu_isa_names_the_extensions_that_matter():
    assert edge.cpu.cpu_isa(set(AVX2_ONLY.split())) == "AVX2 only"
    assert edge.cpu.cpu_isa(set(WITH_VNNI.split())) == "AVX2, AVX-512, AVX512-VNNI"
    assert edge.cpu.has_int8_dot_product({"avx2", "amx_int8"}) is True
    assert edge.cpu.has_int8_dot_product(set(AVX2_ONLY.split())) is False
