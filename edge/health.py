"""Health: the systemd notify protocol (spoken directly, no libsystemd) and Prometheus metrics.

`Notifier` sends datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket):
`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`, `RELOADING=1`. Without `$NOTIFY_SOCKET`
(not under systemd) every call is a no-op. `watchdog_interval_s` comes from `$WATCHDOG_USEC`
(when `$WATCHDOG_PID` is unset or ours); the runtime pings at half of it, and only while
frames flow, so a hung camera or pipeline gets the service restarted.

`MetricsServer` serves `GET /metrics` in the Prometheus text format on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .errors import EdgeError


class Notifier:
    def __init__(self, env: dict | None = None):
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self.sock = None
        self.sent: list[str] = []
        if self.address:
            addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
            self._addr = addr
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval_s = 0.0
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_interval_s = int(usec) / 1e6
            except ValueError:
                pass
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, *fields: str) -> bool:
        if self.sock is None:
            return False
        text = "\n".join(fields)
        try:
            self.sock.sendto(text.encode(), self._addr)
            self.sent.append(text)
            if len(self.sent) > 100:
                del self.sent[:50]
            return True
        except OSError:
            self.errors += 1
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *( [f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def prometheus_text(metrics: dict[str, tuple[str, str, float]]) -> str:
    """{name: (type, help, value)} -> Prometheus text exposition format 0.0.4."""
    lines = []
    for name, (kind, help_, value) in metrics.items():
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {float(value):.10g}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, port: int, collect: Callable[[], dict], host: str = "127.0.0.1"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = prometheus_text(outer.collect()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.collect = collect
        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise EdgeError(f"metrics port {host}:{port} cannot be opened ({err.strerror}): pick another --metrics-port") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
