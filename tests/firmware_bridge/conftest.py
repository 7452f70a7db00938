"""Shared fixtures for the firmware_bridge tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from firmware_bridge import ccore


@pytest.fixture(scope="session")
def c_lib_path(tmp_path_factory):
    """The C core compiled with the host gcc (fails loudly if gcc is missing)."""
    return ccore.build(out=tmp_path_factory.mktemp("ccore") / "bridge_core.so")


@pytest.fixture(scope="session")
def c_lib(c_lib_path):
    return ccore.load(c_lib_path)


@pytest.fixture(scope="session")
def socat():
    """Path of socat; installed with apt-get when missing (CI installs it via deploy.sh)."""
    path = shutil.which("socat")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq socat", shell=True,
                       capture_output=True, timeout=300)
        path = shutil.which("socat")
    if path is None:
        pytest.skip("socat not installed and apt-get unavailable: install socat to run pty-pair tests")
    return path

