"""Bridge state machine in Python; mirrors firmware/bridge_core.c byte for byte.

No I/O: bytes in via :meth:`BridgeCore.feed`, time via ``now_ms`` arguments,
everything out through the callbacks given at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import protocol as p

FW_VERSION = 1
SEQ_RING = 16
PART_RING = 32
SCHED_SLOTS = 16


@dataclass(frozen=True)
class BridgeConfig:
    failsafe_ms: int = 1000      # used until the first HEARTBEAT sets it
    pulse_ms: int = 50           # reject output pulse length
    failsafe_reject: bool = True  # hold the reject output on while in fail-safe


def _due(now: int, due: int) -> bool:
    """Wrap-safe ``now >= due`` for uint32 counters."""
    return ((now - due) & 0xFFFFFFFF) < 0x80000000


class BridgeCore:
    """Protocol core of the I/O bridge."""

    def __init__(
        self,
        config: BridgeConfig,
        boot_id: int,
        now_ms: int,
        tx: Callable[[bytes], None],
        on_actuate: Callable[[int], None] = lambda part_id: None,
        on_outputs: Callable[[bool, bool], None] = lambda reject, alarm: None,
    ) -> None:
        self.cfg = config
        self.boot_id = boot_id & 0xFFFF
        self._tx, self._on_actuate, self._on_outputs = tx, on_actuate, on_outputs
        self._dec = p.StreamDecoder()
        self.session: int | None = None
        self._seqs: list[int] = []
        self._parts: list[int] = []
        self._sched: list[tuple[int, int, int] | None] = [None] * SCHED_SLOTS  # part, due, unit
        self.enc_count = 0
        self.failsafe = True           # no host yet
        self.failsafe_ms = config.failsafe_ms
        self.last_rx = now_ms & 0xFFFFFFFF
        self._pulse_until = 0
        self._pulse = False
        self.actuations = 0
        self.rx_errors = 0
        self.duplicates = 0
        self.passes = 0
        self.outputs = (None, None)
        self._update_outputs()
        self._status(0, p.STATUS_BOOT)

    # -- outputs -------------------------------------------------------
    @property
    def flags(self) -> int:
        reject, alarm = self.outputs
        return ((p.FLAG_FAILSAFE if self.failsafe else 0)
                | (p.FLAG_REJECT_OUT if reject else 0)
                | (p.FLAG_ALARM_OUT if alarm else 0))

    def _update_outputs(self) -> None:
        out = (self._pulse or (self.failsafe and self.cfg.failsafe_reject), self.failsafe)
        if out != self.outputs:
            self.outputs = out
            self._on_outputs(*out)

    def _send(self, type_: int, seq: int, *fields) -> None:
        self._tx(p.make(type_, self.boot_id, seq, *fields))

    def _status(self, seq: int, reason: int) -> None:
        self._send(p.STATUS, seq, self.flags, reason, FW_VERSION, self.failsafe_ms,
                   self.actuations & 0xFFFFFFFF, self.rx_errors & 0xFFFF, self.duplicates & 0xFFFF)

    def _actuate(self, part_id: int, now: int) -> None:
        self.actuations += 1
        self._pulse_until = (now + self.cfg.pulse_ms) & 0xFFFFFFFF
        self._pulse = True
        self._on_actuate(part_id)
        self._update_outputs()

    # -- input ---------------------------------------------------------
    def feed(self, data: bytes, now_ms: int) -> None:
        now = now_ms & 0xFFFFFFFF
        for item in self._dec.feed(data):
            if isinstance(item, p.FrameError):
                self.rx_errors += 1
                self._send(p.NAK, 0, p.NAK_FRAMING, self.flags)
            else:
                self._handle(item, now)

    def _remember(self, ring: list[int], size: int, value: int) -> None:
        ring.append(value)
        if len(ring) > size:
            del ring[0]

    def _handle(self, f: p.Frame, now: int) -> None:
        if f.type not in (p.REJECT, p.PASS, p.HEARTBEAT):
            self._send(p.NAK, f.seq, p.NAK_BAD_TYPE, self.flags)
            return
        self.last_rx = now
        if self.session != f.epoch:  # new host session: its seqs and part ids start afresh
            self.session = f.epoch
            self._seqs.clear()
            self._parts.clear()
        if len(f.body) != p.BODY[f.type].size:
            self._send(p.NAK, f.seq, p.NAK_BAD_LENGTH, self.flags)
            return
        fields = p.BODY[f.type].unpack(f.body)
        if f.type == p.HEARTBEAT:
            (fs_ms,) = fields
            if fs_ms:
                self.failsafe_ms = fs_ms
            reason = p.STATUS_REPLY
            if self.failsafe:
                self.failsafe = False
                self._update_outputs()
                reason = p.STATUS_RECOVERED
            self._status(f.seq, reason)
            return
        if f.seq in self._seqs:
            self.duplicates += 1
            self._send(p.ACK, f.seq, self.flags)
            return
        if f.type == p.PASS:
            self.passes += 1
        else:
            part_id, delay, unit = fields
            if unit > p.UNIT_TICKS:
                self._send(p.NAK, f.seq, p.NAK_BAD_VALUE, self.flags)
                return
            if part_id in self._parts:
                self.duplicates += 1
            elif delay == 0:
                self._actuate(part_id, now)
                self._remember(self._parts, PART_RING, part_id)
            else:
                try:
                    slot = self._sched.index(None)
                except ValueError:
                    self._send(p.NAK, f.seq, p.NAK_BUSY, self.flags)
                    return
                base = now if unit == p.UNIT_MS else self.enc_count
                self._sched[slot] = (part_id, (base + delay) & 0xFFFFFFFF, unit)
                self._remember(self._parts, PART_RING, part_id)
        self._remember(self._seqs, SEQ_RING, f.seq)
        self._send(p.ACK, f.seq, self.flags)

    # -- time ----------------------------------------------------------
    def tick(self, now_ms: int) -> None:
        now = now_ms & 0xFFFFFFFF
        if not self.failsafe and ((now - self.last_rx) & 0xFFFFFFFF) > self.failsafe_ms:
            self.failsafe = True
            self._update_outputs()
            self._send(p.FAULT, 0, p.FAULT_HEARTBEAT_LOST, self.flags,
                       (now - self.last_rx) & 0xFFFFFFFF)
        self._run_due(p.UNIT_MS, now, now)
        if self._pulse and _due(now, self._pulse_until):
            self._pulse = False
            self._update_outputs()

    def encoder_tick(self, now_ms: int) -> None:
        self.enc_count = (self.enc_count + 1) & 0xFFFFFFFF
        self._run_due(p.UNIT_TICKS, self.enc_count, now_ms & 0xFFFFFFFF)

    def _run_due(self, unit: int, clock: int, now: int) -> None:
        for i, entry in enumerate(self._sched):
            if entry and entry[2] == unit and _due(clock, entry[1]):
                self._sched[i] = None
                self._actuate(entry[0], now)

    def stats(self) -> dict:
        return {
            "boot_id": self.boot_id, "failsafe": self.failsafe, "actuations": self.actuations,
            "passes": self.passes, "rx_errors": self.rx_errors, "duplicates": self.duplicates,
            "reject_out": bool(self.outputs[0]), "alarm_out": bool(self.outputs[1]),
        }
