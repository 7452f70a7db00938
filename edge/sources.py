"""Frame sources: a camera, a video file or a folder of images, behind one interface.

Every source yields `Frame`s with a capture timestamp. A frame that cannot be read (a corrupt
file) still yields a `Frame` with `error` set, so the part behind it is rejected fail-safe
rather than skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import EdgeError, SourceError
from .preprocess import IMAGE_SUFFIXES, read_image

CAMERA_OPEN_TIMEOUT_S = 5.0


@dataclass
class Frame:
    id: int
    image: np.ndarray | None  # BGR uint8, None when error is set
    captured_at: float  # time.time() at capture
    origin: str  # file name, "video:<n>", "camera:<n>"
    error: str | None = None


class Source:
    """Iterate frames; close() releases the device."""

    name = "source"

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ImageFolderSource(Source):
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} not found")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(
                f"image folder {self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): point --images at the folder the camera writes to"
            )
        self.name = f"images:{self.folder}"

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            now = time.time()
            try:
                yield Frame(i, read_image(path), now, path.name)
            except EdgeError as err:
                yield Frame(i, None, now, path.name, error=str(err))


class _CaptureSource(Source):
    """Shared loop over an opened cv2.VideoCapture."""

    cap: cv2.VideoCapture

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, img = self.cap.read()
            now = time.time()
            if not ok:
                return
            yield Frame(i, img, now, f"{self.name}#{i}")
            i += 1

    def close(self) -> None:
        self.cap.release()


class VideoFileSource(_CaptureSource):
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"video file {path} not found")
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"video file {path} cannot be opened: corrupt or unsupported codec")
        self.name = f"video:{path.name}"


class CameraSource(_CaptureSource):
    def __init__(self, device: int | str, width: int = 0, height: int = 0, fps: float = 0):
        self.name = f"camera:{device}"
        quiet = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            start = time.monotonic()
            self.cap = cv2.VideoCapture(device)
            opened = self.cap.isOpened()
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
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height), (cv2.CAP_PROP_FPS, fps)):
            if value:
                self.cap.set(prop, value)


def open_source(*, video: str | None = None, images: str | None = None, camera: str | None = None) -> Source:
    """Open exactly one of the sources named on the command line."""
    given = [k for k, v in (("video", video), ("images", images), ("camera", camera)) if v is not None]
    if len(given) != 1:
        raise SourceError("give exactly one source: --camera N, --video FILE or --images DIR")
    if video is not None:
        return VideoFileSource(video)
    if images is not None:
        return ImageFolderSource(images)
    device: int | str = int(camera) if str(camera).isdigit() else str(camera)
    return CameraSource(device)
