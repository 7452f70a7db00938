"""Edge pipeline benchmark: end-to-end throughput against OpenVINO's benchmark_app on the same IR
and cores, frame->decision latency, and a soak (flat memory, one audit record and one PLC message
per frame), all in one run.

    python benchmarks/edge_pipeline.py --case demo demo/tile.xml demo/conveyor.mkv \
        --case real tile256.xml /path/to/magnetic_tile [--soak-frames 20000]

Each case is one IR with its recorded video (transcoded to --codec), or with an MVTec-layout data
folder from which a line video of real images is recorded (good test images with a defective one
every --defect-every, frames --camera-scale x the model input). Per case, in one run:
benchmark_app before and after, the pipeline, and a per-stage CPU profile (ms per frame, one stage
at a time on one thread). Writes benchmarks/results/edge_pipeline.json and .md. Videos are replayed
as a recorded line (back-pressure, no pacing: the pipeline runs as fast as it can), looped until
the frame count.
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
from benchmarks.machine import cpu_name  # noqa: E402

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


def run_pipeline(model_path: str, video: str, frames: int, precision: str, workdir: Path, sample_rss: bool,
                 jobs: int = 0) -> dict:
    from edge.config import load

    cfg = load(argparse.Namespace())
    cfg["model"], cfg["precision"] = model_path, precision
    cfg["deadline_ms"] = 10_000.0  # throughput run: a recorded video waits, nothing should time out
    if jobs:
        cfg["infer_requests"] = jobs
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def make_line_video(data: str, path: Path, size: tuple[int, int], defect_every: int, fourcc: str, fps: int = 20) -> dict:
    """A conveyor video from real images of an MVTec-layout folder: every test/good image, with one
    defective test image (each defect kind in turn) after every `defect_every` good ones, each
    resized to the camera frame `size` (h, w). Returns the mix."""
    from edge.preprocess import read_image

    test = Path(data) / "test"
    good = sorted(p for p in (test / "good").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    kinds = sorted(d for d in test.iterdir() if d.is_dir() and d.name != "good")
    bad = [sorted(p for p in k.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for k in kinds]
    order, k = [], 0
    for i, g in enumerate(good):
        order.append(g)
        if defect_every and (i + 1) % defect_every == 0:
            pool = bad[k % len(bad)]
            order.append(pool[(k // len(bad)) % len(pool)])
            k += 1
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {fourcc} video {path}")
    for f in order:
        img = read_image(f)
        writer.write(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] >= h else cv2.INTER_LINEAR))
    writer.release()
    return {"frames": len(order), "good": len(good), "defective": k, "source": str(data), "frame_size": [h, w],
            "codec": fourcc}


def transcode(src: str, path: Path, fourcc: str) -> dict:
    """The recorded video in the codec a line camera delivers (MJPEG by default)."""
    cap = cv2.VideoCapture(src)
    fps = cap.get(cv2.CAP_PROP_FPS) or 20
    writer, n = None, 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (img.shape[1], img.shape[0]))
        writer.write(img)
        n += 1
    cap.release()
    writer.release()
    return {"frames": n, "source": src, "codec": fourcc}


def stage_profile(model_path: str, video: str, precision: str, n: int = 100) -> dict:
    """CPU cost of each per-frame stage, one at a time on one thread (ms per frame): what the
    pipeline's Python threads spend besides inference, next to one synchronous inference."""
    import resource

    from edge.audit import AuditLog
    from edge.decision import Decision, decide
    from edge.preprocess import prepare

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: FFmpeg decodes on its own threads
        return r.ru_utime + r.ru_stime

    model = AnomalyModel(model_path, precision=precision, threads=1, hint="LATENCY")
    info = model.info
    out: dict = {}
    cap = cv2.VideoCapture(video)
    frames = []
    t = cpu()
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(video)
            continue
        frames.append(img)
    out["decode"] = (cpu() - t) / n
    t = cpu()
    prepped = [prepare(f, model.input_size) for f in frames]
    out["prepare (resize)"] = (cpu() - t) / n
    m = min(n, 40)
    model.infer(prepped[0])
    t0 = time.perf_counter()
    results = [model.infer(p) for p in prepped[:m]]
    out["inference (1 thread, wall)"] = (time.perf_counter() - t0) / m
    results = (results * (n // m + 1))[:n]
    kw = dict(rule="both", threshold=info.image_threshold, epsilon=info.nfa_epsilon, channels=list(info.latent_channels),
              size=model.input_size, top=3, null_scale=list(info.latent_null_scale) or None)
    for label, exact in (("decide (score + tree NFA, exact min)", True), ("decide (score + tree NFA, screened)", False)):
        t = cpu()
        verdicts = [decide(r.score, r.zsq, **kw, exact_min=exact) for r in results]
        out[label] = (cpu() - t) / n
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "a.jsonl", max_bytes=1 << 40)
        t = cpu()
        for i, (v, r) in enumerate(zip(verdicts, results)):
            d = Decision(i, f"video#{i}", time.time(), time.time(), v.verdict, v.reason, r.score, kw["threshold"], 1.0,
                         model.model_hash, rule=v.rule, log10_nfa=v.log10_nfa, nfa_epsilon=kw["epsilon"],
                         regions=v.regions, log10_nfa_bound=v.log10_nfa_bound)
            audit.write(d.record())
        out["record + audit JSON line"] = (cpu() - t) / n
        audit.close()
    prof = {k: round(v * 1e3, 3) for k, v in out.items()}
    prof["reject_fraction"] = round(sum(v.verdict == "reject" for v in verdicts) / n, 3)
    prof["nfa_trees_skipped_fraction"] = round(sum(v.log10_nfa_bound is not None for v in verdicts) / n, 3)
    return prof


def run_case(label: str, model: str, video: str, args, work: Path, soak: bool) -> dict:
    """benchmark_app and the pipeline alternately: --repeats pipeline runs, each between two
    benchmark_app runs; the ratio of a run uses the mean of the two around it. The case reports
    the run with the median ratio and lists every ratio."""
    benches = [benchmark_app(model, args.bench_seconds, args.precision)]
    runs = []
    for _ in range(max(1, args.repeats)):
        pipe = run_pipeline(model, video, args.frames, args.precision, work, sample_rss=False, jobs=args.infer_requests)
        benches.append(benchmark_app(model, args.bench_seconds, args.precision))
        ref = (benches[-2]["fps"] + benches[-1]["fps"]) / 2
        runs.append((pipe["fps"] / ref, pipe, benches[-2], benches[-1], ref))
    ratios = [round(r[0], 3) for r in runs]
    ratio, pipe, bench, bench_after, ref = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
    prof = stage_profile(model, video, args.precision)
    out = {"label": label, "model": model, "video": video, "benchmark_app_before": bench, "benchmark_app_after": bench_after,
           "benchmark_app_fps_mean": round(ref, 2), "pipeline": pipe, "throughput_ratio": round(ratio, 3),
           "throughput_ratios_all_runs": ratios, "pipeline_fps_all_runs": [r[1]["fps"] for r in runs],
           "benchmark_app_fps_all_runs": [b["fps"] for b in benches], "stage_profile_ms": prof}
    if soak and args.soak_frames:
        out["soak"] = run_pipeline(model, video, args.soak_frames, args.precision, work, sample_rss=True, jobs=args.infer_requests)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs=3, action="append", metavar=("LABEL", "MODEL", "VIDEO_OR_DATA"), required=True,
                    help="an IR and its recorded video, or an MVTec-layout data folder to record a line video from "
                         "(repeatable; the first case also gets the soak)")
    ap.add_argument("--frames", type=int, default=600, help="frames in each throughput run")
    ap.add_argument("--soak-frames", type=int, default=20_000)
    ap.add_argument("--bench-seconds", type=int, default=30)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--codec", default="RGBA", help="codec the recorded videos are replayed in. RGBA (default): "
                    "uncompressed, pixel-exact, like a machine-vision camera's raw frames. FFV1 is lossless but costs "
                    "3+ ms/frame to decode at 256 px; MJPG changes the pixels enough to flip verdicts (G-B rounding "
                    "on grey parts) and is not used for that reason")
    ap.add_argument("--camera-scale", type=float, default=2.0, help="video made from a data folder: camera frame = "
                                                                    "this x the model input (the pipeline resizes)")
    ap.add_argument("--defect-every", type=int, default=10, help="video made from a data folder: one defective part "
                                                                 "after every N good ones")
    ap.add_argument("--infer-requests", type=int, default=0, help="0: the pipeline's default")
    ap.add_argument("--repeats", type=int, default=3, help="pipeline runs per case, each between two benchmark_app runs "
                                                         "(the median ratio is reported)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "edge_pipeline"))
    args = ap.parse_args()
    import openvino as ov

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
            "logical_cpus": len(os.sched_getaffinity(0)), "openvino": ov.__version__,
            "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "codec": args.codec,
            "command": "python benchmarks/edge_pipeline.py " + " ".join(repr(a) if " " in a else a for a in sys.argv[1:]),
            "nice": os.nice(0), "autogroup": _autogroup()}
    meta["cpu"] = cpu_name()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, (label, model, src) in enumerate(args.case):
            video = work / f"case{i}.{'mkv' if args.codec == 'FFV1' else 'avi'}"
            if Path(src).is_dir():
                h, w = AnomalyModel(model, precision=args.precision).input_size
                made = make_line_video(src, video, (int(h * args.camera_scale), int(w * args.camera_scale)),
                                       args.defect_every, args.codec)
            else:
                made = transcode(src, video, args.codec)
            print(f"[{label}] video: {made}", flush=True)
            case = run_case(label, model, str(video), args, work, soak=i == 0)
            case["video_made"] = made
            if not Path(src).is_dir():
                case["stage_profile_ms"][f"decode of the original {Path(src).suffix} file (not used)"] = stage_decode(src)
            cases.append(case)
            print(json.dumps({k: case[k] for k in ("label", "benchmark_app_fps_mean", "throughput_ratio")}), flush=True)
    meta["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    soak = cases[0].get("soak", {})
    result = {"meta": meta, "cases": cases,
              "acceptance": {"throughput_ge_90pct": {c["label"]: c["throughput_ratio"] >= 0.9 for c in cases},
                             "soak_rss_growth_lt_20mb": (soak["rss_growth_mb"] < 20) if "rss_growth_mb" in soak else None,
                             "soak_one_record_and_message_per_frame": soak.get("one_record_and_message_per_frame") if soak else None}}
    md = ["# Edge pipeline benchmark\n",
          f"- Date: {meta['date']}; CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs, shared with other jobs: load "
          f"average {meta['loadavg_at_start']} at start, {meta['loadavg_at_end']} at end)",
          f"- OpenVINO {meta['openvino']}; inference precision {cases[0]['pipeline']['inference_precision']}; videos replayed "
          f"as {args.codec}, back-pressure, no pacing",
          f"- Command: `{meta['command']}` (niceness {meta['nice']}, scheduler autogroup {meta['autogroup'] or 'n/a'})\n"]
    if max(os.getloadavg()[0], float(meta["loadavg_at_start"].split()[0])) > meta["logical_cpus"]:
        if "nice -20" in meta["autogroup"]:
            md.insert(4, "- Other jobs kept this shared machine oversubscribed (load average above the core count). This "
                      "run's scheduler autogroup had nice -20, so they yielded most of the CPU to it (benchmark_app and "
                      "the pipeline alike, one after the other); some interference remains.")
        else:
            md.insert(4, "- **The machine was oversubscribed during this run** (load average above the core count). Under "
                      "CPU contention the kernel shares CPU per runnable thread (within a scheduler autogroup), which "
                      "favours the pipeline (capture, inference, decision, output threads) over benchmark_app (its "
                      "inference threads only), and inference CPU per frame is inflated: read the ratios as upper bounds.")
    for c in cases:
        pipe, prof, made = c["pipeline"], c["stage_profile_ms"], c["video_made"]
        mix = (f"{made['frames']} frames from `{made['source']}` ({made['good']} good test images, {made['defective']} "
               f"defective), frames {made['frame_size'][1]}x{made['frame_size'][0]}" if "good" in made
               else f"`{made['source']}` ({made['frames']} frames) transcoded")
        md += [f"## {c['label']}\n", f"- IR `{c['model']}`; video: {mix}\n", "| measure | value |", "|---|---:|",
               f"| benchmark_app throughput (before / after the median pipeline run) | {c['benchmark_app_before']['fps']:.2f} / "
               f"{c['benchmark_app_after']['fps']:.2f} FPS ({c['benchmark_app_before']['requests']} requests) |",
               f"| edge-inspect end-to-end throughput ({pipe['frames']} frames: decode, resize, inference, tree NFA, "
               f"decision, audit log, PLC) | {pipe['fps']:.2f} FPS |",
               f"| ratio to benchmark_app (mean of before/after), median of {len(c['throughput_ratios_all_runs'])} runs | "
               f"**{100 * c['throughput_ratio']:.1f} %** |",
               "| every run: ratio (pipeline FPS) | " + " / ".join(
                   f"{100 * r:.1f} % ({f:.1f})" for r, f in zip(c["throughput_ratios_all_runs"], c["pipeline_fps_all_runs"])) + " |",
               f"| benchmark_app FPS, every run in order | {' / '.join(f'{f:.1f}' for f in c['benchmark_app_fps_all_runs'])} |",
               f"| frame->decision latency p50 / p99 | {pipe['latency_p50_ms']} / {pipe['latency_p99_ms']} ms |",
               f"| infer requests | {pipe['infer_requests']} |",
               f"| parts rejected (of which fail-safe) | {pipe['rejects']} ({pipe['failsafe']}) |"]
        outside = sum(prof[k] for k in ("decode", "prepare (resize)", "decide (score + tree NFA, screened)",
                                        "record + audit JSON line"))
        infer_cpu = 1e3 * meta["logical_cpus"] / c["benchmark_app_fps_mean"]
        c["cpu_outside_inference_ms"] = round(outside, 3)
        c["inference_cpu_ms_at_benchmark_app_rate"] = round(infer_cpu, 3)
        c["ceiling_ratio"] = round(infer_cpu / (infer_cpu + outside), 3)
        md += [f"| CPU per frame outside inference (decode + resize + decide + record, from the profile) | {outside:.2f} ms |",
               f"| inference CPU per frame at benchmark_app's rate ({meta['logical_cpus']} cores / FPS) | {infer_cpu:.2f} ms |",
               f"| rough ceiling if both shared the cores perfectly (inference / (inference + outside); from one-stage "
               f"profile numbers, a few % either way) | {100 * c['ceiling_ratio']:.1f} % |"]
        for k, v in prof.items():
            if k.endswith("fraction"):
                md.append(f"| profile: {k.replace('_', ' ')} | {v} |")
            else:
                md.append(f"| profile: {k} | {v} ms/frame |")
        soak = c.get("soak")
        if soak:
            md += [f"| soak frames / wall | {soak['frames']} / {soak['wall_s']} s ({soak['fps']} FPS) |",
                   f"| soak RSS after warm-up ({soak.get('warmup_frames')} frames) / max / end | {soak.get('rss_after_warmup_mb')} / "
                   f"{soak.get('rss_max_after_warmup_mb')} / {soak.get('rss_end_mb')} MB (growth {soak.get('rss_growth_mb')} MB) |",
                   f"| soak audit records / unique frames / PLC messages | {soak['audit_records']} / {soak['audit_unique_frames']} / {soak['plc_messages']} |",
                   f"| soak fail-safe rejects | {soak['failsafe']} |"]
        if c["throughput_ratio"] >= 0.9:
            md.append(f"\nThroughput >= 90 % of benchmark_app: **met** ({100 * c['throughput_ratio']:.1f} %).")
        else:
            md.append(f"\nThroughput >= 90 % of benchmark_app: **not met** ({100 * c['throughput_ratio']:.1f} %). The "
                      f"pipeline's own CPU per frame ({outside:.2f} ms: decode, resize, NFA, record) competes with "
                      f"inference ({infer_cpu:.2f} ms of CPU per frame) for the same {meta['logical_cpus']} cores, which "
                      f"caps the ratio at roughly {100 * c['ceiling_ratio']:.1f} % even with perfect overlap; the rest is "
                      "thread hand-offs and the GIL (an infer request waits for its callback).")
        md.append("")
    md += ["Notes:",
           f"- Videos are replayed as {args.codec}" + (" (uncompressed AVI, pixel-exact: like a machine-vision camera's raw "
           "frames, decoding is a copy and a colour conversion)" if args.codec == "RGBA" else "") + ". MJPEG is not used: its "
           "YUV round trip moves G against B/R by ~2 levels on grey parts, and the magnetic-tile IR then rejected every "
           "good part. The demo's lossless FFV1 file costs the decode shown in its profile row.",
           "- Profile rows: one stage at a time on one thread, process CPU per frame (ms), same run. The tree NFA builds "
           "only the max-trees that can matter (`edge.nfa.tree_nfa_screened`): verdicts, regions and the worst log10 NFA "
           "of a reject are exact (tested against the full tree); a pass whose trees were all skipped records the bound "
           "`log10_nfa_bound` instead of its minimum.",
           "- benchmark_app runs with `-hint throughput -infer_precision f32` on the same IR, before and after the "
           "pipeline run; the ratio uses their mean. Timings on a shared 2-core machine swing: compare within one run.",
           ""]
    md.append(f"Acceptance: {json.dumps(result['acceptance'])}\n")
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out + ".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


def _autogroup() -> str:
    """This process's scheduler autogroup and its nice value (CFS shares CPU between autogroups
    first: on a shared machine `echo -20 > /proc/self/autogroup` is what gives a run priority)."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return ""


def stage_decode(src: str, n: int = 100) -> float:
    import resource

    cap = cv2.VideoCapture(src)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    k = 0
    while k < n:
        ok, _ = cap.read()
        if not ok:
            break
        k += 1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cap.release()
    return round((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / max(k, 1) * 1e3, 3)


if __name__ == "__main__":
    sys.exit(main())
