"""Frame sources behind one interface: camera, video file, image folder (optionally watched),
RTSP/HTTP stream and GenICam (through the optional `harvesters` package).

Every source yields `Frame`s stamped at capture (wall clock for the record, monotonic clock for
deadlines). A frame that cannot be read (a corrupt file) still yields a `Frame` with `error`
set, so the part behind it is rejected fail-safe rather than skipped. `Frame.channels` is the
channel count the device or file delivered, before any expansion to BGR, so the runtime can
refuse a grayscale camera feeding a colour model.

Live sources (camera, stream, GenICam, a video replayed in real time) are wrapped in
`ReconnectingSource`: when the device drops or stops delivering they are reopened with
exponential back-off, and `down_since`/`last_error` tell the pipeline why no frames arrive
(the pipeline rejects the parts in the gap fail-safe).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import EdgeError, SourceError
from .preprocess import IMAGE_SUFFIXES, decode_image, read_image, to_bgr

CAMERA_OPEN_TIMEOUT_S = 5.0


@dataclass
class Frame:
    id: int
    image: np.ndarray | None  # BGR uint8, None when error is set
    captured_at: float  # time.time() at capture
    origin: str  # file name, "video:<name>#<n>", "camera:<n>#<n>"
    error: str | None = None
    channels: int = 3  # channels as delivered (1 for a grayscale camera), before expansion
    t_mono: float = 0.0  # time.monotonic() at capture (deadlines, latency)

    def __post_init__(self):
        if not self.t_mono:
            self.t_mono = time.monotonic()


def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else int(img.shape[2])


class Source:
    """Iterate frames; close() releases the device. `live`: frames arrive at the line's pace
    (the pipeline never blocks the capture and watches for stalls)."""

    name = "source"
    live = False

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def stop(self) -> None:
        """Ask the iterator to end at the next frame (safe from another thread)."""

    def status(self) -> dict:
        return {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_file_frame(i: int, path: Path) -> Frame:
    now = time.time()
    try:
        img = decode_image(path)
        channels = _channels(img)
        return Frame(i, to_bgr(img, str(path)), now, path.name, channels=channels)
    except EdgeError as err:
        return Frame(i, None, now, path.name, error=str(err))


class ImageFolderSource(Source):
    """A folder of images in name order; with `watch`, new files in arrival order, forever.

    Watch mode polls the folder every `poll_s`, takes a file once its size and mtime were the
    same on two polls (camera software may still be writing it), and orders new files by
    modification time, then name. Names already inspected are remembered while they stay in
    the folder.
    """

    def __init__(self, folder: str | Path, watch: bool = False, poll_s: float = 0.2):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} not found")
        self.watch = watch
        self.poll_s = poll_s
        self.name = f"images:{self.folder}"
        self._stop = threading.Event()
        self.idle_polls = 0
        self.last_poll = time.monotonic()
        if not watch:
            self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SourceError(
                    f"image folder {self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): point --images at "
                    "the folder the camera writes to, or add --watch to wait for files"
                )

    def __iter__(self) -> Iterator[Frame]:
        if not self.watch:
            for i, path in enumerate(self.files):
                if self._stop.is_set():
                    return
                yield _read_file_frame(i, path)
            return
        yield from self._watch()

    def _scan(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            with os.scandir(self.folder) as it:
                for entry in it:
                    if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    if entry.is_file():
                        out[entry.name] = (st.st_mtime_ns, st.st_size)
        except OSError as err:
            raise SourceError(f"image folder {self.folder} cannot be read ({err.strerror})") from None
        return out

    def _watch(self) -> Iterator[Frame]:
        seen: set[str] = set()
        previous: dict[str, tuple[int, int]] = {}
        i = 0
        while not self._stop.is_set():
            current = self._scan()
            self.last_poll = time.monotonic()
            seen &= set(current)  # forget files that were removed
            ready = [n for n, st in current.items() if n not in seen and previous.get(n) == st and st[1] > 0]
            previous = current
            ready.sort(key=lambda n: (current[n][0], n))
            for name in ready:
                seen.add(name)
                yield _read_file_frame(i, self.folder / name)
                i += 1
            if not ready:
                self.idle_polls += 1
                self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


class _CaptureSource(Source):
    """Shared loop over an opened cv2.VideoCapture."""

    cap: cv2.VideoCapture
    pace_fps: float = 0.0

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        start = time.monotonic()
        while True:
            if self.pace_fps:
                wait = start + i / self.pace_fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            ok, img = self.cap.read()
            now = time.time()
            if not ok or img is None:
                return
            yield Frame(i, img, now, f"{self.name}#{i}", channels=_channels(img))
            i += 1

    def close(self) -> None:
        self.cap.release()


class VideoFileSource(_CaptureSource):
    """A recorded video. `realtime`: replay at the file's frame rate, as a live line would."""

    def __init__(self, path: str | Path, realtime: bool = False):
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"video file {path} not found")
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"video file {path} cannot be opened: corrupt or unsupported codec")
        self.name = f"video:{path.name}"
        self.live = realtime
        if realtime:
            self.pace_fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 25.0


