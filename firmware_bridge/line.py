"""A simple checksummed line per decision, for a PLC input card or a serial terminal.

    $EI,<part id>,<R|P>,<score>*<XOR checksum, 2 hex digits>\r\n

The checksum is the XOR of every byte between '$' and '*' (as in NMEA 0183). This is the
walking-skeleton link; `firmware_bridge.host` speaks the framed bridge protocol with ACKs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import LinkError

__all__ = ["LineLink", "LineMessage", "LinkError", "decode", "encode"]


@dataclass(frozen=True)
class LineMessage:
    part_id: int
    reject: bool
    score: float


def _checksum(body: bytes) -> int:
    c = 0
    for b in body:
        c ^= b
    return c


def encode(msg: LineMessage) -> bytes:
    body = f"EI,{msg.part_id},{'R' if msg.reject else 'P'},{msg.score:.6g}".encode("ascii")
    return b"$" + body + b"*" + f"{_checksum(body):02X}".encode("ascii") + b"\r\n"


def decode(line: bytes) -> LineMessage:
    """Parse one line; ValueError on bad framing or checksum."""
    line = line.strip()
    if not line.startswith(b"$") or b"*" not in line:
        raise ValueError(f"not a decision line: {line[:40]!r}")
    body, _, check = line[1:].rpartition(b"*")
    if len(check) != 2 or int(check, 16) != _checksum(body):
        raise ValueError(f"checksum mismatch: {line[:40]!r}")
    fields = body.decode("ascii").split(",")
    if len(fields) != 4 or fields[0] != "EI" or fields[2] not in ("R", "P"):
        raise ValueError(f"malformed decision line: {line[:40]!r}")
    return LineMessage(int(fields[1]), fields[2] == "R", float(fields[3]))


class LineLink:
    """Write decision lines to any pyserial URL (a device path, a pty, `loop://`)."""

    def __init__(self, url: str, baudrate: int = 115200, write_timeout: float = 1.0):
        import serial

        self.url = url
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=write_timeout)
        except (serial.SerialException, ValueError, OSError) as err:
            raise LinkError(f"serial port {url} cannot be opened ({err.__class__.__name__}): check the cable and the port name, or drop --serial") from None
        self.sent = 0

    def send(self, part_id: int, reject: bool, score: float) -> None:
        import serial

        try:
            self.port.write(encode(LineMessage(part_id, reject, score)))
            self.port.flush()
        except (serial.SerialException, OSError) as err:
            raise LinkError(f"serial port {self.url} write failed ({err}): the PLC link is down") from None
        self.sent += 1

    def close(self) -> None:
        self.port.close()
