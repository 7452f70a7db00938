"""Image pre-processing shared by the host and the edge.

Frames travel as 8-bit BGR images (OpenCV's native order). The model's own normalisation
(BGR->RGB, mean/scale) sits inside the OpenVINO graph; what stays outside is only what depends
on the frame: reading, channel expansion and resizing to the model's input size. The trainer
calls the same functions, so training-time and edge-time inputs are byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import FrameError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file as stored (any channel count and depth); FrameError if unreadable."""
    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise FrameError(f"cannot read image {path}: file missing or empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FrameError(f"cannot decode image {path}: corrupt or unsupported file")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit BGR (H, W, 3). Greyscale files are expanded to three channels."""
    return to_bgr(decode_image(path), str(path))


def to_bgr(img: np.ndarray, what: str = "frame") -> np.ndarray:
    """Bring a decoded frame to 8-bit, 3-channel BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise FrameError(f"{what}: unsupported pixel type {img.dtype}, expected 8-bit")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    raise FrameError(f"{what}: unsupported shape {img.shape}, expected H x W x 1/3/4")


def resize_to_input(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a BGR frame to the model input (height, width) with area interpolation."""
    h, w = size
    if img.shape[:2] == (h, w):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if img.shape[0] >= h and img.shape[1] >= w else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def prepare(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Any decoded frame -> contiguous uint8 BGR (height, width, 3) at the model's input size."""
    return resize_to_input(to_bgr(img), size)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ground-truth mask to (height, width) and binarise it."""
    h, w = size
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    out = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return out > 127
