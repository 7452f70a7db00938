"""Frame sources and the shared pre-processing."""

import cv2
import numpy as np
import pytest

from edge.errors import FrameError, SourceError
from edge.preprocess import prepare, read_image
from edge.sources import ImageFolderSource, VideoFileSource, open_source


def test_video_file_frames_come_back_in_order_with_capture_times(tmp_path):
    path = tmp_path / "line.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (64, 48))
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(6)]
    for f in frames:
        writer.write(f)
    writer.release()
    with VideoFileSource(path) as src:
        got = list(src)
    assert [f.id for f in got] == list(range(6))
    assert all(np.array_equal(g.image, f) for g, f in zip(got, frames))  # FFV1 is lossless
    assert all(b.captured_at >= a.captured_at for a, b in zip(got, got[1:]))


def test_corrupt_jpeg_in_folder_yields_an_error_frame_not_a_skip(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((8, 8), np.uint8))
    frames = list(ImageFolderSource(tmp_path))
    assert [f.origin for f in frames] == ["a.png", "b.jpg", "c.png"]
    assert frames[1].image is None and "cannot decode" in frames[1].error
    assert frames[2].image.shape == (8, 8, 3)  # greyscale expanded to BGR


def test_exactly_one_source_is_required():
    with pytest.raises(SourceError):
        open_source()
    with pytest.raises(SourceError):
        open_source(video="a.mp4", images="dir")


def test_missing_video_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "none.mp4")


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 1), (40, 30, 3), (40, 30, 4)])
def test_prepare_brings_any_frame_to_bgr_at_input_size(shape):
    out = prepare(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8), (32, 48))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_prepare_refuses_float_frames():
    with pytest.raises(FrameError, match="8-bit"):
        prepare(np.zeros((4, 4, 3), np.float32), (4, 4))


def test_read_image_of_missing_file_is_a_frame_error(tmp_path):
    with pytest.raises(FrameError, match="missing"):
        read_image(tmp_path / "x.png")
