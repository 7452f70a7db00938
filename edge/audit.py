"""Append-only JSON-lines audit log: one record per decision, fsync in batches, size rotation.

The log is opened O_APPEND and only ever appended to; a full file is renamed to `<name>.1`
(older ones shift to `.2` … `.keep`, the oldest is deleted) and a fresh file is started.
Records are fsynced every `fsync_every` records or `fsync_interval_s` seconds, whichever
comes first, and always on `close()`.

When the disk fails (ENOSPC, EIO, a read-only remount) deciding goes on: records wait in a
bounded in-memory backlog and are retried on every write and tick, an alarm is raised once per
failing episode (and once when writing works again), and should the backlog overflow, the
overflow is counted as `lost` and alarmed — never silently dropped.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import time
from pathlib import Path
from typing import Callable


class AuditLog:
    def __init__(self, path: str | Path, *, fsync_every: int = 64, fsync_interval_s: float = 1.0,
                 max_bytes: int = 64 << 20, keep: int = 20, backlog: int = 100_000,
                 on_alarm: Callable[[str, str], None] | None = None,
                 fallback: Callable[[bytes], None] | None = None):
        self.path = Path(path)
        self.fsync_every = fsync_every
        self.fsync_interval_s = fsync_interval_s
        self.max_bytes = max(1, int(max_bytes))
        self.keep = keep
        self.backlog_limit = backlog
        self.on_alarm = on_alarm or (lambda kind, msg: None)
        self.fallback = fallback  # where records go that the disk would not take at exit (stderr)
        self.pending: collections.deque[bytes] = collections.deque()
        self.counts = {"written": 0, "lost": 0, "errors": 0, "rotations": 0, "fsyncs": 0}
        self.failing: str | None = None
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._write = os.write  # tests swap this to simulate a failing disk
        self.fd = -1
        self._size = 0
        self._open()

    # -- file handling -------------------------------------------------------------------
    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        self._sync()
        os.close(self.fd)
        self.fd = -1
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()
        try:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        self.counts["rotations"] += 1

    def _sync(self) -> None:
        if self.fd >= 0 and self._unsynced:
            try:
                os.fsync(self.fd)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EROFS):  # /dev/full, pipes cannot fsync
                    raise
            self._unsynced = 0
            self.counts["fsyncs"] += 1
        self._last_sync = time.monotonic()

    # -- API -----------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n").encode()
        self.pending.append(line)
        if len(self.pending) > self.backlog_limit:
            dropped = self.pending.popleft()
            if self.fallback is not None:
                self.fallback(dropped)
            self.counts["lost"] += 1
            if self.counts["lost"] == 1 or self.counts["lost"] % 1000 == 0:
                self.on_alarm("audit_lost", f"audit backlog full ({self.backlog_limit} records): "
                                            f"{self.counts['lost']} audit records lost so far")
        self._drain()

    def tick(self) -> None:
        """Retry a failing disk and fsync on the time interval (call a few times a second)."""
        if self.pending:
            self._drain()
        elif self._unsynced and time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self._guard(self._sync)

    def _guard(self, fn) -> bool:
        try:
            if self.fd < 0:
                self._open()
            fn()
            return True
        except OSError as err:
            self.counts["errors"] += 1
            if self.failing is None:
                self.failing = f"{self.path}: {err.strerror or err}"
                self.on_alarm("audit_disk", f"audit log {self.path} cannot be written ({err.strerror or err}): "
                                            "deciding goes on, records are held in memory")
            return False

    def _drain(self) -> None:
        def drain():
            while self.pending:
                data = self.pending[0]
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                n = self._write(self.fd, data)
                self._size += n
                if n < len(data):  # partial write: keep the rest, never a torn record on retry
                    self.pending[0] = data[n:]
                    continue
                self.pending.popleft()
                self.counts["written"] += 1
                self._unsynced += 1
            if self._unsynced >= self.fsync_every or time.monotonic() - self._last_sync >= self.fsync_interval_s:
                self._sync()

        if self._guard(drain) and self.failing is not None:
            self.on_alarm("audit_recovered", f"audit log {self.path} writable again; backlog written")
            self.failing = None

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def stats(self) -> dict:
        return {**self.counts, "backlog": self.backlog, "failing": self.failing is not None}

    def close(self, retry_s: float = 0.0) -> None:
        """Write what can be written (retrying a failing disk for up to `retry_s`), fsync, close."""
        end = time.monotonic() + retry_s
        self._drain()
        while self.pending and time.monotonic() < end:
            time.sleep(0.05)
            self._drain()
        if self.pending:
            self.counts["lost"] += len(self.pending)
            self.on_alarm("audit_lost", f"audit log {self.path}: {len(self.pending)} records could not be "
                                        "written before exit")
            if self.fallback is not None:
                for line in self.pending:
                    self.fallback(line)
            self.pending.clear()
        self._guard(self._sync)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
