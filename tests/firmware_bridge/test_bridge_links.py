"""open_link URL handling and one-line errors."""

from __future__ import annotations

import time

import pytest

from firmware_bridge.base import NullLink
from firmware_bridge.host import BridgeLink
from firmware_bridge.links import LinkError, open_link


def test_none_gives_a_link_that_accepts_everything():
    link = open_link("none")
    link.send(1, True)
    link.send(2, False)
    assert isinstance(link, NullLink) and link.flush(0) and link.healthy
    assert link.stats()["rejects"] == 1 and link.stats()["passes"] == 1


def test_missing_serial_port_names_the_port_and_the_way_out(tmp_path):
    with pytest.raises(LinkError) as exc:
        open_link(f"bridge:{tmp_path}/ttyUSB9?baud=115200")
    assert str(exc.value) == f"serial port {tmp_path}/ttyUSB9 not found: check the cable or pass --plc none"


@pytest.mark.parametrize("url, needle", [
    ("/dev/ttyUSB0", "no scheme"),
    ("serial:/dev/ttyUSB0", "unknown scheme 'serial'"),
    ("bridge:", "names no serial port"),
    ("bridge:/dev/ttyUSB0?speed=9600", "unknown option 'speed'"),
    ("bridge:/dev/ttyUSB0?baud=fast", "baud='fast' is not an integer"),
    ("bridge:/dev/ttyUSB0?heartbeat_ms=800&failsafe_ms=1000", "at most half of failsafe_ms"),
    ("bridge:/dev/ttyUSB0?window=32", "window must be 1..8"),
    ("modbus-rtu:/dev/ttyUSB0?unit=x", "unit='x' is not an integer"),
])
def test_bad_urls_raise_one_line_link_errors(url, needle):
    with pytest.raises(LinkError, match=None) as exc:
        open_link(url)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_pyserial_loop_url_opens_and_alarms_rejects_nobody_acknowledges():
    """loop:// echoes our own frames: nothing ACKs, so the reject must end as an alarm."""
    alarms = []
    link = open_link("bridge:loop://?deadline_ms=100&heartbeat_ms=50&failsafe_ms=200", on_alarm=alarms.append)
    try:
        assert isinstance(link, BridgeLink)
        link.send(9, True)
        assert link.flush(2)
        time.sleep(0.1)
        assert not link.healthy
        assert link.stats()["rx_errors"] > 0  # our own frames came back: counted, not trusted
    finally:
        link.close()
    assert [(a.kind, a.part_id) for a in alarms] == [("deadline", 9)]


def test_send_after_close_raises():
    link = open_link("bridge:loop://")
    link.close()
    with pytest.raises(LinkError):
        link.send(1, True)
