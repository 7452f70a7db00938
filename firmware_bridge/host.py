"""Edge-side driver for the I/O bridge over a serial port (pyserial).

Two threads own the port: a writer (new frames, retransmissions, heartbeats every
``heartbeat_ms``, reconnects) and a reader (ACK/NAK/STATUS/FAULT). All state is
behind one lock; :meth:`BridgeLink.send` only enqueues.

Delivery: every REJECT is retransmitted until the bridge ACKs it or its deadline
(``delay_ms + deadline_ms`` after :meth:`send`) passes, then it is alarmed. The
bridge drops repeats by sequence number and by part id, so a reject actuates once.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Optional

import serial

from . import protocol as p
from .base import Alarm, AlarmCallback, AlarmSink, Link, LinkError, wait_until

log = logging.getLogger("firmware_bridge.host")


@dataclass(frozen=True)
class BridgeLinkConfig:
    port: str                   # device path or pyserial URL (loop://, socket://...)
    baud: int = 115200
    heartbeat_ms: int = 200
    failsafe_ms: int = 1000     # told to the bridge in every HEARTBEAT
    ack_timeout_ms: int = 50    # retransmit an unacknowledged frame after this
    deadline_ms: int = 500      # a reject not confirmed delay_ms + deadline_ms after send() is alarmed
    window: int = 8             # seq span in flight (oldest unacked .. newest); <= 8 keeps
                                # every retransmission inside the bridge's 16-entry seq ring
    pass_retries: int = 3       # PASS frames are retransmitted this often, then dropped (counted)
    nak_retries: int = 3        # a frame NAKed BAD_TYPE/BAD_LENGTH is sent again this often before
                                # it counts as refused (a bit flip can shorten a frame, see _on_nak)
    reconnect_ms: int = 100
    max_queue: int = 10_000

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 8:
            raise ValueError("window must be 1..8 (the bridge remembers 16 sequence numbers)")
        if not 1 <= self.failsafe_ms <= 0xFFFF:
            raise ValueError("failsafe_ms must be 1..65535")
        if self.heartbeat_ms * 2 > self.failsafe_ms:
            raise ValueError("heartbeat_ms must be at most half of failsafe_ms")


class _Msg:
    __slots__ = ("part_id", "reject", "delay", "unit", "t_send", "deadline", "n", "seq", "tries", "last_tx", "bad_naks")

    def __init__(self, part_id: int, reject: bool, delay: int, unit: int, now: float, deadline_ms: int):
        self.part_id = part_id & 0xFFFFFFFF
        self.reject = reject
        self.delay = delay
        self.unit = unit
        self.t_send = now
        extra = delay if unit == p.UNIT_MS else 0
        self.deadline = now + (extra + deadline_ms) / 1000.0
        self.n = 0     # position in this session's send order
        self.seq = 0   # n on the wire: 1..65535
        self.tries = 0
        self.last_tx = 0.0
        self.bad_naks = 0  # NAK BAD_TYPE/BAD_LENGTH answers, each a frame the line damaged


def _open(cfg: BridgeLinkConfig) -> serial.SerialBase:
    return serial.serial_for_url(cfg.port, baudrate=cfg.baud, timeout=0.02, write_timeout=1.0)


def port_error(port: str, exc: BaseException) -> LinkError:
    """One-line LinkError naming the port and what to do."""
    text = str(exc)
    if "No such file" in text or "could not open port" in text and "Errno 2" in text:
        return LinkError(f"serial port {port} not found: check the cable or pass --plc none")
    if "Permission denied" in text or "Errno 13" in text:
        return LinkError(f"serial port {port}: permission denied: add the user to the dialout group")
    if "busy" in text.lower() or "Errno 16" in text:
        return LinkError(f"serial port {port} is busy: another program has it open")
    return LinkError(f"serial port {port} cannot be opened ({text}): check the cable or pass --plc none")


class BridgeLink(Link):
    """Reliable REJECT/PASS delivery to an I/O bridge (see docs/protocol.md)."""

    def __init__(self, config: BridgeLinkConfig, on_alarm: AlarmCallback | None = None) -> None:
        self.cfg = config
        self._sink = AlarmSink(on_alarm, log)
        self.alarms = self._sink.alarms
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[_Msg] = collections.deque()
        self._inflight: dict[int, _Msg] = {}   # seq -> message, in send order
        self._scheduled: list[_Msg] = []      # ACKed rejects waiting for their delay at the bridge
        self._pending_alarms: list[Alarm] = []
        self.epoch = random.randrange(1, 0x10000)  # host session id
        self._n = 0
        self._hb_seq = 0
        self._status_seq: Optional[int] = None
        self._bridge_epoch: Optional[int] = None
        self._bridge_flags = 0
        self._bridge_status: dict = {}
        self._last_rx = 0.0
        self._port: Optional[serial.SerialBase] = None
        self._gen = 0
        self._hb_due = 0.0
        self._closing = False
        self._failsafe_alarmed = False
        self._expect_recovery = True  # the bridge may wait in fail-safe for its first host
        self._down_since: Optional[float] = None
        self._rtt_sum = 0.0
        self._rtt_max = 0.0
        self._rtt_n = 0
        self.counters = collections.Counter()
        try:
            self._connect(_open(config))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise port_error(config.port, exc) from None
        self._writer = threading.Thread(target=self._write_loop, name="bridge-writer", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="bridge-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    # -- public API ------------------------------------------------------
    def send(self, part_id: int, reject: bool, delay_ms: int = 0, *, delay_ticks: int | None = None) -> None:
        """Queue a decision. ``delay_ticks`` counts encoder pulses at the bridge instead of ms."""
        unit, delay = (p.UNIT_TICKS, delay_ticks) if delay_ticks is not None else (p.UNIT_MS, delay_ms)
        if not 0 <= delay <= 0xFFFFFFFF:
            raise ValueError(f"delay {delay} out of range 0..2**32-1")
        msg = _Msg(part_id, bool(reject), int(delay), unit, time.monotonic(), self.cfg.deadline_ms)
        with self._cond:
            if self._closing:
                raise LinkError("bridge link is closed")
            self.counters["sent_rejects" if reject else "sent_passes"] += 1
            if len(self._queue) >= self.cfg.max_queue:
                if reject:
                    self._alarm("queue_full", f"send queue full ({self.cfg.max_queue}): reject for part "
                                f"{msg.part_id} not sent", msg.part_id)
                else:
                    self.counters["passes_dropped"] += 1
            else:
                self._queue.append(msg)
                self._cond.notify_all()
        self._dispatch_alarms()

    def flush(self, timeout: float) -> bool:
        return wait_until(self._cond, lambda: not (self._queue or self._inflight), timeout)

    @property
    def healthy(self) -> bool:
        with self._lock:
            return (self._port is not None and not (self._bridge_flags & p.FLAG_FAILSAFE)
                    and time.monotonic() - self._last_rx < self.cfg.failsafe_ms / 1000.0)

    def stats(self) -> dict:
        with self._lock:
            acked = self._rtt_n
            return {
                "link": "bridge", "port": self.cfg.port, "connected": self._port is not None,
                "queued": len(self._queue), "in_flight": len(self._inflight),
                "alarms": self._sink.count, "bridge_epoch": self._bridge_epoch,
                "bridge_failsafe": bool(self._bridge_flags & p.FLAG_FAILSAFE),
                "rtt_ms_avg": round(1000 * self._rtt_sum / acked, 3) if acked else None,
                "rtt_ms_max": round(1000 * self._rtt_max, 3),
                "bridge": dict(self._bridge_status), **self.counters,
            }

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for t in (self._writer, self._reader):
            if t is not threading.current_thread():
                t.join(timeout=2)
        with self._lock:
            self._drop_port()

    # -- helpers (lock held) ---------------------------------------------
    def _alarm(self, kind: str, message: str, part_id: int | None = None) -> None:
        self._pending_alarms.append(Alarm(kind, message, part_id))

    def _dispatch_alarms(self) -> None:
        with self._lock:
            pending, self._pending_alarms = self._pending_alarms, []
        for alarm in pending:
            self._sink.raise_(alarm)


    def _frame(self, m: _Msg, now: float) -> bytes:
        if not m.reject:
            return p.make(p.PASS, self.epoch, m.seq, m.part_id)
        delay = m.delay
        if m.unit == p.UNIT_MS and delay:
            # The bridge counts the delay from reception: take off the time already spent.
            delay = max(0, delay - int((now - m.t_send) * 1000))
        return p.make(p.REJECT, self.epoch, m.seq, m.part_id, delay, m.unit)

    def _connect(self, port: serial.SerialBase) -> None:
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError, AttributeError):
            pass
        self._port = port
        self._gen += 1
        self._decoder = p.StreamDecoder()
        self._hb_due = 0.0
        for m in self._inflight.values():
            m.last_tx = 0.0  # retransmit at once
        if self._down_since is not None:
            self.counters["reconnects"] += 1
            log.warning("reconnected to %s after %.0f ms", self.cfg.port,
                        1000 * (time.monotonic() - self._down_since))
            self._down_since = None

    def _drop_port(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except Exception:
                pass
            self._port = None

    def _disconnected(self, gen: int, exc: BaseException) -> None:
        with self._cond:
            if gen != self._gen or self._port is None:
                return
            self._drop_port()
            self.counters["disconnects"] += 1
            self._down_since = time.monotonic()
            log.warning("lost %s (%s); %d queued, %d in flight; reconnecting", self.cfg.port, exc,
                        len(self._queue), len(self._inflight))
            self._cond.notify_all()

    def _expire(self, now: float) -> None:
        q = self._queue
        while q and q[0].deadline <= now:
            self._give_up(q.popleft())
        for seq in [s for s, m in self._inflight.items() if m.deadline <= now]:
            self._give_up(self._inflight.pop(seq))
        self._scheduled = [m for m in self._scheduled if m.t_send + m.delay / 1000.0 + 1.0 > now]

    def _give_up(self, m: _Msg) -> None:
        if m.reject:
            self.counters["rejects_expired"] += 1
            self._alarm("deadline", f"reject for part {m.part_id} not confirmed within its deadline "
                        f"({m.tries} transmissions): check the bridge", m.part_id)
        else:
            self.counters["passes_dropped"] += 1
        self._cond.notify_all()

    # -- writer thread ---------------------------------------------------
    def _write_loop(self) -> None:
        reconnect_s = self.cfg.reconnect_ms / 1000.0
        next_try = 0.0
        while True:
            with self._cond:
                if self._closing:
                    return
                now = time.monotonic()
                self._expire(now)
                port, gen = self._port, self._gen
                if port is None:
                    if now < next_try:
                        self._cond.wait(min(next_try - now, 0.05))
                        out = None
                    else:
                        out = "connect"
                else:
                    out = self._collect(now)
                    if not out:
                        self._cond.wait(self._wait_time(now))
            self._dispatch_alarms()
            if out == "connect":
                next_try = time.monotonic() + reconnect_s
                try:
                    new = _open(self.cfg)
                except (serial.SerialException, OSError, ValueError):
                    continue
                with self._cond:
                    self._connect(new)
                    self._cond.notify_all()
            elif out:
                try:
                    port.write(out)
                except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                    self._disconnected(gen, exc)

    def _collect(self, now: float) -> bytes:
        """Frames due now: heartbeat, retransmissions, then new frames up to the window."""
        out = []
        ack_s = self.cfg.ack_timeout_ms / 1000.0
        if now >= self._hb_due:
            # Heartbeats count on their own: they are never retransmitted nor recorded in
            # the bridge's seq ring; the seq only lets us drop repeated STATUS replies.
            self._hb_seq = self._hb_seq % 0xFFFF + 1
            out.append(p.make(p.HEARTBEAT, self.epoch, self._hb_seq, self.cfg.failsafe_ms))
            self._hb_due = now + self.cfg.heartbeat_ms / 1000.0
            self.counters["heartbeats"] += 1
        for seq, m in list(self._inflight.items()):
            if now - m.last_tx >= ack_s:
                if not m.reject and m.tries > self.cfg.pass_retries:
                    del self._inflight[seq]
                    self._give_up(m)
                    continue
                if m.tries:
                    self.counters["retransmits"] += 1
                m.tries += 1
                m.last_tx = now
                out.append(self._frame(m, now))
        # Selective repeat over a seq span, not a count: while frame n is unacked nothing
        # beyond n + window - 1 goes out, so a retransmission of n always finds n still
        # in the bridge's seq ring (at most 2 * window - 2 newer seqs can be recorded).
        oldest = next(iter(self._inflight.values())).n if self._inflight else self._n + 1
        while self._queue and self._n + 1 - oldest < self.cfg.window:
            m = self._queue.popleft()
            self._n += 1
            m.n, m.seq = self._n, (self._n - 1) % 0xFFFF + 1  # 1..65535; 0 means "no seq"
            m.tries, m.last_tx = 1, now
            self._inflight[m.seq] = m
            out.append(self._frame(m, now))
        return b"".join(out)

    def _wait_time(self, now: float) -> float:
        t = self._hb_due
        ack_s = self.cfg.ack_timeout_ms / 1000.0
        for m in self._inflight.values():
            t = min(t, m.last_tx + ack_s, m.deadline)
        if self._queue:
            t = min(t, self._queue[0].deadline)
        return min(max(t - now, 0.0005), 0.1)

    # -- reader thread ---------------------------------------------------
    def _read_loop(self) -> None:
        while True:
            with self._cond:
                while self._port is None and not self._closing:
                    self._cond.wait(0.1)
                if self._closing:
                    return
                port, gen, decoder = self._port, self._gen, self._decoder
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                self._disconnected(gen, exc)
                continue
            if not data:
                continue
            items = decoder.feed(data)
            with self._cond:
                if gen != self._gen:
                    continue
                now = time.monotonic()
                for item in items:
                    self._on_item(item, now)
                self._cond.notify_all()
            self._dispatch_alarms()

    def _on_item(self, item: p.Decoded, now: float) -> None:
        if isinstance(item, p.FrameError):
            self.counters["rx_errors"] += 1
            log.warning("bad frame from bridge (%s)", item)
            return
        f = item
        try:
            fields = f.fields()
        except p.FrameError as exc:  # a shortened frame that still checks: see _on_nak
            self.counters["rx_errors"] += 1
            log.warning("bad frame from bridge (%s): %s", exc, f)
            return
        if f.type not in (p.ACK, p.NAK, p.STATUS, p.FAULT):
            self.counters["rx_errors"] += 1
            log.warning("unexpected frame type from bridge: %s", f)
            return
        if self._bridge_epoch is None:
            self._bridge_epoch = f.epoch
        elif f.epoch != self._bridge_epoch:
            self._bridge_epoch = f.epoch
            self._on_reboot(now)
        self._last_rx = now
        flags = fields[0] if f.type in (p.ACK, p.STATUS) else fields[1]
        self._bridge_flags = flags
        if f.type == p.ACK:
            m = self._inflight.pop(f.seq, None)
            if m is None:
                self.counters["stale_acks"] += 1
                return
            self.counters["acked"] += 1
            # The link is FIFO: an older frame sent before this one and still unacked was
            # lost (or its ACK was). Send it again now instead of waiting for the timeout.
            for o in self._inflight.values():
                if o.n > m.n:
                    break
                if o.last_tx < m.last_tx:
                    o.last_tx = 0.0
            if m.last_tx:  # 0.0 marks a frame queued for retransmission
                rtt = now - m.last_tx
                self._rtt_sum += rtt
                self._rtt_max = max(self._rtt_max, rtt)
                self._rtt_n += 1
            if m.reject:
                self.counters["rejects_confirmed"] += 1
                if m.delay and m.unit == p.UNIT_MS:
                    self._scheduled.append(m)
        elif f.type == p.NAK:
            self._on_nak(f.seq, fields[0])
        elif f.type == p.STATUS:
            if f.seq and f.seq == self._status_seq:
                self.counters["duplicate_status"] += 1
                return
            self._status_seq = f.seq
            _, reason, fw, fs_ms, actuations, rx_errors, dups = fields
            self._bridge_status = {"fw_version": fw, "failsafe_ms": fs_ms, "actuations": actuations,
                                   "rx_errors": rx_errors, "duplicates": dups}
            if reason == p.STATUS_RECOVERED:
                if not self._expect_recovery and not self._failsafe_alarmed:
                    self._alarm("failsafe", "bridge was in fail-safe (heartbeats lost); it has recovered")
                    log.debug("RECOVERED seq %d epoch %d", f.seq, f.epoch)
                self._failsafe_alarmed = False
                self._expect_recovery = False
            elif reason == p.STATUS_REPLY:
                self._expect_recovery = False
        elif f.type == p.FAULT:
            code, _, detail = fields
            self.counters["faults"] += 1
            if code == p.FAULT_HEARTBEAT_LOST:
                self._failsafe_alarmed = True
                self._alarm("failsafe", f"bridge entered fail-safe: no heartbeat for {detail} ms")
            else:
                self._alarm("fault", f"bridge fault code {code} detail {detail}")

    def _on_nak(self, seq: int, reason: int) -> None:
        self.counters["naks"] += 1
        if reason == p.NAK_FRAMING:
            # The bridge got a broken frame; in FIFO order that is our oldest unacked one.
            if self._inflight:
                next(iter(self._inflight.values())).last_tx = 0.0
            return
        m = self._inflight.get(seq)
        if m is None:
            return
        if reason == p.NAK_BUSY:
            log.warning("bridge busy (schedule full) for part %d; retrying", m.part_id)
            return  # retransmitted after ack_timeout
        if reason in (p.NAK_BAD_TYPE, p.NAK_BAD_LENGTH) and m.bad_naks < self.cfg.nak_retries:
            # We only send well-formed frames, so the line changed this one. The CRC has a blind
            # spot here: when a frame's CRC ends in 0x00, one bit flip in its last COBS code byte
            # drops that zero and the shorter frame still checks (a zero residue stays zero).
            # The bridge then NAKs BAD_LENGTH with the right seq: send it again.
            m.bad_naks += 1
            self.counters["naks_retried"] += 1
            log.warning("bridge got a damaged frame for part %d (NAK reason %d); sending it again",
                        m.part_id, reason)
            m.last_tx = 0.0
            return
        del self._inflight[seq]
        log.error("bridge refused %s (reason %d)", m.part_id, reason)
        if m.reject:
            self._alarm("nak", f"bridge refused the reject for part {m.part_id} (NAK reason {reason})",
                        m.part_id)

    def _on_reboot(self, now: float) -> None:
        self.counters["bridge_reboots"] += 1
        unsure = [m.part_id for m in self._inflight.values() if m.reject]
        for m in self._inflight.values():
            m.last_tx = 0.0  # the new bridge has empty dedupe rings: send again
        pending = [m for m in self._scheduled if m.t_send + m.delay / 1000.0 > now]
        for m in reversed(pending):  # acked but not yet due: the reboot lost them
            self._queue.appendleft(m)
        self._scheduled = []
        self._expect_recovery = True  # a fresh bridge boots in fail-safe; leaving it is expected
        self._alarm("bridge_reboot",
                    f"bridge rebooted; re-sent {len(unsure)} unconfirmed rejects (parts {unsure[:8]} may "
                    f"actuate twice) and {len(pending)} scheduled ones")
