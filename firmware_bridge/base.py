"""What every link to the PLC offers: the Link interface, alarms and errors."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Optional


def wait_until(cond, done: Callable[[], bool], timeout: float) -> bool:
    """Wait on `cond` (a threading.Condition) until done() holds or timeout seconds pass."""
    end = time.monotonic() + timeout
    with cond:
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                return False
            cond.wait(min(left, 0.05))
    return True


class LinkError(Exception):
    """A link cannot be opened or used; the message says what to check."""


@dataclass(frozen=True)
class Alarm:
    """A reject that may not have been delivered, or a bridge condition needing a human.

    kind: "deadline" (reject not confirmed in time), "queue_full", "nak" (refused by
    the bridge), "bridge_reboot" (unconfirmed rejects re-sent; may actuate twice),
    "failsafe" (the bridge held its alarm output because heartbeats stopped).
    """

    kind: str
    message: str
    part_id: Optional[int] = None
    time: float = field(default_factory=time.time)


AlarmCallback = Callable[[Alarm], None]


class Link(ABC):
    """Delivers pass/reject decisions to the PLC side."""

    alarms: list[Alarm]

    @abstractmethod
    def send(self, part_id: int, reject: bool, delay_ms: int = 0) -> None:
        """Queue one decision; never blocks."""

    @abstractmethod
    def flush(self, timeout: float) -> bool:
        """Wait until every queued decision is confirmed or alarmed; False on timeout."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """True while the far end answers and is not in fail-safe."""

    @abstractmethod
    def stats(self) -> dict:
        """Counters for logs and tests."""

    @abstractmethod
    def close(self) -> None:
        """Stop threads and release the port; queued decisions are dropped."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AlarmSink:
    """Records alarms, logs them and calls the user's callback outside any lock."""

    def __init__(self, on_alarm: AlarmCallback | None, log: logging.Logger, keep: int = 10_000) -> None:
        self.alarms: list[Alarm] = []
        self.count = 0
        self._on_alarm = on_alarm
        self._log = log
        self._keep = keep

    def raise_(self, alarm: Alarm) -> None:
        self.count += 1
        self.alarms.append(alarm)
        if len(self.alarms) > self._keep:
            del self.alarms[: len(self.alarms) - self._keep]
        self._log.error("ALARM %s: %s", alarm.kind, alarm.message)
        if self._on_alarm is not None:
            try:
                self._on_alarm(alarm)
            except Exception:  # a broken callback must not stop delivery
                self._log.exception("on_alarm callback failed")


class NullLink(Link):
    """``--plc none``: accepts decisions and drops them."""

    def __init__(self) -> None:
        self.alarms = []
        self._counts = {"rejects": 0, "passes": 0}

    def send(self, part_id: int, reject: bool, delay_ms: int = 0) -> None:
        self._counts["rejects" if reject else "passes"] += 1

    def flush(self, timeout: float) -> bool:
        return True

    @property
    def healthy(self) -> bool:
        return True

    def stats(self) -> dict:
        return {"link": "none", **self._counts, "alarms": 0}

    def close(self) -> None:
        pass
