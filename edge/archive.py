"""Evidence archive: every rejected frame with a heat-map overlay, and a sample of passed frames.

Layout: `<dir>/<YYYY-MM-DD>/<part>_<verdict>.jpg` (the frame as the model saw it) and, for parts
the model inspected, `<part>_<verdict>_heat.jpg` (the anomaly map over the frame, NFA regions
boxed). A JSON sidecar `<part>_<verdict>.json` holds the decision record. The archive keeps under
`quota_bytes`: the oldest files go first. Writing runs on its own thread behind a bounded queue;
evidence that cannot be written (queue full, disk full) is counted, never blocks a decision.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np


def overlay(image: np.ndarray, amap: np.ndarray, regions: list, threshold: float | None = None) -> np.ndarray:
    """Colour the anomaly map (JET) over a BGR frame; NFA regions get red boxes."""
    a = amap.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if threshold is not None and np.isfinite(threshold):
        hi = max(hi, threshold)
    norm = np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(image, 0.55, heat, 0.45, 0)
    for r in regions:
        x0, y0, x1, y1 = r["bbox"]
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (0, 0, 255), 1)
    return out


class EvidenceArchive:
    def __init__(self, folder: str | Path, *, quota_bytes: int, pass_every: int = 100, jpeg_quality: int = 90,
                 queue_size: int = 32, on_alarm: Callable[[str, str], None] | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.quota = int(quota_bytes)
        self.pass_every = pass_every
        self.quality = int(jpeg_quality)
        self.on_alarm = on_alarm or (lambda kind, msg: None)
        self.counts = {"saved": 0, "skipped": 0, "errors": 0, "deleted": 0}
        self._passes = 0
        self._failing = False
        self._files: list[tuple[float, str, int]] = []  # (mtime, path, size), oldest first
        self._bytes = 0
        for root, _, names in os.walk(self.folder):
            for n in names:
                p = os.path.join(root, n)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                self._files.append((st.st_mtime, p, st.st_size))
                self._bytes += st.st_size
        self._files.sort()
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="archive", daemon=True)
        self._thread.start()

    def wants(self, reject: bool) -> bool:
        if reject:
            return True
        self._passes += 1
        return bool(self.pass_every) and self._passes % self.pass_every == 0

    def submit(self, record: dict, image: np.ndarray | None, amap: np.ndarray | None) -> None:
        try:
            self._q.put_nowait((record, image, amap))
        except queue.Full:
            self.counts["skipped"] += 1

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            try:
                self._save(*item)
                if self._failing:
                    self._failing = False
                    self.on_alarm("archive_recovered", f"evidence archive {self.folder} writable again")
            except (OSError, cv2.error) as err:
                self.counts["errors"] += 1
                if not self._failing:
                    self._failing = True
                    self.on_alarm("archive_disk", f"evidence archive {self.folder} cannot be written ({err}); "
                                                  "decisions go on without evidence")

    def _write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
        self._files.append((time.time(), str(path), len(data)))
        self._bytes += len(data)

    def _save(self, record: dict, image: np.ndarray | None, amap: np.ndarray | None) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(record.get("captured_at") or time.time()))
        folder = self.folder / day
        folder.mkdir(exist_ok=True)
        stem = f"{int(record['frame']):09d}_{record['verdict']}"
        blobs: list[tuple[Path, bytes]] = [(folder / f"{stem}.json", json.dumps(record, default=str).encode())]
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        if image is not None:
            ok, buf = cv2.imencode(".jpg", image, params)
            if ok:
                blobs.append((folder / f"{stem}.jpg", buf.tobytes()))
            if amap is not None:
                ok, buf = cv2.imencode(".jpg", overlay(image, amap, record.get("regions") or [], record.get("threshold")), params)
                if ok:
                    blobs.append((folder / f"{stem}_heat.jpg", buf.tobytes()))
        need = sum(len(b) for _, b in blobs)
        self._enforce(need)
        for path, data in blobs:
            self._write(path, data)
        self.counts["saved"] += 1

    def _enforce(self, incoming: int) -> None:
        while self._files and self._bytes + incoming > self.quota:
            _, path, size = self._files.pop(0)
            try:
                os.unlink(path)
                self.counts["deleted"] += 1
            except FileNotFoundError:
                pass
            self._bytes -= size

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> dict:
        return {**self.counts, "bytes": self._bytes}

    def close(self, timeout: float = 10.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)
