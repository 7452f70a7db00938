"""Modbus RTU link for PLCs that take rejects directly (pymodbus client).

Two ways to deliver a reject, both exactly once (see docs/protocol.md):

* mailbox (default): write ``CMD_SEQ, PART_HI, PART_LO, DELAY_MS`` at ``reg`` in one
  request; the PLC copies CMD_SEQ to ACK_SEQ (``reg+4``) when it has executed it.
  Retries rewrite the same CMD_SEQ, which the PLC ignores once executed.
* coil pulse (``coil=N``): coil N = 1 then 0, each retried until confirmed.

Heartbeat: ``WATCHDOG`` (``reg+5``, or ``watchdog=N``) +1 every ``heartbeat_ms``.
One worker thread owns the client; :meth:`ModbusLink.send` only enqueues.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Optional

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from .base import Alarm, AlarmCallback, AlarmSink, Link, LinkError, wait_until

log = logging.getLogger("firmware_bridge.modbus")

CMD_SEQ, PART_HI, PART_LO, DELAY_MS, ACK_SEQ, WATCHDOG, FAILSAFE_MS = range(7)


@dataclass(frozen=True)
class ModbusConfig:
    port: str
    unit: int = 1
    baud: int = 19200
    reg: int = 0               # mailbox base address (holding registers)
    coil: int = -1             # >= 0: coil-pulse mode on this coil
    watchdog: int = -1         # watchdog register; -1: reg+5 in mailbox mode, none in coil mode
    heartbeat_ms: int = 200
    failsafe_ms: int = 1000
    timeout_ms: int = 100      # per Modbus request
    deadline_ms: int = 500     # a reject not confirmed delay_ms + deadline_ms after send() is alarmed
    pulse_ms: int = 50         # coil mode: time the coil stays on
    reconnect_ms: int = 200
    max_queue: int = 10_000

    @property
    def watchdog_reg(self) -> Optional[int]:
        if self.watchdog >= 0:
            return self.watchdog
        return None if self.coil >= 0 else self.reg + WATCHDOG


class _Job:
    __slots__ = ("part_id", "delay", "t_send", "deadline")

    def __init__(self, part_id: int, delay: int, now: float, deadline_ms: int) -> None:
        self.part_id = part_id & 0xFFFFFFFF
        self.delay = delay
        self.t_send = now
        self.deadline = now + (delay + deadline_ms) / 1000.0


class _Retry(Exception):
    """A request failed; try again (after reconnecting if needed)."""


class ModbusLink(Link):
    """Exactly-once reject delivery to a Modbus RTU PLC. PASS decisions are only counted."""

    def __init__(self, config: ModbusConfig, on_alarm: AlarmCallback | None = None) -> None:
        self.cfg = config
        self._sink = AlarmSink(on_alarm, log)
        self.alarms = self._sink.alarms
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[_Job] = collections.deque()
        self._busy = False
        self._closing = False
        self._connected = False
        self._last_ok = 0.0
        self._seq: Optional[int] = None
        self._wd = 0
        self._hb_due = 0.0
        self._down_since: Optional[float] = None
        self.counters = collections.Counter()
        if "://" not in config.port and not os.path.exists(config.port):
            raise LinkError(f"serial port {config.port} not found: check the cable or pass --plc none")
        self._client = ModbusSerialClient(port=config.port, baudrate=config.baud,
                                          timeout=config.timeout_ms / 1000.0, retries=0)
        if not self._client.connect():
            raise LinkError(f"serial port {config.port} cannot be opened: check the cable, permissions "
                            "(dialout group) or pass --plc none")
        self._connected = True
        self._thread = threading.Thread(target=self._run, name="modbus-link", daemon=True)
        self._thread.start()

    # -- public API --------------------------------------------------------
    def send(self, part_id: int, reject: bool, delay_ms: int = 0) -> None:
        if not 0 <= delay_ms <= 0xFFFF:
            raise ValueError(f"delay_ms {delay_ms} out of range 0..65535 (one Modbus register)")
        with self._cond:
            if self._closing:
                raise LinkError("modbus link is closed")
            if not reject:
                self.counters["passes"] += 1
                return
            self.counters["sent_rejects"] += 1
            job = _Job(part_id, delay_ms, time.monotonic(), self.cfg.deadline_ms)
            if len(self._queue) >= self.cfg.max_queue:
                alarm = Alarm("queue_full", f"send queue full: reject for part {job.part_id} not sent",
                              job.part_id)
            else:
                self._queue.append(job)
                self._cond.notify_all()
                return
        self._sink.raise_(alarm)

    def flush(self, timeout: float) -> bool:
        return wait_until(self._cond, lambda: not (self._queue or self._busy), timeout)

    @property
    def healthy(self) -> bool:
        with self._lock:
            return self._connected and time.monotonic() - self._last_ok < self.cfg.failsafe_ms / 1000.0

    def stats(self) -> dict:
        with self._lock:
            return {"link": "modbus-rtu", "port": self.cfg.port, "connected": self._connected,
                    "queued": len(self._queue) + self._busy, "alarms": self._sink.count,
                    "mode": "coil" if self.cfg.coil >= 0 else "mailbox", **self.counters}

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._client.close()

    # -- Modbus requests (worker thread) -------------------------------------
    def _call(self, fn, *args, **kw):
        if not self._connected:
            self._reconnect()
        try:
            rr = fn(*args, device_id=self.cfg.unit, **kw)
        except (ModbusException, OSError, ValueError, TypeError, AttributeError) as exc:
            self._failed(exc)
            raise _Retry(str(exc)) from None
        if rr.isError():
            self.counters["modbus_errors"] += 1
            log.warning("PLC answered with an error: %s", rr)
            raise _Retry(str(rr))
        with self._lock:
            self._last_ok = time.monotonic()
        return rr

    def _failed(self, exc: BaseException) -> None:
        """Any request exception: close the port; the next request reopens it."""
        self.counters["request_failures"] += 1
        log.warning("modbus request on %s failed: %s", self.cfg.port, exc)
        gone = "://" not in self.cfg.port and not os.path.exists(self.cfg.port)
        with self._lock:
            self._connected = False
            if gone and self._down_since is None:
                self.counters["disconnects"] += 1
                self._down_since = time.monotonic()
                log.warning("lost %s; reconnecting", self.cfg.port)
        self._client.close()

    def _reconnect(self) -> None:
        if ("://" in self.cfg.port or os.path.exists(self.cfg.port)) and self._client.connect():
            with self._lock:
                self._connected = True
                if self._down_since is not None:
                    self.counters["reconnects"] += 1
                    log.warning("reconnected to %s after %.0f ms", self.cfg.port,
                                1000 * (time.monotonic() - self._down_since))
                    self._down_since = None
            return
        time.sleep(self.cfg.reconnect_ms / 1000.0)
        raise _Retry("not connected")

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._hb_due:
            return
        self._hb_due = now + self.cfg.heartbeat_ms / 1000.0
        wd = self.cfg.watchdog_reg
        if wd is None:
            return
        self._wd = (self._wd + 1) & 0xFFFF
        try:
            self._call(self._client.write_registers, wd, [self._wd, self.cfg.failsafe_ms]
                       if self.cfg.coil < 0 and self.cfg.watchdog < 0 else [self._wd])
            self.counters["heartbeats"] += 1
        except _Retry:
            pass

    def _deliver_mailbox(self, job: _Job) -> bool:
        base, seq = self.cfg.reg, None
        while time.monotonic() < job.deadline:
            self._heartbeat()
            try:
                if self._seq is None:  # continue after the PLC's last ACK: a restart reuses no seq
                    self._seq = self._read(base + ACK_SEQ)
                if seq is None:
                    seq = self._seq % 0xFFFF + 1
                delay = max(0, job.delay - int((time.monotonic() - job.t_send) * 1000)) if job.delay else 0
                self._call(self._client.write_registers, base + CMD_SEQ,
                           [seq, job.part_id >> 16, job.part_id & 0xFFFF, delay])
                self.counters["writes"] += 1
                for _ in range(3):  # give the PLC a few scans before writing again
                    if self._read(base + ACK_SEQ) == seq:
                        self._seq = seq
                        return True
                    self.counters["ack_pending"] += 1
            except _Retry:
                self.counters["retries"] += 1
        if seq is not None:
            self._seq = seq  # taken or not, seq + 1 is new to the PLC
        return False

    def _read(self, address: int) -> int:
        return self._call(self._client.read_holding_registers, address, count=1).registers[0]

    def _write_coil(self, value: bool, until: float) -> bool:
        while time.monotonic() < until:
            self._heartbeat()
            try:
                self._call(self._client.write_coil, self.cfg.coil, value)
                return True
            except _Retry:
                self.counters["retries"] += 1
        return False

    def _deliver_coil(self, job: _Job) -> bool:
        wait = job.t_send + job.delay / 1000.0 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        on = self._write_coil(True, job.deadline)
        time.sleep(self.cfg.pulse_ms / 1000.0)
        # Always switch off, even past the deadline: never leave the output stuck on.
        while not self._write_coil(False, time.monotonic() + 1.0) and not self._closing:
            pass
        return on

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(max(0.0, min(self._hb_due - time.monotonic(), 0.1)))
                    if time.monotonic() >= self._hb_due:
                        break
                if self._closing:
                    return
                job = self._queue.popleft() if self._queue else None
                self._busy = job is not None
            if job is None:
                self._heartbeat()
                continue
            deliver = self._deliver_coil if self.cfg.coil >= 0 else self._deliver_mailbox
            try:
                ok = deliver(job)
            except _Retry:
                ok = False
            with self._cond:
                self._busy = False
                if ok:
                    self.counters["rejects_confirmed"] += 1
                else:
                    self.counters["rejects_expired"] += 1
                self._cond.notify_all()
            if not ok:
                self._sink.raise_(Alarm("deadline", f"reject for part {job.part_id} not confirmed by the "
                                        f"PLC within its deadline: check the Modbus link", job.part_id))
