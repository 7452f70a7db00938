"""Helpers shared by tests (importable as `tests.helpers`; the repo root is on pytest's pythonpath)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
TINY_MODEL = {"input_size": [128, 128]}


def run_cli(*args: str, timeout: float = 600, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` as a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env={**os.environ, **(env or {})})


def env_without_kernel_cap(cap: str = "") -> dict:
    """This process's environment for a child process, with oneDNN's instruction-set cap removed (edge.cpu
    KERNEL_ISA_ENV), or set to `cap`: a child then picks its kernels as the test asks, not as the parent was run."""
    from edge.cpu import KERNEL_ISA_ENV

    env = {k: v for k, v in os.environ.items() if k != KERNEL_ISA_ENV}
    return {**env, KERNEL_ISA_ENV: cap} if cap else env


def one_line_error(proc: subprocess.CompletedProcess, prog: str) -> str:
    """Assert a command failed with exactly one error line of its own and no traceback; return it."""
    assert proc.returncode != 0, f"{prog} succeeded: {proc.stdout[-500:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def copy_ir(ir: Path, xml: Path) -> Path:
    """Copy an IR (its .xml and .bin) to `xml` and the .bin beside it, so a test can rewrite it; returns `xml`."""
    shutil.copy(ir, xml)
    shutil.copy(Path(ir).with_suffix(".bin"), Path(xml).with_suffix(".bin"))
    return Path(xml)
