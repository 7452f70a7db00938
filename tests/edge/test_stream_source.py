"""A real network stream through `--stream URL`: an HTTP MJPEG server (multipart/x-mixed-replace,
what IP cameras serve) on a local thread, read by OpenCV's FFmpeg backend through
edge.sources.StreamSource inside ReconnectingSource. The stream drops mid-run and the server then
refuses connections for a while: the pipeline must reconnect, reject the parts passing in the gap
fail-safe, and give every part exactly one record and one PLC message. No ffmpeg binary needed."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest

from edge.audit import AuditLog
from edge.pipeline import Pipeline
from edge.sources import StreamSource, open_source

from tests.edge.edge_fakes import FakeModel, Recorder, make_cfg

pytestmark = pytest.mark.skipif(not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG),
                                reason="this OpenCV build has no FFmpeg backend: network streams cannot be read")


class MjpegServer:
    """Serves `per_session` JPEG frames per connection at `period_s`, then closes the connection
    (the stream drops). While `refuse_until` (monotonic) lies ahead, answers 503."""

    def __init__(self, per_session: int, period_s: float, bright=()):
        self.per_session, self.period_s, self.bright = per_session, period_s, set(bright)
        self.sent = 0
        self.sessions = 0
        self.refused = 0
        self.refuse_until = 0.0
        self.down_s = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if time.monotonic() < server.refuse_until:
                    server.refused += 1
                    self.send_error(503, "camera rebooting")
                    return
                server.sessions += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for _ in range(server.per_session):
                        i = server.sent
                        img = np.full((48, 64, 3), 200 if i in server.bright else 40, np.uint8)
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        self.wfile.flush()
                        server.sent += 1
                        time.sleep(server.period_s)
                except (BrokenPipeError, ConnectionResetError):
                    return
                server.refuse_until = time.monotonic() + server.down_s  # the camera drops, then reboots

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/video.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = MjpegServer(per_session=12, period_s=0.03, bright={4, 15})
    yield srv
    srv.close()


def test_stream_source_reads_mjpeg_frames_over_http(server):
    src = StreamSource(server.url, timeout_s=3.0)
    try:
        frames = list(src)
    finally:
        src.close()
    assert len(frames) == 12 and all(f.image.shape == (48, 64, 3) and f.channels == 3 for f in frames)
    assert frames[0].origin.startswith("stream:http://127.0.0.1:") and frames[-1].origin.endswith("#11")
    assert abs(float(frames[4].image.mean()) - 200) < 3 and abs(float(frames[0].image.mean()) - 40) < 3


def test_stream_drop_reconnects_and_rejects_the_gap_failsafe(server, tmp_path):
    server.down_s = 1.0  # after each session the server refuses for 1 s
    src = open_source(stream=server.url, reconnect_min_s=0.1, reconnect_max_s=0.4)
    audit = AuditLog(tmp_path / "a.jsonl")
    plc = Recorder()
    cfg = make_cfg(**{"source.stall_timeout_s": 0.3, "source.part_rate_hz": 10.0, "max_frames": 24})
    t0 = time.monotonic()
    p = Pipeline(cfg, FakeModel(size=(32, 32)), src, plc=plc, audit=audit, log=lambda m: None)
    s = p.run()
    audit.close()
    src.close()
    assert time.monotonic() - t0 < 20
    recs = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    parts = [r for r in recs if "frame" in r]
    alarms = [r for r in recs if r.get("event") == "alarm"]
    # one record and one PLC message per part, stream frames and gap parts alike
    ids = [r["frame"] for r in parts]
    assert len(ids) == len(set(ids)) == s["decisions"] == len(plc.sent)
    assert sorted(i for i, _ in plc.sent) == sorted(ids)
    stream = [r for r in parts if r["origin"].startswith("stream:")]
    gap = [r for r in parts if r["origin"].startswith("gap:")]
    assert s["frames"] == len(stream) == 24
    # the frames that came through were inspected: the bright ones rejected by the model, the rest passed
    stream.sort(key=lambda r: r["frame"])  # part ids follow capture order
    assert [i for i, r in enumerate(stream) if r["verdict"] == "reject"] == [4, 15]
    assert all(r["rule"] != "failsafe" for r in stream)
    # the drop: reconnect with failed opens (503) in between, the gap rejected fail-safe at the part rate
    assert s["source"]["reconnects"] >= 1 and s["source"]["failed_opens"] >= 1 and server.refused >= 1
    assert server.sessions >= 2
    assert gap and all(r["verdict"] == "reject" and r["rule"] == "failsafe" for r in gap)
    assert any("source down, reconnecting" in r["reason"] for r in gap)
    assert 5 <= len(gap) <= 40, len(gap)  # ~1.3 s without frames at 10 parts/s
    assert s["failsafe_by_reason"]["source_gap"] == len(gap) == s["failsafe"]
    assert s["alarms"].get("source", 0) >= 1 and any(a["kind"] == "source" for a in alarms)
