"""Codec behaviour, C/Python agreement and malformed-input robustness."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol as p
from firmware_bridge.bridge import BridgeConfig, BridgeCore
from firmware_bridge.ccore import CCodec, CCore

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def cc(c_lib):
    return CCodec(c_lib)


def doc_vectors():
    """(type, epoch, seq, fields, hex) rows from the test-vector block of docs/protocol.md."""
    text = DOC.read_text()
    block = text.split("```vectors", 1)[1].split("```", 1)[0]
    rows = []
    for line in block.strip().splitlines():
        lhs, hexstr = (s.strip() for s in line.split("->"))
        name, epoch, seq, *fields = lhs.split()
        rows.append((getattr(p, name), int(epoch, 0), int(seq, 0), [int(f, 0) for f in fields], hexstr))
    return rows


def test_crc16_matches_the_ccitt_false_check_value(cc):
    assert p.crc16(b"123456789") == 0x29B1
    assert p.crc16_fast(b"123456789") == 0x29B1
    assert cc.crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 256, 508, 509, 600])
def test_cobs_round_trips_around_block_boundaries(cc, n):
    for data in (bytes(n), bytes(range(1, 256)) * 3, bytes(random.Random(n).randbytes(n))):
        data = data[:n]
        enc = p.cobs_encode(data)
        assert 0 not in enc
        assert p.cobs_decode(enc) == data
        assert cc.cobs_encode(data) == enc
        assert cc.cobs_decode(enc) == data


def test_documented_vectors_encode_identically_in_python_and_c(cc):
    rows = doc_vectors()
    assert len(rows) >= 5
    for type_, epoch, seq, fields, hexstr in rows:
        wire = p.make(type_, epoch, seq, *fields)
        assert wire.hex() == hexstr, p.TYPE_NAMES[type_]
        assert cc.encode_frame(type_, epoch, seq, p.BODY[type_].pack(*fields)) == wire
        assert p.decode_frame(wire[:-1]).fields() == tuple(fields)


def test_c_and_python_codecs_agree_on_10000_random_frames_both_ways(cc):
    rng = random.Random(7)
    for _ in range(10_000):
        f = p.Frame(rng.randrange(256), rng.randrange(65536), rng.randrange(65536),
                    rng.randbytes(rng.randrange(p.MAX_BODY + 1)))
        py_wire = p.encode_frame(f)
        c_wire = cc.encode_frame(f.type, f.epoch, f.seq, f.body)
        assert c_wire == py_wire
        assert cc.decode_frame(py_wire[:-1]) == (f.type, f.epoch, f.seq, f.body)
        assert p.decode_frame(c_wire[:-1]) == f


def test_stream_decoder_resyncs_after_garbage_truncation_and_oversize():
    good = p.make(p.PASS, 1, 2, 99)
    stream = (b"\x13\x37noise\x00" + good + good[:4] + b"\x00" + b"\xff" * 80 + b"\x00"
              + good + b"\x00\x00" + b"\x03\x01\x02\x00" + good)
    items = p.StreamDecoder().feed(stream)
    kinds = [type(i).__name__ if isinstance(i, p.FrameError) else "ok" for i in items]
    assert kinds == ["FrameError", "ok", "FrameError", "FrameError", "ok", "FrameError", "ok"]
    assert [i.reason for i in items if isinstance(i, p.FrameError)] == ["cobs", "cobs", "size", "short"]


def test_stream_decoder_gives_the_same_frames_for_any_chunking():
    rng = random.Random(3)
    wire = b"".join(p.make(p.REJECT, 1, s, s * 7, s, 0) for s in range(200))
    ref = p.StreamDecoder().feed(wire)
    dec, got, i = p.StreamDecoder(), [], 0
    while i < len(wire):
        n = rng.randrange(1, 40)
        got += dec.feed(wire[i:i + n])
        i += n
    assert got == ref and len(ref) == 200


def _single_bit_errors(wire: bytes):
    """Every frame chunk that one flipped bit (never of the delimiter) turns ``wire`` into."""
    for i in range(len(wire) - 1):
        for bit in range(8):
            bad = bytearray(wire[:-1])
            bad[i] ^= 1 << bit
            yield from (chunk for chunk in bytes(bad).split(b"\x00") if chunk)


def test_single_bit_errors_are_always_detected_in_both_codecs(cc):
    wire = p.make(p.REJECT, 0xBEEF, 0x0102, 0xDEADBEEF, 250, 0)
    for chunk in _single_bit_errors(wire):
        with pytest.raises(p.FrameError):
            p.decode_frame(chunk)
        assert isinstance(cc.decode_frame(chunk), int)


def test_a_bit_flip_that_slips_past_the_crc_only_shortens_the_body_and_is_refused(cc):
    """The CRC's blind spot, pinned down: when a frame's CRC ends in 0x00, a flip in its last
    COBS code byte can drop that zero, and the shorter frame still checks (a zero residue
    stays zero). It keeps type, epoch and seq but its body is one byte short, so the per-type
    length check refuses it (the bridge NAKs BAD_LENGTH; the host sends the frame again)."""
    rng = random.Random(7)
    frames = []
    while len(frames) < 40:  # frames whose CRC ends in 0x00: about 1 in 256
        kind = rng.choice([p.REJECT, p.PASS])
        fields = (rng.getrandbits(32), 0, 0) if kind == p.REJECT else (rng.getrandbits(32),)
        wire = p.make(kind, rng.randrange(1, 0x10000), rng.randrange(1, 0x10000), *fields)
        if p.cobs_decode(wire[:-1])[-1] == 0:
            frames.append((wire, p.decode_frame(wire[:-1])))
    slipped = 0
    for wire, good in frames:
        for chunk in _single_bit_errors(wire):
            try:
                f = p.decode_frame(chunk)
            except p.FrameError:
                assert isinstance(cc.decode_frame(chunk), int)
                continue
            slipped += 1
            assert (f.type, f.epoch, f.seq, f.body) == (good.type, good.epoch, good.seq, good.body[:-1])
            assert cc.decode_frame(chunk) == (f.type, f.epoch, f.seq, f.body)
            with pytest.raises(p.FrameError, match="length"):
                f.fields()
    assert slipped > 0  # the blind spot is real; this test fails if the codec ever changes


def _both_cores(c_lib):
    out = []
    for cls in (BridgeCore, CCore):
        tx, act, outs = [], [], []
        kw = {"lib": c_lib} if cls is CCore else {}
        core = cls(BridgeConfig(failsafe_ms=300, pulse_ms=20), 0x55AA, 0, tx.append, act.append,
                   lambda r, a, outs=outs: outs.append((r, a)), **kw)
        out.append((core, tx, act, outs))
    return out


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_random_bytes_never_crash_either_core_and_both_answer_alike(c_lib, chunks):
    cores = _both_cores(c_lib)
    for t, chunk in enumerate(chunks):
        for core, *_ in cores:
            core.feed(chunk, t * 7)
            core.tick(t * 7)
    (a, *ra), (b, *rb) = cores
    assert ra == rb
    assert a.stats() == b.stats()


def _mutated(draw_rng: random.Random) -> bytes:
    type_ = draw_rng.choice([p.REJECT, p.PASS, p.HEARTBEAT])
    fields = {p.REJECT: (draw_rng.randrange(6), draw_rng.choice([0, 0, 5, 40]), draw_rng.randrange(3)),
              p.PASS: (draw_rng.randrange(6),), p.HEARTBEAT: (draw_rng.choice([0, 100, 300]),)}[type_]
    f = bytearray(p.make(type_, draw_rng.randrange(3), draw_rng.randrange(8), *fields))
    op = draw_rng.randrange(6)
    if op == 0 and len(f) > 2:
        del f[draw_rng.randrange(len(f) - 1)]          # truncate / drop a byte
    elif op == 1:
        f[draw_rng.randrange(len(f) - 1)] ^= 1 << draw_rng.randrange(8)  # bit error
    elif op == 2:
        f[-1:-1] = draw_rng.randbytes(draw_rng.randrange(1, 60))          # oversize / garbage
    return bytes(f)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(1, 60))
def test_mutated_frame_streams_give_identical_replies_and_actuations(c_lib, seed, n):
    rng = random.Random(seed)
    cores = _both_cores(c_lib)
    now = 0
    for _ in range(n):
        data = _mutated(rng)
        now += rng.choice([0, 1, 5, 30, 200, 400])
        enc = rng.random() < 0.1
        for core, *_ in cores:
            core.feed(data, now)
            core.tick(now)
            if enc:
                core.encoder_tick(now)
    (a, *ra), (b, *rb) = cores
    assert ra == rb
    assert a.stats() == b.stats()


def test_cores_agree_on_a_long_random_session(c_lib):
    """20 000 frames of mixed valid, duplicated and broken traffic, with time and encoder ticks."""
    rng = random.Random(11)
    cores = _both_cores(c_lib)
    now = 0
    for _ in range(20_000):
        data = _mutated(rng) if rng.random() < 0.3 else p.make(
            p.REJECT, 1, rng.randrange(40), rng.randrange(100), rng.choice([0, 0, 3, 25]), rng.randrange(2))
        now += rng.choice([0, 1, 2, 10, 50, 500])
        enc = rng.random() < 0.2
        for core, *_ in cores:
            core.feed(data, now)
            core.tick(now)
            if enc:
                core.encoder_tick(now)
    (a, ta, aa, oa), (b, tb, ab, ob) = cores
    assert ta == tb and aa == ab and oa == ob
    assert a.stats() == b.stats()
    assert a.stats()["actuations"] > 100 and a.stats()["rx_errors"] > 100 and a.stats()["duplicates"] > 100


def test_unknown_and_short_bodies_are_nakked_not_acted_on(c_lib):
    for core, tx, act, _ in _both_cores(c_lib):
        tx.clear()
        core.feed(p.encode_frame(p.Frame(p.REJECT, 1, 1, b"\x01\x02")), 1)
        core.feed(p.encode_frame(p.Frame(0x40, 1, 2, b"")), 2)
        core.feed(p.make(p.REJECT, 1, 3, 5, 0, 9), 3)
        naks = [p.decode_frame(x[:-1]).fields()[0] for x in tx]
        assert naks == [p.NAK_BAD_LENGTH, p.NAK_BAD_TYPE, p.NAK_BAD_VALUE]
        assert act == []


def test_sanitized_c_core_survives_a_malformed_corpus(tmp_path):
    """Build the core with ASan/UBSan into a stdin-driven harness and feed it broken traffic."""
    import shutil
    import subprocess

    from firmware_bridge.ccore import FIRMWARE_DIR
    harness = Path(__file__).with_name("fuzz_harness.c")
    exe = tmp_path / "fuzz"
    cmd = ["gcc", "-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           f"-I{FIRMWARE_DIR}", str(harness), str(FIRMWARE_DIR / "bridge_core.c"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and "asan" in res.stderr.lower() and shutil.which("gcc"):
        pytest.fail(f"sanitizer build failed (libasan missing?): {res.stderr[-400:]}")
    assert res.returncode == 0, res.stderr
    rng = random.Random(5)
    corpus = b"".join(_mutated(rng) if rng.random() < 0.7 else rng.randbytes(rng.randrange(200))
                      for _ in range(20_000))
    run = subprocess.run([str(exe)], input=corpus, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    counts = dict(kv.split("=") for kv in run.stdout.decode().split())
    assert int(counts["frames_out"]) > 10_000 and int(counts["actuations"]) > 0
