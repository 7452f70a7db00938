"""The edge install has no torch: nothing under edge/ or firmware_bridge/ may import it."""

import json
import pkgutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

HOST_ONLY = ("torch", "timm", "FrEIA", "nncf", "sklearn", "training", "calibration")


def _modules(package: str) -> list[str]:
    return [package] + [f"{package}.{m.name}" for m in pkgutil.walk_packages([str(REPO / package)])]


@pytest.mark.parametrize("package", ["edge", "firmware_bridge"])
def test_importing_every_edge_module_loads_no_host_only_package(package):
    modules = _modules(package)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {HOST_ONLY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert len(modules) > 3
