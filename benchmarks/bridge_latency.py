"""Decision -> byte-on-the-wire latency and messages/s of BridgeLink over a pty.

A pty pair stands in for the USB-serial cable; the bridge core (Python or C) runs in a
thread on the master side, timestamps each frame when its bytes are read and ACKs it.
Latency = time from ``link.send()`` to the read that returned the frame's bytes, in a
separate bridge-side process (CLOCK_MONOTONIC on both sides).

A pty does not pace bytes at the configured baud rate: the results are the software
path. The wire time of a frame at the chosen baud is added in a separate column.

    python benchmarks/bridge_latency.py [--n 5000] [--period-ms 2] [--burst 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402

from firmware_bridge import protocol as p  # noqa: E402
from firmware_bridge.bridge import BridgeConfig, BridgeCore  # noqa: E402
from firmware_bridge.host import BridgeLink, BridgeLinkConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


class BridgeSide:
    """Runs in its own process (like the MCU): ACKs frames, records when each arrived."""

    def __init__(self, master: int, core: str) -> None:
        self.master = master
        self.arrival: dict[int, float] = {}
        self.stop = False
        self.lock = threading.Lock()
        self.dec = p.StreamDecoder()
        args = (BridgeConfig(), 1, self._ms(), self._tx)
        if core == "c":
            from firmware_bridge.ccore import CCore
            self.core = CCore(*args)
        else:
            self.core = BridgeCore(*args)

    @staticmethod
    def _ms() -> int:
        return int(time.monotonic() * 1000)

    def _tx(self, data: bytes) -> None:
        os.write(self.master, data)

    def run(self) -> None:
        import select
        while not self.stop:
            if not select.select([self.master], [], [], 0.005)[0]:
                self.core.tick(self._ms())
                continue
            data = os.read(self.master, 4096)
            t = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            for item in self.dec.feed(data):  # timestamps only; the core decodes on its own
                if isinstance(item, p.Frame) and item.type in (p.REJECT, p.PASS):
                    part = p.BODY[item.type].unpack(item.body)[0]
                    self.arrival.setdefault(part, t)
            self.core.feed(data, self._ms())
            self.core.tick(self._ms())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(core: str, n: int, period_ms: float, burst: int, baud: int) -> dict:
    import subprocess
    master, slave = os.openpty()
    tty.setraw(slave)
    arrivals_file = RESULTS.parent / "work" / f"arrivals-{core}.json"
    arrivals_file.parent.mkdir(parents=True, exist_ok=True)
    bridge = subprocess.Popen([sys.executable, __file__, "--bridge-side", str(master), "--cores", core,
                               "--arrivals", str(arrivals_file)], pass_fds=(master,), stdin=subprocess.PIPE)
    os.close(master)
    link = BridgeLink(BridgeLinkConfig(os.ttyname(slave), baud=baud))
    try:
        time.sleep(0.3)  # first heartbeat, fail-safe cleared
        # 1. latency at a line rate: one decision every period_ms, 1 in 10 a reject.
        sent = {}
        t_next = time.monotonic()
        for i in range(n):
            time.sleep(max(0.0, t_next - time.monotonic()))
            sent[i] = time.monotonic()
            link.send(i, i % 10 == 0)
            t_next += period_ms / 1000.0
        assert link.flush(10)
        # 2. throughput: as fast as the link takes them (queue kept <= 256).
        base = 10_000_000
        t0 = time.perf_counter()
        for i in range(burst):
            link.send(base + i, i % 10 == 0)
            while link.stats()["queued"] > 256:
                time.sleep(0.0002)
        assert link.flush(30)
        dt = time.perf_counter() - t0
        stats = link.stats()
    finally:
        link.close()
        bridge.stdin.close()  # tells the bridge side to write its arrivals and exit
        bridge.wait(10)
        os.close(slave)
    arrival = {int(k): v for k, v in json.loads(arrivals_file.read_text()).items()}
    lat = [1000 * (arrival[i] - sent[i]) for i in range(n)]
    reject_bytes, pass_bytes, ack_bytes = (len(p.make(p.REJECT, 1, 1, 1, 0, 0)), len(p.make(p.PASS, 1, 1, 1)),
                                           len(p.make(p.ACK, 1, 1, 0)))
    mix_bytes = 0.1 * reject_bytes + 0.9 * pass_bytes
    return {
        "core": core,
        "latency_ms": {"n": n, "period_ms": period_ms, "p50": round(statistics.median(lat), 3),
                       "p90": round(pct(lat, 90), 3), "p99": round(pct(lat, 99), 3),
                       "max": round(max(lat), 3), "mean": round(statistics.fmean(lat), 3)},
        "wire_ms_at_baud": {"first_byte": round(10_000 / baud, 3),
                            "whole_reject_frame": round(reject_bytes * 10_000 / baud, 3)},
        "throughput": {"decisions": burst, "seconds": round(dt, 3), "msgs_per_s": round(burst / dt),
                       "wire_limit_msgs_per_s_at_baud": round(baud / 10 / mix_bytes)},
        "frame_bytes": {"reject": reject_bytes, "pass": pass_bytes, "ack": ack_bytes},
        "link": {k: stats.get(k, 0) for k in ("acked", "retransmits", "rx_errors", "rtt_ms_avg", "rtt_ms_max")},
    }


def machine() -> dict:
    import serial
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "pyserial": serial.VERSION, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def write_md(res: dict, path: Path) -> None:
    m, s = res["machine"], res["settings"]
    lines = [
        "# Bridge link latency and throughput", "",
        f"Measured {res['date']} with `python benchmarks/bridge_latency.py "
        f"--n {s['n']} --period-ms {s['period_ms']} --burst {s['burst']}`.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs; load average "
        f"{m['load_avg_at_start']} at start), {m['os']}, Python {m['python']}, pyserial {m['pyserial']}.", "",
        f"Settings: pty pair (no real UART), port configured at {s['baud']} baud, BridgeLink defaults "
        "(window 8, ACK timeout 50 ms, heartbeat 200 ms); the bridge core runs in a thread on the pty "
        "master in its own process. 1 decision in 10 is a REJECT.", "",
        "A pty moves bytes as fast as the kernel does; it does not pace them at the baud rate. "
        "Latency is `send()` → the read on the bridge side that returned the frame. On a real "
        f"UART at {s['baud']} baud add the wire time (first byte {res['runs'][0]['wire_ms_at_baud']['first_byte']} ms, "
        f"whole {res['runs'][0]['frame_bytes']['reject']}-byte REJECT {res['runs'][0]['wire_ms_at_baud']['whole_reject_frame']} ms) and the USB-serial "
        "adapter's latency timer (1–16 ms on FTDI; set it to 1 ms).", "",
        "| bridge core | decisions | p50 ms | p90 ms | p99 ms | max ms | burst msgs/s (pty) | wire limit msgs/s at baud |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lat, th = r["latency_ms"], r["throughput"]
        lines.append(f"| {r['core']} | {lat['n']} every {lat['period_ms']} ms | {lat['p50']} | {lat['p90']} | "
                     f"{lat['p99']} | {lat['max']} | {th['msgs_per_s']} | {th['wire_limit_msgs_per_s_at_baud']} |")
    lines += ["", "On a real 115 200 baud line the wire, not the software, limits throughput "
              "(last column: host → bridge bytes for the 9:1 PASS:REJECT mix; ACKs travel the other way).", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="decisions for the latency run")
    ap.add_argument("--period-ms", type=float, default=2.0, help="time between decisions in the latency run")
    ap.add_argument("--burst", type=int, default=20000, help="decisions for the throughput run")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--cores", default="python,c")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--bridge-side", type=int, help=argparse.SUPPRESS)  # internal: pty master fd
    ap.add_argument("--arrivals", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.bridge_side is not None:
        side = BridgeSide(a.bridge_side, a.cores)
        threading.Thread(target=lambda: (sys.stdin.read(), setattr(side, "stop", True)), daemon=True).start()
        side.run()
        a.arrivals.write_text(json.dumps(side.arrival))
        return 0
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
           "settings": {"n": a.n, "period_ms": a.period_ms, "burst": a.burst, "baud": a.baud, "transport": "pty"},
           "runs": [run(c, a.n, a.period_ms, a.burst, a.baud) for c in a.cores.split(",")]}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bridge_latency.json").write_text(json.dumps(res, indent=2) + "\n")
    write_md(res, a.out / "bridge_latency.md")
    print(json.dumps(res["runs"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
