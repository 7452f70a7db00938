"""Single-thread timing of edge/nfa.py (tree NFA, window NFA) on synthetic N(0, I) latents.

    python benchmarks/nfa_speed.py [--runs 200] [--out benchmarks/results]

Writes nfa_speed.md and nfa_speed.json (CPU from /proc/cpuinfo, date, versions). Targets from
issue 4: tree NFA <= 20 ms on a 64x64 latent with C = 304, window NFA <= 3 ms, one core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.machine import cpu_name  # noqa: E402
from edge import nfa  # noqa: E402


_loadavg_start = "unknown"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _time(fn, runs: int) -> dict:
    fn()  # warm (caches: chi2 table, N_test, resize matrices, binomial LUT)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return {"runs": runs, "median_ms": float(np.median(ts)), "p99_ms": float(np.percentile(ts, 99)),
            "min_ms": float(ts.min())}


def _cold(fn) -> float:
    nfa._chi2_table.cache_clear()
    nfa.log10_n_tests.cache_clear()
    nfa._resize_taps.cache_clear()
    nfa.log10_binom_sf_table.cache_clear()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    runs = max(50, args.runs)
    global _loadavg_start
    _loadavg_start = _loadavg()
    rng = np.random.default_rng(0)

    z64 = rng.standard_normal((304, 64, 64))
    zsq64 = np.einsum("chw,chw->hw", z64, z64).astype(np.float32)
    ms_shapes, ms_ch = [(64, 64), (32, 32), (16, 16)], [24, 40, 112]
    ms_z = [rng.standard_normal((c, h, w)).astype(np.float32) for (h, w), c in zip(ms_shapes, ms_ch)]
    ms_zsq = [np.einsum("chw,chw->hw", z, z) for z in ms_z]
    ms_counts = [nfa.exceedance_counts(z, 0.9) for z in ms_z]
    out = (256, 256)

    cases = {
        "tree core, 64x64, C=304 (per-scale log P map, no resize)":
            lambda: nfa._tree_log10_prob(zsq64, 304),
        "tree_nfa, 64x64, C=304, out 64x64":
            lambda: nfa.tree_nfa([zsq64], [304], (64, 64)),
        "tree_nfa, 64x64, C=304, out 256x256":
            lambda: nfa.tree_nfa([zsq64], [304], out),
        "tree_nfa, 3 scales 64/32/16, C=24/40/112, out 256x256":
            lambda: nfa.tree_nfa(ms_zsq, ms_ch, out),
        "window_nfa, 3 scales 64/32/16 from counts, out 256x256 (w5, p0.9)":
            lambda: nfa.window_nfa(ms_counts, ms_ch, out),
        "window_nfa, 3 scales 64/32/16 from counts, out 64x64 (w5, p0.9)":
            lambda: nfa.window_nfa(ms_counts, ms_ch, (64, 64)),
        "exceedance_counts for the 3 scales (if not done in the IR graph)":
            lambda: [nfa.exceedance_counts(z, 0.9) for z in ms_z],
    }
    results = {}
    for name, fn in cases.items():
        r = _time(fn, runs)
        results[name] = r
        print(f"{name:70s} median {r['median_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms")
    cold = {
        "tree_nfa 64x64 C=304, first call (builds chi2 table, N_test)":
            _cold(lambda: nfa.tree_nfa([zsq64], [304], out)),
        "window_nfa 3 scales, first call (binomial LUT, resize matrices)":
            _cold(lambda: nfa.window_nfa(ms_counts, ms_ch, out)),
    }
    for name, v in cold.items():
        print(f"{name:70s} {v:7.3f} ms")

    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": "OMP/OPENBLAS/MKL_NUM_THREADS=1",
        "runs": runs,
        "loadavg_at_start": _loadavg_start,
        "loadavg_at_end": _loadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nfa_speed.json").write_text(
        json.dumps({"meta": meta, "warm": results, "cold_ms": cold}, indent=2) + "\n")
    lines = [
        "# NFA speed (edge/nfa.py)",
        "",
        f"- Date: {meta['date']}",
        f"- CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs; machine shared with other jobs)",
        f"- Load average (1/5/15 min) at start {meta['loadavg_at_start']}, at end "
        f"{meta['loadavg_at_end']}: other jobs shared the cores, so p99 is pessimistic",
        f"- Python {meta['python']}, numpy {meta['numpy']}, {meta['threads']}, single process",
        f"- {runs} timed runs per case after one warm-up call; synthetic N(0, I) latents",
        "- Targets (issue 4): tree NFA <= 20 ms at 64x64, C = 304; window NFA <= 3 ms",
        "- Command: `python benchmarks/nfa_speed.py`",
        "",
        "| case | median ms | p99 ms |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['median_ms']:.3f} | {v['p99_ms']:.3f} |" for k, v in results.items()]
    lines += ["", "| first call (cold caches) | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in cold.items()]
    (args.out / "nfa_speed.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
