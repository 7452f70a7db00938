"""The PLC side of a decision: a `firmware_bridge` Link (`--plc URL`) or the simple decision line
(`--serial PORT`), behind one small interface. Delivery problems raise alarms, never exceptions:
the runtime keeps deciding and the bridge's own heartbeat fail-safe covers a dead link."""

from __future__ import annotations

from typing import Callable

from .errors import EdgeError


class PlcOutput:
    def __init__(self, plc: str = "none", serial: str = "", on_alarm: Callable[[str, str], None] | None = None):
        self.on_alarm = on_alarm or (lambda kind, msg: None)
        self.kind = "none"
        self.link = None
        self.line = None
        self.sent = 0
        self.errors = 0
        if serial:
            from firmware_bridge.line import LineLink, LinkError

            try:
                self.line = LineLink(serial)
            except LinkError as err:
                raise EdgeError(str(err)) from None
            self.kind = "serial"
        elif plc and plc != "none":
            from firmware_bridge.links import LinkError, open_link

            try:
                self.link = open_link(plc, on_alarm=lambda a: self.on_alarm(f"plc_{a.kind}", a.message))
            except LinkError as err:
                raise EdgeError(str(err)) from None
            self.kind = plc.partition(":")[0]

    def deliver(self, part_id: int, reject: bool, score: float | None, delay_ms: int = 0) -> None:
        try:
            if self.line is not None:
                self.line.send(part_id, reject, score if score is not None else float("nan"))
            elif self.link is not None:
                self.link.send(part_id, reject, delay_ms)
            self.sent += 1
        except Exception as err:  # LinkError from either link, or a serial exception
            self.errors += 1
            self.on_alarm("plc_send", f"decision for part {part_id} ({'reject' if reject else 'pass'}) not delivered: {err}")

    @property
    def healthy(self) -> bool:
        if self.link is not None:
            try:
                return bool(self.link.healthy)
            except Exception:
                return False
        return self.errors == 0 or self.sent > 0

    def stats(self) -> dict:
        out = {"kind": self.kind, "sent": self.sent, "errors": self.errors}
        if self.link is not None:
            try:
                out.update({f"link_{k}": v for k, v in self.link.stats().items() if isinstance(v, (int, float, str, bool))})
            except Exception:
                pass
        return out

    def flush(self, timeout: float) -> bool:
        if self.link is not None:
            try:
                return bool(self.link.flush(timeout))
            except Exception:
                return False
        return True

    def close(self) -> None:
        for obj in (self.link, self.line):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
