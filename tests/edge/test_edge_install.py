"""The `edge` extra installs into a fresh venv without torch and runs edge-inspect on a real IR."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_edge_extra_installs_without_torch_and_inspects(tmp_path, int8_ir, synthetic_data):
    venv = tmp_path / "edge-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install = subprocess.run(pip + [f"{REPO}[edge]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "torch" not in names and "openvino" in names
    run = subprocess.run([str(venv / "bin" / "edge-inspect"), "--model", str(int8_ir), "--images", str(synthetic_data / "test" / "crack")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    decisions = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(decisions) == len(list((synthetic_data / "test" / "crack").iterdir()))
    assert all(d["verdict"] in ("reject", "pass") and d["score"] is not None for d in decisions)
