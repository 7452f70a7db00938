"""A PLC stand-in for the line protocol: opens a pty, prints its path, logs every actuation.

    python -m firmware_bridge.plc_sim --out actuations.jsonl [--ready-file F]

The edge writes to the printed pty path with `--serial PATH`; each valid line becomes one JSON
record {part_id, reject, score, t}; lines with a bad checksum are counted as `corrupt`.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
import tty

from .line import decode


def serve(out_path: str, ready_file: str | None = None) -> dict:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    if ready_file:
        tmp = ready_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(path)
        os.replace(tmp, ready_file)
    print(path, flush=True)
    counts = {"lines": 0, "rejects": 0, "passes": 0, "corrupt": 0}
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    buf = b""
    with open(out_path, "a") as out:
        while not stop:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                time.sleep(0.01)  # no writer attached yet
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                counts["lines"] += 1
                try:
                    msg = decode(line)
                except ValueError:
                    counts["corrupt"] += 1
                    continue
                counts["rejects" if msg.reject else "passes"] += 1
                out.write(json.dumps({"part_id": msg.part_id, "reject": msg.reject, "score": msg.score, "t": time.time()}) + "\n")
                out.flush()
    os.close(slave)
    os.close(master)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON-lines file of actuations")
    ap.add_argument("--ready-file", help="write the pty path here once listening")
    args = ap.parse_args(argv)
    counts = serve(args.out, args.ready_file)
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
