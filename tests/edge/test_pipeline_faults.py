"""Pipeline faults, in process with a numpy stand-in model: every part gets exactly one decision,
and a part that cannot be decided in time is rejected fail-safe, counted and logged."""

import argparse
import errno
import json
import threading
import time

import numpy as np
import pytest

from edge.audit import AuditLog
from edge.errors import SourceError
from edge.pipeline import Pipeline
from edge.sources import Frame, ReconnectingSource
from tests.edge.edge_fakes import FakeModel, Recorder, ScriptedSource, make_cfg


def _run(source, model=None, audit=None, **cfg):
    cfg.setdefault("source.stall_timeout_s", 0.3)
    plc = Recorder()
    p = Pipeline(make_cfg(**cfg), model or FakeModel(), source, plc=plc, audit=audit, log=lambda m: None)
    summary = p.run()
    return p, plc, summary


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_each(plc, audit_path, summary):
    recs = [r for r in _records(audit_path) if "frame" in r]
    ids = [r["frame"] for r in recs]
    assert len(ids) == len(set(ids)) == summary["decisions"]
    assert sorted(i for i, _ in plc.sent) == sorted(ids)
    return recs


def test_every_frame_gets_one_record_and_one_plc_message(tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl")
    p, plc, s = _run(ScriptedSource(list(range(40)), live=False, bright={3, 17}), audit=audit)
    audit.close()
    recs = _one_each(plc, tmp_path / "a.jsonl", s)
    assert s["frames"] == s["decisions"] == 40 and s["failsafe"] == 0
    rejected = {r["frame"] for r in recs if r["verdict"] == "reject"}
    assert rejected == {3, 17}
    r3 = next(r for r in recs if r["frame"] == 3)
    assert r3["rule"] == "score+nfa" and r3["log10_nfa"] < 0 and r3["regions"][0]["area"] > 0
    for key in ("frame", "captured_at", "decided_at", "score", "log10_nfa", "verdict", "reason", "model_hash"):
        assert key in r3
    assert all(r["decided_at"] >= r["captured_at"] for r in recs)


def test_decision_rule_is_configurable_and_named():
    for rule, fired in (("score", "score"), ("nfa", "nfa")):
        p, plc, s = _run(ScriptedSource([0, 1], live=False, bright={1}), decision=rule)
        assert s["rejects"] == 1
    # a score-only reject: raise the NFA bar out of reach with epsilon, score fires alone
    p, plc, s = _run(ScriptedSource([0, 1], live=False, bright={1}), decision="both", nfa_epsilon=-1e9)
    assert s["rejects"] == 1


def test_video_stall_rejects_the_parts_in_the_gap(tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl")
    src = ScriptedSource([*range(5), 1.2, *range(5)], live=True, period_s=0.02)
    p, plc, s = _run(src, audit=audit, **{"source.part_rate_hz": 20.0})
    audit.close()
    recs = _one_each(plc, tmp_path / "a.jsonl", s)
    gap = [r for r in recs if r["origin"].startswith("gap:")]
    # 1.2 s stall at 20 parts/s: about 24 parts in the gap, all rejected fail-safe
    assert 15 <= len(gap) <= 30, len(gap)
    assert all(r["verdict"] == "reject" and r["rule"] == "failsafe" and "stalled" in r["reason"] for r in gap)
    assert s["failsafe_by_reason"]["source_gap"] == len(gap)
    assert s["alarms"].get("source") == 1
    assert sum(not r["origin"].startswith("gap:") for r in recs) == 10


def test_camera_disappears_and_reconnects(tmp_path):
    opens = {"n": 0}

    def open_fn():
        opens["n"] += 1
        if opens["n"] in (2, 3):
            raise SourceError("camera 0 not found or gives no frames")
        return ScriptedSource(list(range(5)), live=True, period_s=0.02, name="camera:0")

    src = ReconnectingSource(open_fn, min_s=0.3, max_s=0.6)
    audit = AuditLog(tmp_path / "a.jsonl")
    cfg = {"source.part_rate_hz": 10.0, "max_frames": 10}
    p, plc, s = _run(src, audit=audit, **cfg)
    audit.close()
    recs = _one_each(plc, tmp_path / "a.jsonl", s)
    assert s["source"]["reconnects"] == 1 and s["source"]["failed_opens"] == 2
    gap = [r for r in recs if r["origin"].startswith("gap:")]
    assert gap and all(r["verdict"] == "reject" and r["rule"] == "failsafe" for r in gap)
    down = [r for r in gap if "source down, reconnecting" in r["reason"]]
    assert down and any("camera 0 not found" in r["reason"] for r in down)
    assert all("reconnecting" in r["reason"] or "stalled" in r["reason"] for r in gap)
    assert s["frames"] == 10 and s["failsafe_by_reason"]["source_gap"] == len(gap)


def test_inference_errors_reject_failsafe_and_the_rest_goes_on():
    model = FakeModel(raise_on={3}, fail_on={5})
    p, plc, s = _run(ScriptedSource(list(range(12)), live=False), model=model)
    assert s["decisions"] == 12
    assert s["failsafe_by_reason"] == {"inference_error": 2}
    assert {pid for pid, rej in plc.sent if rej} == {3, 5}


def test_deadline_rejects_slow_parts_and_discards_late_results():
    model = FakeModel(delay_s=0.4, jobs=1)
    p, plc, s = _run(ScriptedSource(list(range(4)), live=False), model=model, deadline_ms=150.0)
    assert s["decisions"] == 4 and s["passes"] == 0
    assert s["failsafe_by_reason"]["deadline"] == 4
    assert len(plc.sent) == 4 and len({i for i, _ in plc.sent}) == 4


def test_full_queue_on_a_live_line_rejects_failsafe():
    model = FakeModel(delay_s=0.05, jobs=1)
    p, plc, s = _run(ScriptedSource(list(range(60)), live=True), model=model, queue_size=2)
    assert s["decisions"] == 60 and len(plc.sent) == 60
    assert s["failsafe_by_reason"].get("queue_full", 0) > 20


@pytest.mark.parametrize("image, color, wh, words", [
    (np.zeros((32, 32), np.uint8), "bgr", (0, 0), "grayscale"),
    (np.zeros((32, 32, 2), np.uint8), "bgr", (0, 0), "2 channels"),
    (np.zeros((30, 40, 3), np.uint8), "bgr", (32, 32), "is 40x30 but the camera is configured for 32x32"),
    (np.zeros((32, 32, 3), np.float32), "bgr", (0, 0), "8-bit"),
])
def test_bad_frames_are_rejected_failsafe_with_one_clear_reason(tmp_path, image, color, wh, words):
    ch = 1 if image.ndim == 2 else image.shape[2]
    frame = Frame(0, image, time.time(), "camera:0#0", channels=ch)
    audit = AuditLog(tmp_path / "a.jsonl")
    p, plc, s = _run(ScriptedSource([frame, 1], live=True), audit=audit,
                     **{"source.color": color, "source.width": wh[0], "source.height": wh[1]})
    audit.close()
    recs = {r["frame"]: r for r in _records(tmp_path / "a.jsonl")}
    assert recs[0]["verdict"] == "reject" and recs[0]["rule"] == "failsafe"
    assert words in recs[0]["reason"] and "\n" not in recs[0]["reason"]
    assert s["failsafe_by_reason"] == {"bad_frame": 1}


def test_grayscale_frames_pass_through_when_configured_gray():
    frame = Frame(0, np.full((32, 32), 40, np.uint8), time.time(), "camera:0#0", channels=1)
    p, plc, s = _run(ScriptedSource([frame], live=True), **{"source.color": "gray"})
    assert s["failsafe"] == 0 and s["decisions"] == 1


def test_log_disk_fills_deciding_goes_on_with_an_alarm_and_nothing_is_lost(tmp_path):
    alarms = []
    audit = AuditLog(tmp_path / "a.jsonl", fsync_every=4, on_alarm=lambda k, m: alarms.append(k))
    real = audit._write
    full = threading.Event()
    full.set()

    def write(fd, data):
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    audit._write = write
    threading.Timer(0.6, full.clear).start()
    src = ScriptedSource(list(range(30)), live=True, period_s=0.03)
    p, plc, s = _run(src, audit=audit)
    audit.close(retry_s=2.0)
    assert s["decisions"] == 30 and len(plc.sent) == 30  # kept deciding while the disk was full
    assert "audit_disk" in alarms and "audit_recovered" in alarms
    recs = [r for r in _records(tmp_path / "a.jsonl") if "frame" in r]
    assert sorted(r["frame"] for r in recs) == list(range(30))
    assert audit.stats()["lost"] == 0


def test_audit_backlog_overflow_is_counted_and_alarmed_never_silent(tmp_path):
    alarms, fallback = [], []
    audit = AuditLog(tmp_path / "a.jsonl", backlog=5, on_alarm=lambda k, m: alarms.append(k), fallback=fallback.append)
    audit._write = lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
    for i in range(20):
        audit.write({"frame": i})
    audit.close()
    assert audit.stats()["lost"] == 20 and len(fallback) == 20 and "audit_lost" in alarms


def test_audit_log_rotates_by_size_and_keeps_every_record(tmp_path):
    audit = AuditLog(tmp_path / "a.jsonl", max_bytes=2000, keep=50)
    for i in range(300):
        audit.write({"frame": i, "pad": "x" * 20})
    audit.close()
    files = sorted(tmp_path.glob("a.jsonl*"))
    assert len(files) > 3 and all(f.stat().st_size <= 2000 for f in files)
    frames = sorted(json.loads(line)["frame"] for f in files for line in f.read_text().splitlines())
    assert frames == list(range(300))


def test_sighup_reload_takes_new_thresholds_unless_overridden():
    model = FakeModel()
    p = Pipeline(make_cfg(), model, ScriptedSource([0], live=False), log=lambda m: None)
    model.info.image_threshold = 0.9
    p.reload()
    assert p.threshold == 0.9
    p2 = Pipeline(make_cfg(threshold=0.3), model, ScriptedSource([0], live=False), log=lambda m: None)
    model.info.image_threshold = 0.1
    p2.reload()
    assert p2.threshold == 0.3


def test_nfa_at_latent_size_gives_the_regions_of_the_input_size_map():
    from edge.decision import decide
    from edge.nfa import tree_nfa

    rng = np.random.default_rng(1)
    z = [rng.chisquare(24, (32, 32)), rng.chisquare(40, (16, 16)), rng.chisquare(112, (8, 8))]
    z[0][5:10, 7:12] += 300.0
    z[1][10:13, 2:4] += 5000.0
    full = tree_nfa(z, [24, 40, 112], (256, 256), 0.0)
    v = decide(0.0, z, rule="nfa", threshold=1.0, epsilon=0.0, channels=[24, 40, 112], size=(256, 256), top=10)
    assert v.verdict == "reject" and len(v.regions) == len(full.regions) >= 2
    assert v.log10_nfa == pytest.approx(full.min_log10_nfa, rel=1e-6)
    for got, ref in zip(v.regions, full.regions):
        assert got["area"] == ref.area and tuple(got["bbox"]) == ref.bbox
        assert got["log10_nfa"] == pytest.approx(ref.log10_nfa, abs=1e-3)


def test_nfa_exact_min_records_the_minimum_of_passing_parts_instead_of_the_bound(tmp_path):
    from edge import config

    assert config.load(argparse.Namespace(nfa_exact_min=True))["nfa_exact_min"] is True
    out = {}
    for exact in (False, True):
        audit = AuditLog(tmp_path / f"{exact}.jsonl")
        _run(ScriptedSource(list(range(6)), live=False), audit=audit, decision="nfa", nfa_exact_min=exact)
        audit.close()
        out[exact] = [r for r in _records(tmp_path / f"{exact}.jsonl") if "frame" in r]
    passes = [r for r in out[True] if r["verdict"] == "pass"]
    assert passes and all(isinstance(r["log10_nfa"], (int, float)) for r in passes)
    assert all("log10_nfa_bound" not in r for r in passes)
    # screened (the default): the same verdicts; passes whose trees were skipped carry the proven bound instead
    assert [r["verdict"] for r in out[False]] == [r["verdict"] for r in out[True]]
    for r in (r for r in out[False] if r["verdict"] == "pass" and r["log10_nfa"] is None):
        assert r["log10_nfa_bound"] >= 0.0


def test_evidence_archive_keeps_each_reject_with_its_heat_map_and_samples_passes(tmp_path):
    """With an archive the map is copied out of the inference (keep_map) and drawn over the frame."""
    from edge.archive import EvidenceArchive

    archive = EvidenceArchive(tmp_path / "ev", quota_bytes=50 << 20, pass_every=10)
    plc = Recorder()
    p = Pipeline(make_cfg(), FakeModel(), ScriptedSource(list(range(30)), live=False, bright={4, 21}), plc=plc,
                 archive=archive, log=lambda m: None)
    s = p.run()
    archive.close()
    files = sorted(f.name for f in (tmp_path / "ev").rglob("*") if f.is_file())
    assert s["rejects"] == 2
    for frame in (4, 21):
        stem = f"{frame:09d}_reject"
        assert {f"{stem}.json", f"{stem}.jpg", f"{stem}_heat.jpg"} <= set(files)
    assert len([f for f in files if f.endswith("_pass.json")]) == 28 // 10  # every 10th pass
    assert archive.stats()["errors"] == 0


def test_a_slow_output_keeps_every_decision_but_stops_holding_frames_for_the_archive(tmp_path):
    """With an evidence archive the queued decisions held frames and maps without bound while the
    output thread was behind; now at most EVIDENCE_BACKLOG of them do, the rest are archived as
    records alone, counted and alarmed, and no decision or PLC message is lost."""
    from edge.archive import EvidenceArchive
    from edge.pipeline import EVIDENCE_BACKLOG

    class SlowPlc(Recorder):
        def deliver(self, part_id, reject, score, delay_ms=0):
            time.sleep(0.01)
            super().deliver(part_id, reject, score, delay_ms)

    archive = EvidenceArchive(tmp_path / "ev", quota_bytes=200 << 20, pass_every=1)
    plc = SlowPlc()
    p = Pipeline(make_cfg(), FakeModel(), ScriptedSource(list(range(150)), live=False, bright={5, 140}), plc=plc,
                 archive=archive, log=lambda m: None)
    held = []
    put = p.out_q.put

    def watch(item, *a, **k):
        if isinstance(item, tuple) and len(item) == 3 and item[2] is not None:
            held.append(sum(1 for q in list(p.out_q.queue) if isinstance(q, tuple) and len(q) == 3 and q[2] is not None))
        put(item, *a, **k)

    p.out_q.put = watch
    s = p.run()
    archive.close()
    assert s["decisions"] == 150 and len(plc.sent) == 150
    assert max(held) <= EVIDENCE_BACKLOG <= 64
    assert p.counters.get("evidence_dropped_backlog") > 0 and p.counters.get("alarm:evidence_backlog") >= 1
    records = sorted(f.name for f in (tmp_path / "ev").rglob("*.json"))
    assert len(records) == 150  # every decision archived, with or without its images
