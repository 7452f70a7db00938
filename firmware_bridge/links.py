"""``open_link(url)``: pick the PLC link from a URL.

* ``bridge:/dev/ttyUSB0?baud=115200&heartbeat_ms=200&failsafe_ms=1000`` (also ``bridge:loop://``)
* ``modbus-rtu:/dev/ttyUSB0?unit=1&coil=0&baud=19200`` or ``...?unit=1&reg=100``
* ``none``
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl

from .base import Alarm, AlarmCallback, Link, LinkError, NullLink

__all__ = ["Alarm", "Link", "LinkError", "NullLink", "open_link"]

SCHEMES = ("bridge", "modbus-rtu", "none")


def _split(url: str) -> tuple[str, str, dict[str, str]]:
    scheme, sep, rest = url.partition(":")
    if not sep and scheme != "none":
        raise LinkError(f"PLC link {url!r} has no scheme: use one of {', '.join(s + ':' for s in SCHEMES[:2])} "
                        "or none")
    # pyserial URLs carry their own '?': only a trailing query with '=' is ours.
    path, qsep, query = rest.rpartition("?")
    if not qsep or "=" not in query or "://" in query:
        path, query = rest, ""
    try:
        params = dict(parse_qsl(query, strict_parsing=bool(query)))
    except ValueError:
        raise LinkError(f"PLC link {url!r}: cannot parse options {query!r} (want key=value&key=value)") from None
    return scheme, path, params


def _build(cls, url: str, path: str, params: dict[str, str], **fixed):
    known = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = dict(fixed)
    for key, value in params.items():
        if key not in known or key in fixed:
            raise LinkError(f"PLC link {url!r}: unknown option {key!r}; known: "
                            f"{', '.join(k for k in known if k not in fixed)}")
        try:
            kwargs[key] = int(value)
        except ValueError:
            raise LinkError(f"PLC link {url!r}: option {key}={value!r} is not an integer") from None
    try:
        return cls(path, **kwargs)
    except (TypeError, ValueError) as exc:
        raise LinkError(f"PLC link {url!r}: {exc}") from None


def open_link(url: str, *, on_alarm: AlarmCallback | None = None) -> Link:
    """Open the link named by ``url``; raise LinkError with a one-line reason."""
    url = (url or "").strip()
    scheme, path, params = _split(url) if url != "none" else ("none", "", {})
    if scheme == "none":
        return NullLink()
    if not path:
        raise LinkError(f"PLC link {url!r} names no serial port, e.g. {scheme}:/dev/ttyUSB0")
    if scheme == "bridge":
        from .host import BridgeLink, BridgeLinkConfig
        return BridgeLink(_build(BridgeLinkConfig, url, path, params), on_alarm=on_alarm)
    if scheme == "modbus-rtu":
        from .modbus import ModbusConfig, ModbusLink
        return ModbusLink(_build(ModbusConfig, url, path, params), on_alarm=on_alarm)
    raise LinkError(f"PLC link {url!r}: unknown scheme {scheme!r}; use bridge:, modbus-rtu: or none")
