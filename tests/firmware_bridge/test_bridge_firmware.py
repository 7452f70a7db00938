"""The ATmega328P firmware builds and fits."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from firmware_bridge.ccore import FIRMWARE_DIR


@pytest.mark.skipif(shutil.which("avr-gcc") is None,
                    reason="avr-gcc not installed (apt-get install gcc-avr avr-libc binutils-avr)")
def test_avr_firmware_compiles_warning_free_and_fits_the_atmega328p(tmp_path):
    elf = tmp_path / "bridge.elf"
    subprocess.run(["avr-gcc", "-std=c99", "-Os", "-Wall", "-Wextra", "-Werror", "-mmcu=atmega328p",
                    "-DF_CPU=16000000UL", "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections",
                    "-o", str(elf), str(FIRMWARE_DIR / "main.c"), str(FIRMWARE_DIR / "bridge_core.c")],
                   check=True, capture_output=True, text=True)
    out = subprocess.run(["avr-size", str(elf)], check=True, capture_output=True, text=True).stdout
    text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
    assert text + data <= 32 * 1024 - 512   # flash minus the Optiboot bootloader
    assert data + bss <= 1024               # leave half the 2 KiB RAM for the stack


def test_core_compiles_with_strict_host_warnings(c_lib_path):
    """ccore.build uses -Wall -Wextra -Wpedantic -Wconversion -Werror; the library loads."""
    assert c_lib_path.exists() and c_lib_path.stat().st_size > 0