def _quiet_open(target, *args) -> cv2.VideoCapture:
    quiet = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(target, *args)
    finally:
        cv2.utils.logging.setLogLevel(quiet)


class CameraSource(_CaptureSource):
    """A USB/V4L2 camera by index or device path; resolution, fps and exposure from config."""

    live = True

    def __init__(self, device: int | str, width: int = 0, height: int = 0, fps: float = 0, exposure: float = 0):
        self.name = f"camera:{device}"
        quiet = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            start = time.monotonic()
            self.cap = cv2.VideoCapture(device)
            opened = self.cap.isOpened()
            if opened:
                for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                                    (cv2.CAP_PROP_FPS, fps)):
                    if value:
                        self.cap.set(prop, value)
                if exposure:
                    self.cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual
                    self.cap.set(cv2.CAP_PROP_EXPOSURE, exposure)
            ok = False
            while opened and time.monotonic() - start < CAMERA_OPEN_TIMEOUT_S:
                ok, _ = self.cap.read()
                if ok:
                    break
                time.sleep(0.05)
        finally:
            cv2.utils.logging.setLogLevel(quiet)
        if not opened or not ok:
            self.cap.release()
            raise SourceError(
                f"camera {device} not found or gives no frames: check the cable and the index "
                "(ls /dev/video*) or use --video/--images"
            )


class StreamSource(_CaptureSource):
    """An RTSP/HTTP(S) stream through OpenCV's FFmpeg backend, with open/read timeouts."""

    live = True

    def __init__(self, url: str, timeout_s: float = 5.0):
        if "://" not in url:
            raise SourceError(f"stream {url!r} is not a URL (rtsp://host/path or http://host/path)")
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout_s * 1000)]
        self.cap = _quiet_open(url, cv2.CAP_FFMPEG, params)
        shown = url.split("@")[-1] if "@" in url else url  # never log credentials
        self.name = f"stream:{shown}"
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"stream {shown} cannot be opened: check the URL, the network and the camera")


class GenICamSource(Source):
    """A GenICam (GigE Vision / USB3 Vision) camera through `harvesters` and a producer .cti."""

    live = True

    def __init__(self, cti: str, width: int = 0, height: int = 0, fps: float = 0, exposure: float = 0,
                 timeout_s: float = 5.0):
        try:
            from harvesters.core import Harvester
        except ImportError:
            raise SourceError("GenICam cameras need the harvesters package: pip install harvesters "
                              "(and the camera vendor's GenTL producer .cti)") from None
        if not Path(cti).is_file():
            raise SourceError(f"GenTL producer {cti} not found: pass the vendor's .cti file")
        self.name = f"genicam:{Path(cti).name}"
        self.timeout_s = timeout_s
        self.h = Harvester()
        self.h.add_file(cti)
        self.h.update()
        if not self.h.device_info_list:
            self.h.reset()
            raise SourceError(f"no GenICam camera found through {cti}: check the cable and the network")
        self.ia = self.h.create(0)
        nodes = self.ia.remote_device.node_map
        for node, value in (("Width", width), ("Height", height), ("AcquisitionFrameRate", fps), ("ExposureTime", exposure)):
            if value:
                try:
                    getattr(nodes, node).value = type(getattr(nodes, node).value)(value)
                except Exception as err:  # camera-specific node names
                    raise SourceError(f"GenICam camera refuses {node}={value} ({err})") from None
        self.ia.start()

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            try:
                with self.ia.fetch(timeout=self.timeout_s) as buf:
                    comp = buf.payload.components[0]
                    img = np.array(comp.data, copy=True).reshape(comp.height, comp.width, -1)
            except Exception:
                return  # reconnect through ReconnectingSource
            if img.shape[2] == 1:
                img = img[:, :, 0]
            if img.dtype == np.uint16:
                img = (img >> 8).astype(np.uint8)
            yield Frame(i, img, time.time(), f"{self.name}#{i}", channels=_channels(img))
            i += 1

    def close(self) -> None:
        try:
            self.ia.stop()
            self.ia.destroy()
        finally:
            self.h.reset()


