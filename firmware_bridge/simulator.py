"""Bridge simulator: the bridge core (Python or compiled C) on a pty, with fault injection.

Run ``edge-bridge-sim --log actuations.jsonl``: it opens a pty pair, links the slave
to a stable path (printed as JSON on the first stdout line) and answers on the
master side. Every actuation, output change, injected fault and unplug/reboot is
written to the JSON-lines log, one flushed line per event.

Commands on stdin, one per line: ``unplug SECONDS`` (the port disappears, as a
pulled USB adapter), ``reboot`` (new boot id, empty dedupe state), ``faults
corrupt=0.01 drop=0 ...``, ``encoder N`` (N encoder pulses), ``stats``, ``quit``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import signal
import sys
import tempfile
import termios
import time
import tty
from dataclasses import asdict, dataclass, field, fields

from .bridge import BridgeConfig, BridgeCore


@dataclass
class Faults:
    """Per-frame probabilities, applied to both directions independently."""

    corrupt: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_ms: int = 20

    def update(self, text: str) -> None:
        names = {f.name: f.type for f in fields(self)}
        for item in text.split():
            key, _, value = item.partition("=")
            if key not in names:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(names)}")
            setattr(self, key, (int if key == "delay_ms" else float)(value))


@dataclass
class SimConfig:
    log: str
    core: str = "python"              # "python" or "c"
    lib: str | None = None            # prebuilt C core (.so); built with gcc when absent
    link: str | None = None           # stable path for the pty slave
    port: str | None = None           # attach to this existing tty instead of opening a pty
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None


def _raw(fd: int) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class Simulator:
    """One simulated bridge. :meth:`run` loops until ``quit`` or SIGTERM."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.logf = open(cfg.log, "a", buffering=1)
        self.master: int | None = None
        self.slave: int | None = None
        self.link = cfg.link or os.path.join(tempfile.mkdtemp(prefix="edge-bridge-"), "ttyBRIDGE")
        self.replug_at: float | None = None
        self.out_q: collections.deque[tuple[float, bytes]] = collections.deque()
        self.rx_partial = bytearray()
        self.injected = collections.Counter()
        self.running = True
        self.core = self._new_core()
        if cfg.port:
            self.master = os.open(cfg.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            _raw(self.master)
            self.link = cfg.port
        else:
            self._plug()

    # -- events ------------------------------------------------------------
    def event(self, name: str, **kw) -> None:
        kw.update(event=name, t=time.monotonic(), wall=time.time())
        self.logf.write(json.dumps(kw) + "\n")

    def _new_core(self):
        boot_id = self.rng.randrange(0x10000)
        args = (self.cfg.bridge, boot_id, _now_ms(), self._tx, self._actuate, self._outputs)
        if self.cfg.core == "c":
            from . import ccore
            core = ccore.CCore(*args, lib=ccore.load(self.cfg.lib))
        else:
            core = BridgeCore(*args)
        self.event("boot", boot_id=boot_id, core=self.cfg.core)
        return core

    def _actuate(self, part_id: int) -> None:
        self.event("actuate", part_id=part_id)

    def _outputs(self, reject: bool, alarm: bool) -> None:
        self.event("outputs", reject=bool(reject), alarm=bool(alarm))

    def _tx(self, frame: bytes) -> None:
        for data in self._inject(frame, "tx"):
            delay = 0.0
            if self.cfg.faults.delay and self.rng.random() < self.cfg.faults.delay:
                self._count("delay", "tx")
                delay = self.cfg.faults.delay_ms / 1000.0
            # FIFO like a real UART: a delayed frame holds back the ones behind it.
            start = max(time.monotonic(), self.out_q[-1][0] if self.out_q else 0.0)
            self.out_q.append((start + delay, data))

    def _count(self, kind: str, direction: str) -> None:
        self.injected[f"{kind}_{direction}"] += 1
        self.event("inject", kind=kind, dir=direction)

    def _inject(self, frame: bytes, direction: str) -> list[bytes]:
        f, rng = self.cfg.faults, self.rng
        if f.drop and rng.random() < f.drop:
            self._count("drop", direction)
            return []
        if f.corrupt and rng.random() < f.corrupt and len(frame) > 1:
            self._count("corrupt", direction)
            bad = bytearray(frame)
            bad[rng.randrange(len(frame) - 1)] ^= 1 << rng.randrange(8)  # never the delimiter
            frame = bytes(bad)
        if f.duplicate and rng.random() < f.duplicate:
            self._count("duplicate", direction)
            return [frame, frame]
        return [frame]

    # -- pty plumbing ------------------------------------------------------
    def _plug(self) -> None:
        self.master, self.slave = os.openpty()
        _raw(self.slave)
        os.set_blocking(self.master, False)
        tmp = f"{self.link}.{os.getpid()}.tmp"
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)
        self.rx_partial.clear()

    def unplug(self, seconds: float) -> None:
        if self.cfg.port:
            raise ValueError("unplug needs the simulator's own pty (no --port)")
        if self.master is None:
            return
        os.unlink(self.link)
        for fd in (self.master, self.slave):
            os.close(fd)
        self.master = self.slave = None
        self.out_q.clear()  # bytes on a pulled cable are gone
        self.replug_at = time.monotonic() + seconds
        self.event("unplug", seconds=seconds)

    def reboot(self) -> None:
        self.rx_partial.clear()
        self.core = self._new_core()

    def stats(self) -> dict:
        return {**self.core.stats(), "injected": dict(self.injected)}

    def command(self, line: str) -> None:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "unplug":
            self.unplug(float(arg or 0.5))
        elif cmd == "reboot":
            self.reboot()
        elif cmd == "faults":
            self.cfg.faults.update(arg)
            self.event("faults", **asdict(self.cfg.faults))
        elif cmd == "encoder":
            for _ in range(int(arg or 1)):
                self.core.encoder_tick(_now_ms())
        elif cmd == "stats":
            pass
        elif cmd == "quit":
            self.running = False
        elif cmd:
            raise ValueError(f"unknown command {cmd!r}")
        self.event("stats", **self.stats())
        print(json.dumps({"ok": cmd, **self.stats()}), flush=True)

    # -- main loop ---------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        """Split host bytes into frames so faults apply per frame, then feed the core."""
        buf = self.rx_partial
        buf += data
        while True:
            z = buf.find(0)
            if z < 0:
                break
            frame = bytes(buf[: z + 1])
            del buf[: z + 1]
            for piece in self._inject(frame, "rx"):
                self.core.feed(piece, _now_ms())
        if len(buf) > 4096:  # garbage without delimiters: let the core count it
            self.core.feed(bytes(buf), _now_ms())
            buf.clear()

    def run(self) -> None:
        stdin_open, stdin_buf = True, b""
        while self.running:
            now = time.monotonic()
            if self.replug_at is not None and now >= self.replug_at:
                self.replug_at = None
                self._plug()
                self.event("replug")
            rlist = [0] if stdin_open else []
            if self.master is not None:
                rlist.append(self.master)
            timeout = 0.002
            if self.out_q:
                timeout = max(0.0, min(timeout, self.out_q[0][0] - now))
            ready, _, _ = select.select(rlist, [], [], timeout)
            if 0 in ready:
                data = os.read(0, 4096)
                stdin_open = bool(data)
                stdin_buf += data
                while b"\n" in stdin_buf:
                    line, _, stdin_buf = stdin_buf.partition(b"\n")
                    try:
                        self.command(line.decode())
                    except (ValueError, OSError) as exc:
                        print(json.dumps({"error": str(exc)}), flush=True)
            if self.master is not None and self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:  # EIO: nobody holds the slave open
                    data = b""
                if data:
                    self._feed(data)
            self.core.tick(_now_ms())
            self._flush_out()
        self.event("stats", **self.stats())
        self.event("exit")

    def _flush_out(self) -> None:
        now = time.monotonic()
        chunks = []
        while self.out_q and self.out_q[0][0] <= now:
            chunks.append(self.out_q.popleft()[1])
        if not chunks:
            return
        if self.master is None:
            return
        data = b"".join(chunks)
        try:
            while data:
                n = os.write(self.master, data)
                data = data[n:]
        except BlockingIOError:
            pass  # host not reading: the bytes are lost like on a full UART buffer
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if not self.cfg.port and os.path.islink(self.link):
            os.unlink(self.link)
        self.logf.close()


