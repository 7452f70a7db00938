"""Delivery guarantees of BridgeLink against the simulator over a real pty pair."""

from __future__ import annotations

import collections
import logging
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
import tty

import pytest

from firmware_bridge import protocol as p

from firmware_bridge.host import BridgeLink, BridgeLinkConfig

from bridge_helpers import SimProcess, soak_n

CORES = ["python", "c"]


@pytest.fixture
def sim_factory(tmp_path, c_lib_path):
    sims = []

    def start(core="python", **kw):
        sims.append(SimProcess(tmp_path, core=core, lib=str(c_lib_path) if core == "c" else None, **kw))
        return sims[-1]

    yield start
    for s in sims:
        s.stop()


def pace(link, limit=64):
    while link.stats()["queued"] > limit:
        time.sleep(0.0005)


@pytest.mark.parametrize("core", CORES)
def test_soak_every_reject_actuates_exactly_once_under_faults_and_unplugs(sim_factory, core, caplog):
    """1 % corrupt, 0.5 % drop, 0.5 % duplicate per frame in both directions, three unplugs."""
    n = soak_n(100_000)  # ~20 s per core here; BRIDGE_SOAK_N=5000 for a quick run
    sim = sim_factory(core, faults="corrupt=0.01 drop=0.005 duplicate=0.005", seed=n)
    rng = random.Random(n)
    caplog.set_level(logging.WARNING, logger="firmware_bridge")
    link = BridgeLink(BridgeLinkConfig(sim.port, deadline_ms=10_000))
    rejects, t0 = set(), time.monotonic()
    try:
        for i in range(n):
            reject = rng.random() < 0.05
            if reject:
                rejects.add(i)
            link.send(i, reject)
            pace(link)
            if i in (n // 4, n // 2, 3 * n // 4):
                sim.command("unplug 0.3")
        assert link.flush(30), link.stats()
        elapsed = time.monotonic() - t0
    finally:
        link.close()
    host = link.stats()  # after close: the reader thread has stopped, so its log and its counters agree
    bridge = sim.command("stats")
    sim.stop()
    acts = collections.Counter(sim.actuations())
    print(f"\n{core}: {n} decisions in {elapsed:.1f} s ({n / elapsed:.0f}/s); host {host}; bridge {bridge}")

    assert set(acts) == rejects, "lost or spurious rejects"
    assert max(acts.values()) == 1, "duplicated actuation"
    assert link.alarms == []
    # A PASS goes out at most 1 + pass_retries times, then the host counts it dropped (docs/protocol.md):
    # with 1.5 % of frames lost on the way in, all four copies die about once in 20 million PASSes.
    # Every PASS is processed once or counted by the host as given up; none is processed twice.
    given_up = host.get("passes_dropped", 0)
    assert n - len(rejects) - given_up <= bridge["passes"] <= n - len(rejects), "a PASS was processed twice or lost"
    inj = bridge["injected"]
    assert inj["corrupt_rx"] > 0 and inj["drop_rx"] > 0 and inj["duplicate_rx"] > 0
    # Every anomaly is seen and logged: broken frames on both sides, each unplug and replug.
    assert bridge["rx_errors"] >= inj["corrupt_rx"]
    bad_frames = [r for r in caplog.records if r.getMessage().startswith("bad frame from bridge")]
    assert len(bad_frames) == host["rx_errors"] >= inj["corrupt_tx"] - 10  # a few die with the pty
    assert host["disconnects"] == host["reconnects"] == 3
    assert sum("reconnecting" in r.getMessage() for r in caplog.records) == 3
    assert sum(r.getMessage().startswith("reconnected") for r in caplog.records) == 3
    assert host["retransmits"] >= inj["drop_rx"] // 2
    assert bridge["duplicates"] > 0


HOST_SCRIPT = textwrap.dedent("""
    import sys, time
    from firmware_bridge.host import BridgeLink, BridgeLinkConfig
    link = BridgeLink(BridgeLinkConfig(sys.argv[1], heartbeat_ms=100, failsafe_ms=int(sys.argv[2])))
    for i in range(20):
        link.send(i, i % 5 == 0)
    assert link.flush(5)
    while not link.healthy:
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.mark.parametrize("core", CORES)
def test_failsafe_output_rises_within_timeout_after_host_is_killed(sim_factory, core):
    failsafe_ms = 400
    sim = sim_factory(core)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, sim.port, str(failsafe_ms)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert host.stdout.readline().strip() == "ready"
        assert sim.events("outputs")[-1]["alarm"] is False
        time.sleep(0.25)
        t_kill = time.monotonic()
        os.kill(host.pid, signal.SIGKILL)
        host.wait(5)
        deadline = t_kill + 3
        while time.monotonic() < deadline:
            raised = [e for e in sim.events("outputs") if e["alarm"] and e["t"] > t_kill]
            if raised:
                break
            time.sleep(0.01)
        else:
            pytest.fail("fail-safe output never rose")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(5)
    latency_ms = 1000 * (raised[0]["t"] - t_kill)
    print(f"\n{core}: fail-safe output on {latency_ms:.1f} ms after SIGKILL (failsafe_ms={failsafe_ms})")
    assert raised[0]["reject"] is True  # fail-safe also holds the reject output
    assert failsafe_ms - 100 - 20 <= latency_ms <= failsafe_ms + 50
    assert any(e["event"] == "outputs" for e in sim.events())


def test_reject_is_alarmed_not_actuated_when_its_deadline_passes(sim_factory):
    sim = sim_factory()
    alarms = []
    link = BridgeLink(BridgeLinkConfig(sim.port, deadline_ms=150), on_alarm=alarms.append)
    try:
        link.send(1, True)
        assert link.flush(2) and link.healthy
        sim.command("unplug 0.6")
        time.sleep(0.05)
        link.send(2, True)
        link.send(3, False)
        time.sleep(0.3)
        assert [(a.kind, a.part_id) for a in alarms] == [("deadline", 2)]
        assert not link.healthy
        time.sleep(0.6)
        link.send(4, True)
        assert link.flush(3)
        assert link.healthy
        stats = link.stats()
    finally:
        link.close()
    assert sim.actuations() == [1, 4]
    assert stats["rejects_expired"] == 1 and stats["passes_dropped"] == 1
    assert link.alarms == alarms


def test_bridge_reboot_keeps_the_queue_and_alarms_the_unconfirmed_rejects(sim_factory):
    sim = sim_factory()
    link = BridgeLink(BridgeLinkConfig(sim.port, deadline_ms=3000))
    try:
        link.send(100, True, delay_ms=400)   # ACKed, scheduled at the bridge, lost by the reboot
        assert link.flush(2)
        for i in range(200):
            link.send(i, i % 10 == 0)
            if i == 100:
                sim.command("reboot")
        assert link.flush(5)
        time.sleep(0.6)
        stats = link.stats()
    finally:
        link.close()
    acts = collections.Counter(sim.actuations())
    kinds = [a.kind for a in link.alarms]
    assert kinds == ["bridge_reboot"] and stats["bridge_reboots"] == 1
    assert set(acts) == {100} | set(range(0, 200, 10))
    assert acts[100] == 1, "the scheduled reject was not re-sent after the reboot"
    twice = {p for p, c in acts.items() if c > 1}
    assert all(str(p) in link.alarms[0].message for p in twice), "a double actuation went unannounced"


def test_delayed_reject_fires_after_its_delay_in_ms_and_in_encoder_ticks(sim_factory):
    sim = sim_factory()
    link = BridgeLink(BridgeLinkConfig(sim.port))
    try:
        t0 = time.monotonic()
        link.send(7, True, delay_ms=150)
        link.send(8, True, delay_ticks=5)
        assert link.flush(2)
        time.sleep(0.3)
        sim.command("encoder 4")
        assert sim.actuations() == [7]
        sim.command("encoder 1")
        assert sim.actuations() == [7, 8]
    finally:
        link.close()
    t_act = sim.events("actuate")[0]["t"]
    assert 0.14 <= t_act - t0 <= 0.2


def test_delayed_bridge_replies_cause_retransmits_but_no_double_actuation(sim_factory):
    sim = sim_factory(faults="delay=0.05 delay_ms=80")
    link = BridgeLink(BridgeLinkConfig(sim.port, deadline_ms=5000))
    try:
        for i in range(1000):
            link.send(i, i % 3 == 0)
            pace(link)
        assert link.flush(10)
        stats = link.stats()
    finally:
        link.close()
    acts = collections.Counter(sim.actuations())
    assert set(acts) == set(range(0, 1000, 3)) and max(acts.values()) == 1
    assert stats["retransmits"] > 0 and sim.command("stats")["passes"] == 666


def run_scripted_bridge(sends, answer, done, **config):
    """A BridgeLink on one end of a pty, this test on the other: `answer(frame)` gives the reply
    bytes to each host frame (or None). Runs until done() (3 s at most), then flushes and closes
    the link. Returns its stats and alarms."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    alarms = []
    link = BridgeLink(BridgeLinkConfig(os.ttyname(slave), **config), on_alarm=alarms.append)
    decoder = p.StreamDecoder()
    try:
        for part_id, reject in sends:
            link.send(part_id, reject)
        deadline = time.monotonic() + 3
        while not done() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:
                for frame in decoder.feed(os.read(master, 256)):
                    reply = answer(frame)
                    if reply:
                        os.write(master, reply)
        assert link.flush(2)
        return link.stats(), alarms
    finally:
        link.close()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("kind", ["PASS", "REJECT"])
def test_a_frame_the_line_shortened_is_sent_again_not_dropped(kind):
    """A bit flip can shorten a frame past the CRC (see the codec test); the bridge then NAKs
    BAD_LENGTH with the frame's seq. The host made the frame well-formed, so it sends it again."""
    seen = []

    def answer(f):
        if f.type != getattr(p, kind):
            return None
        seen.append(f.seq)
        if len(seen) == 1:
            return p.make(p.NAK, 0x1234, f.seq, p.NAK_BAD_LENGTH, 0)
        return p.make(p.ACK, 0x1234, f.seq, 0)

    stats, alarms = run_scripted_bridge([(7, kind == "REJECT")], answer, lambda: len(seen) >= 2)
    assert len(seen) == 2 and seen[0] == seen[1]  # the same frame, sent again
    assert stats["naks_retried"] == 1 and stats["acked"] == 1
    assert alarms == [] and "passes_dropped" not in stats


def test_a_frame_the_bridge_keeps_refusing_is_alarmed_after_nak_retries():
    """A bridge that NAKs BAD_LENGTH every time (a firmware with another body layout, say) is not
    retried forever: after nak_retries resends the reject counts as refused and is alarmed."""
    seen = []

    def answer(f):
        if f.type != p.REJECT:
            return None
        seen.append(f.seq)
        return p.make(p.NAK, 0x1234, f.seq, p.NAK_BAD_LENGTH, 0)

    stats, alarms = run_scripted_bridge([(7, True)], answer, lambda: len(seen) >= 3,
                                        nak_retries=2, deadline_ms=5000)
    assert len(seen) == 3 and len(set(seen)) == 1  # the first send and nak_retries=2 resends
    assert stats["naks_retried"] == 2 and stats["naks"] == 3
    assert [(a.kind, a.part_id) for a in alarms] == [("nak", 7)]
