"""edge-inspect as the service runs it: the systemd notify protocol through a fake
$NOTIFY_SOCKET, SIGTERM mid-stream, SIGHUP reload, the metrics endpoint, the config file and
--check-config, and a log disk that is full."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from edge.preprocess import read_image
from tests.helpers import REPO, copy_ir, one_line_error, run_cli


def _video(synthetic_data, path: Path, n: int, fps: int = 20) -> Path:
    files = sorted((synthetic_data / "test").rglob("*.png"))
    imgs = [read_image(f) for f in files if "ground_truth" not in str(f)]
    h, w = imgs[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    for i in range(n):
        writer.write(imgs[i % len(imgs)])
    writer.release()
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "edge.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_notify_watchdog_metrics_and_sigterm_mid_stream_lose_no_decision(tmp_path, int8_ir, synthetic_data):
    video = _video(synthetic_data, tmp_path / "line.mkv", 400, fps=20)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    port = _free_port()
    audit = tmp_path / "audit.jsonl"
    proc = _start(["--model", str(int8_ir), "--video", str(video), "--source-realtime", "--audit-path", str(audit),
                   "--metrics-port", str(port), "--stdout", "false", "--health-status-interval-s", "0.5"],
                  env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
    seen: list[str] = []
    metrics = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                seen.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
            if any("READY=1" in m for m in seen) and sum("WATCHDOG=1" in m for m in seen) >= 2 and any(m.startswith("STATUS=") for m in seen):
                break
            assert proc.poll() is None, proc.stderr.read()
        assert any("READY=1" in m for m in seen), seen
        assert sum("WATCHDOG=1" in m for m in seen) >= 2, seen
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        while True:
            try:
                seen.append(sock.recv(4096).decode())
            except socket.timeout:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    assert proc.returncode == 0, err
    status = [m for m in seen if m.startswith("STATUS=")]
    assert any("fps" in m and "reject rate" in m for m in status), status
    assert any("STOPPING=1" in m for m in seen)
    assert "# TYPE edge_inspect_decisions_total counter" in metrics and "edge_inspect_fps " in metrics
    summary = json.loads(err.strip().splitlines()[-1].removeprefix("edge-inspect: "))
    recs = [r for r in _records(audit) if "frame" in r]
    # stopped mid-stream: fewer than all frames, and every frame read got exactly one record
    assert 0 < summary["frames"] < 400
    assert len(recs) == summary["decisions"] == summary["frames"]
    assert sorted(r["frame"] for r in recs) == list(range(summary["frames"]))
    assert summary["failsafe_by_reason"].get("shutdown", 0) == 0
    assert summary["audit"]["lost"] == 0 and summary["plc"]["sent"] == summary["decisions"]


def test_sighup_reloads_the_threshold_from_the_ir(tmp_path, int8_ir, synthetic_data):
    import openvino as ov

    from edge.metadata import update_info

    model = copy_ir(int8_ir, tmp_path / "tile.xml")
    video = _video(synthetic_data, tmp_path / "line.mkv", 200, fps=20)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    proc = _start(["--model", str(model), "--video", str(video), "--source-realtime", "--stdout", "false"],
                  env={"NOTIFY_SOCKET": sock_path})
    try:
        # SIGHUP only once the runtime says READY: its handlers are installed by then (a fixed sleep raced
        # the start-up on a loaded machine)
        deadline = time.monotonic() + 120
        ready = False
        while not ready and time.monotonic() < deadline:
            try:
                ready = "READY=1" in sock.recv(4096).decode()
            except socket.timeout:
                assert proc.poll() is None, proc.stderr.read()
        assert ready, "edge-inspect never sent READY=1"
        m = ov.Core().read_model(str(model))
        update_info(m, image_threshold=123.5)
        # write beside and rename: never truncate a .bin another process (or this one) has mapped
        ov.save_model(m, str(tmp_path / "new.xml"), compress_to_fp16=False)
        del m
        os.replace(tmp_path / "new.bin", model.with_suffix(".bin"))
        os.replace(tmp_path / "new.xml", model)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reloaded thresholds" in err and "-> 123.5" in err, err


def test_config_file_with_command_line_overrides_and_check_config(tmp_path, int8_ir, synthetic_data):
    images = synthetic_data / "test" / "good"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'model = "{int8_ir}"\ndecision = "score"\nstdout = false\n[source]\nimages = "{images}"\n'
                   f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    ok = run_cli("edge.cli", "--config", str(cfg), "--check-config", "--decision", "nfa", timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert 'decision = "nfa"  # command line' in ok.stdout and "configuration OK" in ok.stderr
    run = run_cli("edge.cli", "--config", str(cfg), "--max-frames", "3", timeout=120)
    assert run.returncode == 0, run.stderr
    recs = _records(tmp_path / "audit.jsonl")
    assert len(recs) == 3 and all(r["rule"] in ("score", "none") for r in recs) and run.stdout == ""
    # bad files and values: one line each
    cfg.write_text('model = "x.xml"\n[source]\ncamra = "0"\n')
    assert "unknown key 'source.camra'" in one_line_error(run_cli("edge.cli", "--config", str(cfg), "--check-config"), "edge-inspect")
    cfg.write_text('decision = "maybe"\n')
    assert "not one of nfa, score, both" in one_line_error(run_cli("edge.cli", "--config", str(cfg), "--check-config"), "edge-inspect")
    cfg.write_text('deadline_ms = [\n')
    assert "not valid TOML" in one_line_error(run_cli("edge.cli", "--config", str(cfg), "--check-config"), "edge-inspect")
    assert "config file" in one_line_error(run_cli("edge.cli", "--config", str(tmp_path / "none.toml")), "edge-inspect")


def test_full_log_disk_keeps_deciding_raises_an_alarm_and_drops_nothing_silently(tmp_path, int8_ir, synthetic_data):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    audit = tmp_path / "audit.jsonl"
    audit.symlink_to("/dev/full")  # every write: ENOSPC
    images = synthetic_data / "test" / "good"
    proc = run_cli("edge.cli", "--model", str(int8_ir), "--images", str(images), "--audit-path", str(audit), timeout=180)
    assert proc.returncode == 0, proc.stderr
    n = len(list(images.iterdir()))
    assert len(proc.stdout.splitlines()) == n  # every part decided
    assert "ALARM audit_disk" in proc.stderr and "No space left on device" in proc.stderr
    summary = json.loads(proc.stderr.strip().splitlines()[-1].removeprefix("edge-inspect: "))
    assert summary["decisions"] == n and summary["alarms"]["audit_disk"] == 1
    # what the disk would not take is counted, alarmed and written to stderr (the journal), never silently dropped
    fallback = [ln for ln in proc.stderr.splitlines() if ln.startswith("edge-inspect: audit-fallback: ")]
    assert summary["audit"]["lost"] == len(fallback) >= n
    assert "ALARM audit_lost" in proc.stderr


def test_plc_option_uses_the_firmware_bridge_links(tmp_path, int8_ir, synthetic_data):
    images = synthetic_data / "test" / "good"
    proc = run_cli("edge.cli", "--model", str(int8_ir), "--images", str(images), "--plc", "none", "--max-frames", "2", timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stderr.strip().splitlines()[-1].removeprefix("edge-inspect: "))
    assert summary["plc"]["kind"] == "none" and summary["plc"]["sent"] == 2
    line = one_line_error(run_cli("edge.cli", "--model", str(int8_ir), "--images", str(images), "--plc", "bridge:/dev/ttyNOPE9"), "edge-inspect")
    assert "/dev/ttyNOPE9" in line
    line = one_line_error(run_cli("edge.cli", "--model", str(int8_ir), "--images", str(images), "--plc", "foo:/dev/x"), "edge-inspect")
    assert "foo" in line