def parse_args(argv: list[str] | None = None) -> SimConfig:
    ap = argparse.ArgumentParser(prog="edge-bridge-sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, help="JSON-lines event log (actuations, outputs, faults)")
    ap.add_argument("--core", choices=["python", "c"], default="python")
    ap.add_argument("--lib", help="prebuilt C core .so (default: build with gcc)")
    ap.add_argument("--link", help="path for the pty slave symlink (default: in a temp dir)")
    ap.add_argument("--port", help="attach to this tty instead of opening a pty (no unplug)")
    ap.add_argument("--failsafe-ms", type=int, default=1000)
    ap.add_argument("--pulse-ms", type=int, default=50)
    ap.add_argument("--no-failsafe-reject", action="store_true", help="fail-safe drives only the alarm output")
    ap.add_argument("--faults", default="", help='e.g. "corrupt=0.01 drop=0.005 duplicate=0.005"')
    ap.add_argument("--seed", type=int)
    a = ap.parse_args(argv)
    faults = Faults()
    faults.update(a.faults)
    return SimConfig(log=a.log, core=a.core, lib=a.lib, link=a.link, port=a.port, seed=a.seed,
                     bridge=BridgeConfig(a.failsafe_ms, a.pulse_ms, not a.no_failsafe_reject), faults=faults)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    sim = Simulator(cfg)
    signal.signal(signal.SIGTERM, lambda *_: setattr(sim, "running", False))
    print(json.dumps({"port": sim.link, "log": cfg.log, "pid": os.getpid(), "core": cfg.core}), flush=True)
    try:
        sim.run()
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
