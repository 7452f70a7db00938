"""Edge pipeline benchmark: end-to-end throughput against OpenVINO's benchmark_app on the same IR
and cores, frame->decision latency, and a soak (flat memory, one audit record and one PLC message
per frame), all in one run.

    python benchmarks/edge_pipeline.py --model tile.xml --video conveyor.mkv [--soak-frames 20000]

Writes benchmarks/results/edge_pipeline.json and .md. The video is replayed as a recorded line
(back-pressure, no pacing: the pipeline runs as fast as it can), looped until the frame count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from edge.audit import AuditLog  # noqa: E402
from edge.model import AnomalyModel  # noqa: E402
from edge.pipeline import Pipeline  # noqa: E402
from edge.plc import PlcOutput  # noqa: E402
from edge.sources import Frame, Source  # noqa: E402


class LoopedVideo(Source):
    """A recorded video decoded from the file, rewound at the end, for `frames` frames."""

    live = False

    def __init__(self, path: str, frames: int):
        self.path, self.frames = path, frames
        self.name = f"video:{Path(path).name}(looped)"
        self._stop = threading.Event()

    def __iter__(self):
        i = 0
        while i < self.frames and not self._stop.is_set():
            cap = cv2.VideoCapture(self.path)
            while i < self.frames and not self._stop.is_set():
                ok, img = cap.read()
                if not ok:
                    break
                yield Frame(i, img, time.time(), f"{self.name}#{i}")
                i += 1
            cap.release()

    def stop(self):
        self._stop.set()


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def benchmark_app(model: str, seconds: int, precision: str) -> dict:
    exe = Path(sys.executable).with_name("benchmark_app")
    cmd = [str(exe), "-m", model, "-d", "CPU", "-hint", "throughput", "-t", str(seconds), "-infer_precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    text = out.stdout + out.stderr
    fps = re.search(r"Throughput:\s*([\d.]+)\s*FPS", text)
    reqs = re.search(r"(\d+) inference requests", text) or re.search(r"nireq\D+(\d+)", text)
    if not fps:
        raise SystemExit(f"benchmark_app failed:\n{text[-2000:]}")
    return {"command": " ".join(cmd[1:]), "fps": float(fps.group(1)), "requests": int(reqs.group(1)) if reqs else None}


def run_pipeline(model_path: str, video: str, frames: int, precision: str, workdir: Path, sample_rss: bool) -> dict:
    from edge.config import load

    cfg = load(argparse.Namespace())
    cfg["model"], cfg["precision"] = model_path, precision
    cfg["deadline_ms"] = 10_000.0  # throughput run: a recorded video waits, nothing should time out
    model = AnomalyModel(model_path, precision=precision, hint="THROUGHPUT")
    audit_path = workdir / "audit.jsonl"
    audit = AuditLog(audit_path, max_bytes=1 << 40)
    plc = PlcOutput("none")
    p = Pipeline(cfg, model, LoopedVideo(video, frames), plc=plc, audit=audit, log=lambda m: None)
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sampler():
        while not done.wait(1.0):
            samples.append((p.counters.get("decisions"), rss_mb()))

    if sample_rss:
        threading.Thread(target=sampler, daemon=True).start()
    t0 = time.perf_counter()
    summary = p.run()
    wall = time.perf_counter() - t0
    done.set()
    audit.close()
    ids = [json.loads(line)["frame"] for line in audit_path.read_text().splitlines() if line.startswith('{"frame"')]
    audit_path.unlink()
    out = {"frames": frames, "wall_s": round(wall, 2), "fps": round(summary["decisions"] / wall, 2),
           "latency_p50_ms": summary.get("latency_p50_ms"), "latency_p99_ms": summary.get("latency_p99_ms"),
           "infer_requests": summary["infer_requests"], "inference_precision": summary["inference_precision"],
           "decisions": summary["decisions"], "failsafe": summary["failsafe"], "rejects": summary["rejects"],
           "audit_records": len(ids), "audit_unique_frames": len(set(ids)), "plc_messages": plc.stats()["sent"],
           "one_record_and_message_per_frame": len(ids) == len(set(ids)) == plc.stats()["sent"] == frames}
    if sample_rss and samples:
        warm = max(1000, frames // 10)
        after = [r for n, r in samples if n >= warm]
        if after:
            out.update({"rss_after_warmup_mb": round(after[0], 1), "rss_end_mb": round(after[-1], 1),
                        "rss_max_after_warmup_mb": round(max(after), 1),
                        "rss_growth_mb": round(max(after) - after[0], 1), "warmup_frames": warm,
                        "rss_samples": len(samples)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=600, help="frames in the throughput run")
    ap.add_argument("--soak-frames", type=int, default=20_000)
    ap.add_argument("--bench-seconds", type=int, default=30)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "edge_pipeline"))
    args = ap.parse_args()
    import openvino as ov

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
            "logical_cpus": len(os.sched_getaffinity(0)), "openvino": ov.__version__, "model": args.model,
            "video": args.video, "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    try:
        meta["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench = benchmark_app(args.model, args.bench_seconds, args.precision)
        pipe = run_pipeline(args.model, args.video, args.frames, args.precision, work, sample_rss=False)
        bench_after = benchmark_app(args.model, args.bench_seconds, args.precision)
        soak = run_pipeline(args.model, args.video, args.soak_frames, args.precision, work, sample_rss=True) if args.soak_frames else {}
    ref = (bench["fps"] + bench_after["fps"]) / 2
    meta["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result = {"meta": meta, "benchmark_app_before": bench, "benchmark_app_after": bench_after,
              "benchmark_app_fps_mean": round(ref, 2), "pipeline": pipe,
              "throughput_ratio": round(pipe["fps"] / ref, 3), "soak": soak,
              "acceptance": {"throughput_ge_90pct": pipe["fps"] >= 0.9 * ref,
                             "soak_rss_growth_lt_20mb": (soak.get("rss_growth_mb", 1e9) < 20) if soak else None,
                             "soak_one_record_and_message_per_frame": soak.get("one_record_and_message_per_frame") if soak else None}}
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Edge pipeline benchmark\n", f"- Date: {meta['date']}; CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs, shared "
          f"with other jobs: load average {meta['loadavg_at_start']} at start, {meta['loadavg_at_end']} at end)",
          f"- OpenVINO {meta['openvino']}; model `{args.model}`; video `{args.video}`; inference precision {pipe['inference_precision']}",
          f"- Command: `python benchmarks/edge_pipeline.py --model {args.model} --video {args.video} --frames {args.frames} "
          f"--soak-frames {args.soak_frames} --bench-seconds {args.bench_seconds}`\n",
          "| measure | value |", "|---|---:|",
          f"| benchmark_app throughput (before / after the pipeline run) | {bench['fps']:.2f} / {bench_after['fps']:.2f} FPS |",
          f"| edge-inspect end-to-end throughput ({pipe['frames']} frames: decode, resize, inference, tree NFA, decision, audit log, PLC) | {pipe['fps']:.2f} FPS |",
          f"| ratio to benchmark_app (mean of before/after) | {100 * result['throughput_ratio']:.1f} % |",
          f"| frame->decision latency p50 / p99 | {pipe['latency_p50_ms']} / {pipe['latency_p99_ms']} ms |",
          f"| infer requests | {pipe['infer_requests']} |"]
    if soak:
        md += [f"| soak frames / wall | {soak['frames']} / {soak['wall_s']} s ({soak['fps']} FPS) |",
               f"| soak RSS after warm-up ({soak.get('warmup_frames')} frames) / max / end | {soak.get('rss_after_warmup_mb')} / "
               f"{soak.get('rss_max_after_warmup_mb')} / {soak.get('rss_end_mb')} MB (growth {soak.get('rss_growth_mb')} MB) |",
               f"| soak audit records / unique frames / PLC messages | {soak['audit_records']} / {soak['audit_unique_frames']} / {soak['plc_messages']} |",
               f"| soak fail-safe rejects | {soak['failsafe']} |"]
    md.append(f"\nAcceptance: {json.dumps(result['acceptance'])}\n")
    Path(args.out + ".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
