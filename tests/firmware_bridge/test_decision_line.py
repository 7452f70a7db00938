"""The walking skeleton's checksummed decision line, over loop:// and a real pty."""

import json
import signal
import subprocess
import sys
import time

import pytest

from firmware_bridge.line import LineLink, LineMessage, LinkError, decode, encode
from tests.helpers import REPO


def test_line_round_trips_and_checksum_catches_a_flipped_byte():
    msg = LineMessage(1234, True, 12.5)
    raw = encode(msg)
    assert raw.startswith(b"$EI,1234,R,") and raw.endswith(b"\r\n")
    assert decode(raw) == msg
    bad = bytearray(raw)
    bad[5] ^= 0x01
    with pytest.raises(ValueError):
        decode(bytes(bad))


def test_line_link_writes_one_line_per_decision_on_loop():
    link = LineLink("loop://")
    link.send(1, False, 0.5)
    link.send(2, True, 9.0)
    got = link.port.read(200).splitlines()
    assert [decode(x) for x in got] == [LineMessage(1, False, 0.5), LineMessage(2, True, 9.0)]
    link.close()


def test_missing_serial_port_is_a_link_error():
    with pytest.raises(LinkError, match="/dev/ttyNOPE0"):
        LineLink("/dev/ttyNOPE0")


def test_plc_stand_in_on_a_pty_logs_every_line(tmp_path):
    ready, out = tmp_path / "ready", tmp_path / "acts.jsonl"
    sim = subprocess.Popen([sys.executable, "-m", "firmware_bridge.plc_sim", "--out", str(out), "--ready-file", str(ready)],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline and sim.poll() is None
            time.sleep(0.05)
        link = LineLink(ready.read_text().strip())
        for i in range(50):
            link.send(i, i % 3 == 0, float(i))
        link.close()
        deadline = time.monotonic() + 10
        while (not out.exists() or len(out.read_text().splitlines()) < 50) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sim.send_signal(signal.SIGTERM)
        _, err = sim.communicate(timeout=10)
    acts = [json.loads(x) for x in out.read_text().splitlines()]
    assert [a["part_id"] for a in acts] == list(range(50))
    assert [a["reject"] for a in acts] == [i % 3 == 0 for i in range(50)]
    assert json.loads(err.strip().splitlines()[-1])["corrupt"] == 0