class ReconnectingSource(Source):
    """Keep a live source open: reopen with exponential back-off when it drops or ends.

    `open_fn()` returns a new inner source or raises SourceError. The first open happens in the
    constructor so a wrong device is a clear error at start-up, not a silent retry loop.
    While the source is down, `down_since` (monotonic) and `last_error` say so.
    """

    live = True

    def __init__(self, open_fn: Callable[[], Source], min_s: float = 0.5, max_s: float = 30.0):
        self.open_fn = open_fn
        self.min_s, self.max_s = min_s, max(min_s, max_s)
        self.inner: Source | None = open_fn()
        self.name = self.inner.name
        self.reconnects = 0
        self.failed_opens = 0
        self.down_since: float | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Frame]:
        delay = self.min_s
        i = 0
        while not self._stop.is_set():
            inner = self.inner
            if inner is None:
                try:
                    inner = self.open_fn()
                except SourceError as err:
                    self.failed_opens += 1
                    self.last_error = str(err)
                    self._stop.wait(delay)
                    delay = min(self.max_s, max(delay * 2, 0.01))
                    continue
                with self._lock:
                    self.inner = inner
                self.reconnects += 1
                self.down_since = None
                delay = self.min_s
            try:
                for frame in inner:
                    if self._stop.is_set():
                        break
                    frame.id = i
                    i += 1
                    delay = self.min_s
                    yield frame
                reason = f"{self.name} stopped delivering frames"
            except Exception as err:  # a driver error is a drop, not the end of the service
                reason = f"{self.name} failed ({type(err).__name__}: {err})"
            with self._lock:
                self.inner = None
                try:
                    inner.close()
                except Exception:
                    pass
            if self._stop.is_set():
                return
            self.down_since = time.monotonic()
            self.last_error = reason

    def status(self) -> dict:
        return {"reconnects": self.reconnects, "failed_opens": self.failed_opens,
                "down": self.down_since is not None, "last_error": self.last_error}

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self.inner is not None:
                try:
                    self.inner.close()
                except Exception:
                    pass


def open_source(*, video: str | None = None, images: str | None = None, camera: str | None = None,
                stream: str | None = None, genicam: str | None = None, watch: bool = False,
                width: int = 0, height: int = 0, fps: float = 0, exposure: float = 0, realtime: bool = False,
                reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0, poll_s: float = 0.2) -> Source:
    """Open exactly one of the sources named on the command line."""
    given = [k for k, v in (("video", video), ("images", images), ("camera", camera), ("stream", stream),
                            ("genicam", genicam)) if v]
    if len(given) != 1:
        raise SourceError("give exactly one source: --camera N, --video FILE, --images DIR, --stream URL or --genicam CTI")
    if video:
        return VideoFileSource(video, realtime=realtime)
    if images:
        return ImageFolderSource(images, watch=watch, poll_s=poll_s)
    if stream:
        return ReconnectingSource(lambda: StreamSource(stream), reconnect_min_s, reconnect_max_s)
    if genicam:
        return ReconnectingSource(lambda: GenICamSource(genicam, width, height, fps, exposure), reconnect_min_s, reconnect_max_s)
    device: int | str = int(camera) if str(camera).isdigit() else str(camera)
    return ReconnectingSource(lambda: CameraSource(device, width, height, fps, exposure), reconnect_min_s, reconnect_max_s)


__all__ = ["Frame", "Source", "ImageFolderSource", "VideoFileSource", "CameraSource", "StreamSource",
           "GenICamSource", "ReconnectingSource", "open_source", "read_image"]
