"""Start and talk to an ``edge-bridge-sim`` subprocess in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


class SimProcess:
    def __init__(self, tmp: Path, core: str = "python", lib: str | None = None, faults: str = "",
                 failsafe_ms: int = 1000, seed: int = 1) -> None:
        self.log = tmp / f"sim-{core}-{time.monotonic_ns()}.jsonl"
        cmd = [sys.executable, "-m", "firmware_bridge.simulator", "--log", str(self.log), "--core", core,
               "--failsafe-ms", str(failsafe_ms), "--seed", str(seed), "--faults", faults,
               "--link", str(tmp / f"tty-{core}-{os.getpid()}-{time.monotonic_ns()}")]
        if lib:
            cmd += ["--lib", str(lib)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator did not start (rc={self.proc.wait(5)})")
        self.port = json.loads(line)["port"]

    def command(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert "error" not in reply, reply
        return reply

    def events(self, name: str | None = None) -> list[dict]:
        with open(self.log) as f:
            evs = [json.loads(line) for line in f if line.endswith("\n")]
        return [e for e in evs if name is None or e["event"] == name]

    def actuations(self) -> list[int]:
        return [e["part_id"] for e in self.events("actuate")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait(5)


def soak_n(default: int) -> int:
    """Decision count for soak tests; BRIDGE_SOAK_N overrides."""
    return int(os.environ.get("BRIDGE_SOAK_N", default))
