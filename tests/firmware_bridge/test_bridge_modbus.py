"""ModbusLink against pymodbus's own RTU server (a socat pty pair), with faults and unplugs."""

from __future__ import annotations

import collections
import json
import os
import select
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from firmware_bridge.links import LinkError, open_link

PLC = Path(__file__).with_name("modbus_plc.py")


class Wire:
    """PLC-side pty (held by the test, so it never vanishes) bridged by socat to an edge-side pty.

    stop() + start() pulls and replugs the edge-side cable: the edge port disappears,
    bytes in flight are lost, the PLC keeps running with its registers.
    """

    def __init__(self, socat: str, tmp: Path) -> None:
        self.socat, self.b = socat, str(tmp / "edge-side")
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.a = os.ttyname(self.slave)
        self.proc = None
        self.start()

    def start(self) -> None:
        while select.select([self.master], [], [], 0)[0]:  # what was on the cut cable is gone
            os.read(self.master, 4096)
        self.proc = subprocess.Popen([self.socat, f"pty,raw,echo=0,link={self.b}", f"fd:{self.master}"],
                                     pass_fds=(self.master,), stderr=subprocess.DEVNULL)
        end = time.monotonic() + 5
        while not os.path.exists(self.b):
            assert time.monotonic() < end, "socat did not create its pty"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        end = time.monotonic() + 5
        while os.path.exists(self.b):
            assert time.monotonic() < end
            time.sleep(0.01)

    def close(self) -> None:
        self.stop()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def plc(socat, tmp_path):
    wire = Wire(socat, tmp_path)
    procs = []

    def start(faults=(0, 0, 0)):
        log = tmp_path / "plc.jsonl"
        p = subprocess.Popen([sys.executable, str(PLC), wire.a, str(log), *map(str, faults)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return wire, log

    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
        wire.close()


def events(log: Path, name: str) -> list[dict]:
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == name]


@pytest.mark.parametrize("mode", ["reg=100", "coil=10"])
def test_modbus_rejects_actuate_exactly_once_under_faults_and_unplugs(plc, mode):
    faults = (0.01, 0.005, 0.005)
    wire, log = plc(faults)
    n_rejects = 300 if mode.startswith("coil") else 1000
    link = open_link(f"modbus-rtu:{wire.b}?unit=1&{mode}&baud=19200&timeout_ms=50&deadline_ms=10000"
                     "&pulse_ms=5")
    rejects = []
    try:
        t0 = time.monotonic()
        for i in range(n_rejects * 20):
            reject = i % 20 == 0
            link.send(i, reject)
            if reject:
                rejects.append(i)
                while link.stats()["queued"] > 8:
                    time.sleep(0.001)
            if i in (n_rejects * 5, n_rejects * 10, n_rejects * 15):
                wire.stop()
                time.sleep(0.3)
                wire.start()  # the same server reopens its port (reconnect_delay), registers kept
        assert link.flush(60), link.stats()
        stats = link.stats()
        elapsed = time.monotonic() - t0
    finally:
        link.close()
    acts = events(log, "actuate")
    injected = collections.Counter(e["kind"] for e in events(log, "inject"))
    print(f"\nmodbus {mode}: {len(rejects)} rejects in {elapsed:.1f} s; link {stats}; injected {dict(injected)}")
    if mode.startswith("coil"):
        assert len(acts) == len(rejects), "coil mode: one rising edge per reject"
    else:
        got = collections.Counter(e["part_id"] for e in acts)
        assert set(got) == set(rejects) and max(got.values()) == 1
    assert link.alarms == []
    assert stats["disconnects"] >= 3 and stats["reconnects"] >= 3
    assert injected["corrupt"] > 0 and injected["drop"] > 0
    assert stats["retries"] > 0


def test_modbus_watchdog_register_counts_up_while_idle(plc):
    wire, log = plc()
    link = open_link(f"modbus-rtu:{wire.b}?unit=1&reg=100&heartbeat_ms=50&failsafe_ms=500")
    try:
        time.sleep(0.5)
        assert link.healthy
    finally:
        link.close()
    values = [e["value"] for e in events(log, "watchdog")]
    assert len(values) >= 5 and values == sorted(values)


def test_modbus_reject_is_alarmed_when_the_plc_never_answers(plc):
    wire, log = plc()
    alarms = []
    link = open_link(f"modbus-rtu:{wire.b}?unit=1&reg=100&timeout_ms=30&deadline_ms=200",
                     on_alarm=alarms.append)
    try:
        wire.stop()
        link.send(5, True)
        assert link.flush(3)
        assert not link.healthy
    finally:
        link.close()
    assert [(a.kind, a.part_id) for a in alarms] == [("deadline", 5)]


def test_modbus_missing_port_is_a_one_line_link_error(tmp_path):
    with pytest.raises(LinkError, match=r"serial port .*ttyNOPE not found: check the cable or pass --plc none"):
        open_link(f"modbus-rtu:{tmp_path}/ttyNOPE?unit=1&coil=0")
