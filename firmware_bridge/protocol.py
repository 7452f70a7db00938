"""Wire codec for the edge PC <-> I/O bridge link (see docs/protocol.md). No I/O.

A frame on the wire is ``COBS(header + body + CRC16) + b"\\x00"``:

* header: ``type u8 | epoch u16 LE | seq u16 LE``
* CRC-16/CCITT-FALSE over header+body, sent most significant byte first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Union

# Message types, host -> bridge.
REJECT = 0x01
PASS = 0x02
HEARTBEAT = 0x03
# Message types, bridge -> host.
ACK = 0x81
NAK = 0x82
STATUS = 0x83
FAULT = 0x84

TYPE_NAMES = {
    REJECT: "REJECT", PASS: "PASS", HEARTBEAT: "HEARTBEAT",
    ACK: "ACK", NAK: "NAK", STATUS: "STATUS", FAULT: "FAULT",
}

# NAK reasons.
NAK_FRAMING = 1      # COBS/CRC/size error; seq is 0 (unknown)
NAK_BAD_TYPE = 2
NAK_BAD_LENGTH = 3
NAK_BAD_VALUE = 4
NAK_BUSY = 5         # reject schedule full, retry later

# STATUS reasons.
STATUS_REPLY = 0     # answer to a HEARTBEAT (seq echoes it)
STATUS_BOOT = 1      # sent once after reset (seq 0)
STATUS_RECOVERED = 2  # answer to the HEARTBEAT that ended a fail-safe episode

# FAULT codes.
FAULT_HEARTBEAT_LOST = 1

# Bridge state flags (ACK, NAK, STATUS, FAULT).
FLAG_FAILSAFE = 0x01
FLAG_REJECT_OUT = 0x02
FLAG_ALARM_OUT = 0x04

# Delay units of a REJECT.
UNIT_MS = 0
UNIT_TICKS = 1

HEADER = struct.Struct("<BHH")
HEADER_LEN = HEADER.size           # 5
CRC_LEN = 2
MAX_RAW = 32                        # header + body + CRC, decoded
MAX_BODY = MAX_RAW - HEADER_LEN - CRC_LEN  # 25
MAX_ENCODED = MAX_RAW + 1           # COBS adds one byte per 254
DELIM = b"\x00"

BODY = {
    REJECT: struct.Struct("<IIB"),      # part_id, delay, unit
    PASS: struct.Struct("<I"),          # part_id
    HEARTBEAT: struct.Struct("<H"),     # failsafe_ms
    ACK: struct.Struct("<B"),           # flags
    NAK: struct.Struct("<BB"),          # reason, flags
    STATUS: struct.Struct("<BBBHIHH"),  # flags, reason, fw_version, failsafe_ms,
                                        # actuations, rx_errors, duplicates
    FAULT: struct.Struct("<BBI"),       # code, flags, detail
}


class FrameError(ValueError):
    """A frame that cannot be decoded; ``reason`` is a short token."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


_CRC_TABLE = [crc16(bytes([i]), 0) for i in range(256)]


def crc16_fast(data: bytes, crc: int = 0xFFFF) -> int:
    """Table-driven :func:`crc16`."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data``; the result holds no zero byte."""
    out = bytearray(b"\x00")
    code_idx, code = 0, 1
    for byte in data:
        if byte == 0:
            out[code_idx] = code
            code_idx, code = len(out), 1
            out.append(0)
        else:
            out.append(byte)
            code += 1
            if code == 0xFF:
                out[code_idx] = code
                code_idx, code = len(out), 1
                out.append(0)
    out[code_idx] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block (without the delimiter); raise FrameError if malformed."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("cobs", "zero byte inside frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise FrameError("cobs", "block runs past end of frame")
        out += data[i:end]
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: message ``type``, sender ``epoch``, ``seq`` and raw ``body``."""

    type: int
    epoch: int
    seq: int
    body: bytes = b""

    def fields(self) -> tuple:
        """Unpack the body with the struct of its type; raise FrameError if it does not fit."""
        st = BODY.get(self.type)
        if st is None:
            raise FrameError("type", f"unknown type 0x{self.type:02x}")
        if len(self.body) != st.size:
            raise FrameError("length", f"{TYPE_NAMES[self.type]} body is {len(self.body)} bytes, want {st.size}")
        return st.unpack(self.body)

    def __str__(self) -> str:
        name = TYPE_NAMES.get(self.type, f"0x{self.type:02x}")
        return f"{name}(epoch={self.epoch}, seq={self.seq}, body={self.body.hex()})"


def encode_frame(frame: Frame) -> bytes:
    """Encode a frame for the wire, delimiter included."""
    if len(frame.body) > MAX_BODY:
        raise ValueError(f"body of {len(frame.body)} bytes exceeds {MAX_BODY}")
    raw = HEADER.pack(frame.type, frame.epoch, frame.seq) + frame.body
    raw += crc16_fast(raw).to_bytes(2, "big")
    return cobs_encode(raw) + DELIM


def make(type_: int, epoch: int, seq: int, *fields) -> bytes:
    """Encode a message of ``type_`` from its body fields (see ``BODY``)."""
    return encode_frame(Frame(type_, epoch, seq, BODY[type_].pack(*fields)))


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame (COBS block without delimiter); raise FrameError."""
    if len(encoded) > MAX_ENCODED:
        raise FrameError("size", f"{len(encoded)} encoded bytes > {MAX_ENCODED}")
    raw = cobs_decode(encoded)
    if len(raw) < HEADER_LEN + CRC_LEN:
        raise FrameError("short", f"{len(raw)} bytes")
    if len(raw) > MAX_RAW:
        raise FrameError("size", f"{len(raw)} decoded bytes > {MAX_RAW}")
    if crc16_fast(raw) != 0:  # CRC sent MSB first: residue over data+CRC is zero
        raise FrameError("crc")
    type_, epoch, seq = HEADER.unpack_from(raw)
    return Frame(type_, epoch, seq, raw[HEADER_LEN:-CRC_LEN])


Decoded = Union[Frame, FrameError]


class StreamDecoder:
    """Split a byte stream at 0x00 delimiters and decode each frame.

    Garbage and broken frames come back as FrameError items in stream order;
    the decoder resynchronises at the next delimiter. Same limits as the C core.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        self.errors = 0

    def feed(self, data: bytes) -> list[Decoded]:
        out: list[Decoded] = []
        buf = self._buf
        start = 0
        while True:
            z = data.find(0, start)
            chunk = data[start:] if z < 0 else data[start:z]
            if not self._overflow:
                room = MAX_ENCODED - len(buf)
                if len(chunk) > room:
                    self._overflow = True
                    buf.clear()
                else:
                    buf += chunk
            if z < 0:
                return out
            if self._overflow:
                out.append(FrameError("size", f"more than {MAX_ENCODED} bytes before delimiter"))
                self.errors += 1
            elif buf:
                try:
                    out.append(decode_frame(bytes(buf)))
                    self.frames += 1
                except FrameError as exc:
                    out.append(exc)
                    self.errors += 1
            buf.clear()
            self._overflow = False
            start = z + 1
