"""FP32 vs FP16 vs INT8 IRs of one trained model, measured side by side in one run.

    .venv/bin/python benchmarks/quantization.py [--only magnetic_tile] [--runs /tmp/edge_inspect_quant]

Per MVTec-layout set under ../shared/datasets: trains MS-Flow with the accuracy benchmark's main
setting for that set (or reuses a run folder), calibrates it with edge-calibrate's workflow at each
precision, and measures on the test split: image / pixel AUROC of each IR, latency at batch 1 with
1 and 2 threads (median and p99 over --runs-per-point runs after warm-up) at f32 inference
precision (what CPUs without BF16 run) and at OpenVINO's default (BF16 where the CPU has it: the
precision that actually ran is recorded), and IR size. Writes benchmarks/results/quantization.md/.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ROOT.parent / "shared" / "datasets"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def latency(xml: Path, frame: np.ndarray, threads: int, hint: str | None, runs: int) -> dict:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    request = compiled.create_infer_request()
    for _ in range(20):
        request.infer({0: frame[None]})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: frame[None]})
        times.append(1e3 * (time.perf_counter() - t0))
    return {"threads": threads, "hint": hint or "default", "ran_as": ran.to_string() if hasattr(ran, "to_string") else str(ran),
            "p50_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)), "runs": runs}


def run_set(data: Path, runs_dir: Path, runs_per_point: int, epochs: int | None) -> dict:
    import importlib.util

    from calibration.calibrate import CalibrationConfig, calibrate
    from calibration.evaluate import evaluate
    from training.data import load_folder, load_image
    from training.train import TrainConfig, train

    spec = importlib.util.spec_from_file_location("accuracy", ROOT / "benchmarks" / "accuracy.py")
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    main = acc.MAIN.get(data.name, acc.DEFAULT_MAIN)
    run = runs_dir / data.name / "run"
    t0 = time.time()
    if not (run / "checkpoint.pt").is_file():
        train(TrainConfig(data=str(data), out=str(run), model_overrides=dict(main["overrides"]),
                          epochs=epochs or main["epochs"], progress=False))
    train_s = time.time() - t0
    out = {"data": data.name, "train_config": main, "train_seconds": round(train_s, 1), "precisions": {}}
    for precision in ("fp32", "fp16", "int8"):
        xml = runs_dir / data.name / f"tile-{precision}.xml"
        t0 = time.time()
        report = calibrate(CalibrationConfig(str(run), str(data), str(xml), precision=precision,
                                             allow_mixed_sizes=True, progress=False))
        cal_s = time.time() - t0
        ev = evaluate(str(xml), str(data))
        frame = load_image(load_folder(data).test[0], tuple(report["input_size"]))
        out["precisions"][precision] = {
            "image_auroc": ev["image_auroc"], "pixel_auroc": ev["pixel_auroc"], "aupro": ev.get("aupro"),
            "ir_mb": round(xml.with_suffix(".bin").stat().st_size / 1e6, 2), "calibrate_seconds": round(cal_s, 1),
            "quantized": report.get("quantization", {}).get("chosen", "none"),
            "latent_scale_holdout": report["shipped"]["latent_scale_holdout"],
            "latency": [latency(xml, frame, th, hint, runs_per_point) for hint in ("f32", None) for th in (1, 2)],
        }
    return out


def write(results: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantization.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = ["# FP32 vs FP16 vs INT8 IR (measured here, one run)", "",
             f"Written by `benchmarks/quantization.py` on {meta['date']}, CPU: {meta['cpu']} ({meta['cores']} cores, shared "
             "with other work while it ran: compare rows of one run only). Model: MS-Flow, "
             "tf_efficientnet_lite0 with the offline ImageNet weights; settings per set as in benchmarks/accuracy.py. "
             "AUROC from edge-eval on the IR (inference at f32). Latency: batch 1, median and p99 after 20 warm-up runs; "
             "'ran as' is the inference precision OpenVINO reports it used.", ""]
    for r in results:
        lines += [f"## {r['data']}", "", "| IR | quantized | image AUROC | pixel AUROC | IR MB | latent Σz²/C (held-out good) |",
                  "|---|---|---|---|---|---|"]
        for p, v in r["precisions"].items():
            lines.append(f"| {p} | {v['quantized']} | {v['image_auroc']:.4f} | {v['pixel_auroc']:.4f} | {v['ir_mb']} | "
                         f"{v['latent_scale_holdout']:.3f} |")
        lines += ["", "| IR | hint | ran as | threads | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
        for p, v in r["precisions"].items():
            for lat in v["latency"]:
                lines.append(f"| {p} | {lat['hint']} | {lat['ran_as']} | {lat['threads']} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
        f32 = {(lat["threads"]): lat["p50_ms"] for lat in r["precisions"]["fp32"]["latency"] if lat["hint"] == "f32"}
        i8 = {(lat["threads"]): lat["p50_ms"] for lat in r["precisions"]["int8"]["latency"] if lat["hint"] == "f32"}
        dflt = {(lat["threads"]): lat["p50_ms"] for lat in r["precisions"]["fp32"]["latency"] if lat["hint"] == "default"}
        lines += ["", "INT8 / FP32 p50 latency at f32: " + ", ".join(f"{t} thread(s) {i8[t] / f32[t]:.2f}" for t in sorted(f32))
                  + "; INT8 (f32) / FP32 at OpenVINO's default: " + ", ".join(f"{t} thread(s) {i8[t] / dflt[t]:.2f}" for t in sorted(dflt)),
                  "", f"Image AUROC INT8 − FP32: {r['precisions']['int8']['image_auroc'] - r['precisions']['fp32']['image_auroc']:+.4f}; "
                  f"pixel AUROC INT8 − FP32: {r['precisions']['int8']['pixel_auroc'] - r['precisions']['fp32']['pixel_auroc']:+.4f}.", ""]
    (RESULTS / "quantization.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=str(DATASETS))
    ap.add_argument("--only", action="append")
    ap.add_argument("--runs", default="/tmp/edge_inspect_quant", help="run folders and IRs (not the repo)")
    ap.add_argument("--runs-per-point", type=int, default=200)
    ap.add_argument("--epochs", type=int, help="override the training epochs")
    a = ap.parse_args(argv)
    sets = sorted(d for d in Path(a.datasets).iterdir() if (d / "train" / "good").is_dir()) if Path(a.datasets).is_dir() else []
    sets = [d for d in sets if not a.only or d.name in a.only]
    if not sets:
        print(f"quantization: no MVTec-layout data sets under {a.datasets}", file=sys.stderr)
        return 2
    import os

    results = [run_set(d, Path(a.runs), a.runs_per_point, a.epochs) for d in sets]
    write(results, {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "cores": os.cpu_count()})
    print((RESULTS / "quantization.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
