"""FP32 vs FP16 vs INT8 IRs of one trained model, measured side by side in one run.

    .venv/bin/python benchmarks/quantization.py [--only magnetic_tile] [--runs /tmp/edge_inspect_quant]

Per MVTec-layout set under ../shared/datasets: trains MS-Flow with the accuracy benchmark's main
setting for that set (or reuses a run folder), calibrates it with edge-calibrate's workflow at each
precision, and measures on the test split: image / pixel AUROC of each IR, latency at batch 1 with
1 and 2 threads (median and p99 over --runs-per-point runs after warm-up) at f32 inference
precision (what CPUs without BF16 run) and at OpenVINO's default (BF16 where the CPU has it: the
precision that actually ran is recorded), and IR size. Writes benchmarks/results/quantization.md/.json.

--kernel-isa (default avx512_core_vnni: an edge PC without BF16, hence without AMX) calibrates every IR with
edge-calibrate --kernel-isa and times them at f32 under that cap, as edge-inspect runs them; this machine's own
kernels (no cap) are timed too, at f32 and at OpenVINO's default precision, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_isa, cpu_name  # noqa: E402
from calibration.timing import interleaved_times_ms  # noqa: E402
from edge.cpu import KERNEL_ISA_ENV, KERNEL_ISAS, cap_kernel_isa, conv_kernels, kernels_that_ran  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ROOT.parent / "shared" / "datasets"


def latency(xmls: dict[str, Path], frame: np.ndarray, threads: int, hint: str | None, runs: int) -> dict[str, dict]:
    """Latency of several IRs, timed side by side (calibration.timing: turns of several inferences of each, the
    first ones of a turn untimed, so that load from other work on this shared machine hits every IR alike)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    core = ov.Core()
    compiled = {name: core.compile_model(str(xml), "CPU", config) for name, xml in xmls.items()}
    times = dict(zip(compiled, interleaved_times_ms(list(compiled.values()), frame, runs, warmup=20)))
    out = {}
    for name, c in compiled.items():
        ran = c.get_property("INFERENCE_PRECISION_HINT")
        out[name] = {"threads": threads, "hint": hint or "default", "ran_as": ran.to_string() if hasattr(ran, "to_string") else str(ran),
                     "kernel_cap": os.environ.get(KERNEL_ISA_ENV) or "none", "int8_kernels": kernels_that_ran(c),
                     "p50_ms": float(np.median(times[name])), "p10_ms": float(np.percentile(times[name], 10)),
                     "p99_ms": float(np.percentile(times[name], 99)), "runs": runs}
    return out


def latency_in_fresh_process(xmls: dict[str, Path], frame: np.ndarray, threads: int, hint: str | None,
                             runs: int, kernel_cap: str = "") -> dict[str, dict]:
    """`latency` in a new Python process that loads nothing but these IRs, as an edge PC runs its one model.

    Timed inside the process that had just trained, exported, quantized and evaluated (torch and NNCF thread pools,
    a dozen compiled models), 2 threads were no faster than 1 for every IR: 2026-12-02, FP32 at f32 29.9 ms at 1
    thread and 26.4 ms at 2, INT8 17.7 and 17.5; the same IRs in a fresh process minutes later, on a host then
    slower overall, 1.5x faster at 2 threads than at 1 (FP32 41.8 -> 27.6 ms, INT8 26.3 -> 18.3).

    `kernel_cap`: the oneDNN instruction-set cap the process runs under (edge.cpu.cap_kernel_isa; "" = none), which
    is per process: an IR calibrated for an edge PC without AMX is timed under its cap, the machine's own default
    execution (AMX-BF16 for FP32 at OpenVINO's default precision) without one."""
    import subprocess
    import tempfile

    env = {k: v for k, v in os.environ.items() if k != KERNEL_ISA_ENV}
    if kernel_cap:
        env[KERNEL_ISA_ENV] = kernel_cap

    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frame.npy", frame)
        job = {"xmls": {k: str(v) for k, v in xmls.items()}, "frame": str(Path(tmp) / "frame.npy"), "threads": threads,
               "hint": hint, "runs": runs}
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--time-only", json.dumps(job)],
                              capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the timing process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def conv_precisions(xml: Path) -> dict[str, int]:
    """How many (Group)Convolution layers ran in each precision / kernel (from the executed graph)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    counts: dict[str, int] = {}
    for layer, precision, kernel in conv_kernels(compiled):
        key = f"{layer} {precision} ({kernel})"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def model_api_check(xml: Path, data: Path) -> dict:
    """Open the IR with OpenVINO model_api's AnomalyDetection (compiled as the edge compiles it: f32 and the
    IR's thread pin, edge.model.compile_config) and compare its labels with edge-inspect's verdicts on every
    test image."""
    try:
        import openvino as ov
        from model_api.adapters import OpenvinoAdapter
        from model_api.models import AnomalyDetection
    except ImportError as err:
        return {"skipped": f"model_api not importable ({err})"}
    from edge.model import AnomalyModel, compile_config
    from training.data import load_folder, load_image

    ours = AnomalyModel(xml)
    wrapped = AnomalyDetection.create_model(OpenvinoAdapter(ov.Core(), str(xml), device="CPU",
                                                            plugin_config=compile_config(ours.info)))
    thr = ours.info.image_threshold
    rows, agree = [], 0
    for s in load_folder(data).test:
        frame = load_image(s, ours.input_size)
        res, mine = wrapped(frame), ours.infer(frame)
        agree += res.pred_label == ("Anomaly" if mine.score > thr else "Normal")
        rows.append({"image": f"{s.path.parent.name}/{s.path.name}", "label": int(s.label), "edge_score": mine.score,
                     "pred_label": res.pred_label, "pred_score": float(res.pred_score), "mask_pixels": int(res.pred_mask.sum())})
    example = {k: next(r for r in rows if r["label"] == k) for k in (0, 1)}
    return {"n": len(rows), "labels_agree_with_edge": agree, "image_threshold": thr,
            "normalization_scale": ours.info.normalization_scale, "example_good": example[0], "example_defect": example[1],
            "defects_called_anomaly": sum(r["pred_label"] == "Anomaly" for r in rows if r["label"]),
            "defects": sum(r["label"] for r in rows), "good_called_anomaly": sum(r["pred_label"] == "Anomaly" for r in rows if not r["label"]),
            "good": sum(1 - r["label"] for r in rows)}


def same_run(run: Path, main: dict, epochs: int) -> bool:
    """A finished run folder trained with the accuracy benchmark's main setting (reused instead of retraining;
    benchmarks/accuracy.py's own run folder for the set qualifies)."""
    if not (run / "checkpoint.pt").is_file() or not (run / "config.json").is_file():
        return False
    from training.models import make_config, saved_config

    saved = json.loads((run / "config.json").read_text())
    cfg = saved.get("train_config", {})
    # the whole model config, not only the overrides: a run trained before a default changed does not qualify
    same_model = saved_config("msflow", saved.get("model_config", {})) == make_config("msflow", main["overrides"])
    return (same_model and cfg.get("epochs") == epochs
            and all(cfg.get(k) == v for k, v in main.get("train", {}).items()))


def run_set(data: Path, runs_dir: Path, runs_per_point: int, epochs: int | None, int8_weights: int = 7,
            kernel_isa: str = "native") -> dict:
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
    if not same_run(run, main, epochs or main["epochs"]):
        if run.exists():
            shutil.rmtree(run)
        train(TrainConfig(data=str(data), out=str(run), model_overrides=dict(main["overrides"]),
                          epochs=epochs or main["epochs"], progress=False, **main.get("train", {})))
    train_s = time.time() - t0
    out = {"data": data.name, "kernel_isa": kernel_isa, "train_config": main, "train_seconds": round(train_s, 1), "precisions": {},
           "model_config": json.loads((run / "config.json").read_text())["model_config"]}
    xmls, frame = {}, None
    for precision in ("fp32", "fp16", "int8"):
        xml = runs_dir / data.name / f"tile-{precision}.xml"
        t0 = time.time()
        report = calibrate(CalibrationConfig(str(run), str(data), str(xml), precision=precision,
                                             allow_mixed_sizes=True, int8_weights=int8_weights, kernel_isa=kernel_isa,
                                             progress=False))
        cal_s = time.time() - t0
        ev = evaluate(str(xml), str(data))
        frame = load_image(load_folder(data).test[0], tuple(report["input_size"]))
        xmls[precision] = xml
        out["precisions"][precision] = {
            "image_auroc": ev["image_auroc"], "pixel_auroc": ev["pixel_auroc"], "aupro": ev.get("aupro"),
            "ir_mb": round(xml.with_suffix(".bin").stat().st_size / 1e6, 2), "calibrate_seconds": round(cal_s, 1),
            "quantized": report.get("quantization", {}).get("chosen", "none"),
            "candidates": report.get("quantization", {}).get("candidates", []),
            "latent_scale_holdout": report["shipped"]["latent_scale_holdout"],
            "frr": {"target": report["thresholds"]["image"]["target_frr"],
                    "upper_bound_95": report["thresholds"]["image"]["frr_upper_bound"],
                    "measured_on_test_good": report["thresholds"].get("false_reject_rate_on_test_good")},
            "convolutions": conv_precisions(xml), "latency": [], "int8_kernels": report["host"]["int8_kernels"],
        }
    # timed as the edge runs the IRs (f32, under their kernel cap), then this machine's own kernels (no cap) at f32
    # and at OpenVINO's default precision: each in a fresh process, the cap being per process
    edge_cap = KERNEL_ISAS[kernel_isa]
    jobs = [("f32", edge_cap), *([("f32", "")] if edge_cap else []), (None, "")]
    for th in (1, 2):
        for hint, cap in jobs:
            for precision, lat in latency_in_fresh_process(xmls, frame, th, hint, runs_per_point, cap).items():
                lat["as_edge_runs"] = hint == "f32" and cap == edge_cap
                out["precisions"][precision]["latency"].append(lat)
    out["model_api"] = model_api_check(xmls["int8"], data)
    return out


def write(results: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantization.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")
    lines = ["# FP32 vs FP16 vs INT8 IR (measured here, one run)", "",
             *([f"**{meta['note']}**", ""] if meta.get("note") else []),
             f"Written by `benchmarks/quantization.py` on {meta['date']}, CPU: {meta['cpu']} ({meta.get('isa', '?')}; "
             f"{meta['cores']} cores, shared "
             f"with other work while it ran (load average {meta.get('load', '?')} at the start): compare rows of one run only). "
             "Model: MS-Flow, tf_efficientnet_lite0 with the offline ImageNet weights; settings per set as in benchmarks/accuracy.py. "
             "AUROC from edge-eval on the IR (inference at f32). Latency: batch 1, in a fresh process per thread count and hint "
             "that loads only the IRs, after 20 warm-up runs, the IRs measured in interleaved turns (2 untimed, then 10 timed "
             "inferences of each per turn: calibration/timing.py) so that load from other jobs hits them alike; "
             "'ran as' is the inference precision OpenVINO reports it used. "
             f"INT8 weights: {meta.get('int8_weights', 7)} bits (edge-calibrate --int8-weights; 8 runs only on CPUs with VNNI "
             "or AMX-INT8, 7 on every x86 CPU).", ""]
    for r in results:
        pr = r["precisions"]
        mc = r.get("model_config", {})
        lines += [f"## {r['data']}", "", f"MS-Flow {mc.get('backbone', '?')}, input {mc.get('input_size', '?')}, stages {mc.get('stages', '?')}, "
                  f"flow depth {mc.get('flow_depth', '?')}, k = {mc.get('subfeatures', '?')}, coupling '{mc.get('coupling', 'permute')}'; "
                  f"{r['train_config']['epochs']} epochs; {r['train_seconds']} s of training in this run (near 0 when it reused a finished run "
                  "folder trained with this setting).", "", "| IR | quantized | image AUROC | pixel AUROC | IR MB | latent Σz²/C (held-out good) |",
                  "|---|---|---|---|---|---|"]
        for p, v in pr.items():
            lines.append(f"| {p} | {v['quantized']} | {v['image_auroc']:.4f} | {v['pixel_auroc']:.4f} | {v['ir_mb']} | "
                         f"{v['latent_scale_holdout']:.3f} |")
        if pr["int8"].get("candidates"):
            lines += ["", "INT8 splits tried by edge-calibrate (validation = the labelled test set, AUROC at f32; the first "
                      "accepted one ships):", "",
                      "| split | activation ranges from | subnet convs in INT8 | kept float (slower in INT8 here) | "
                      "image AUROC drop | pixel AUROC drop | accepted |",
                      "|---|---|---|---|---|---|---|"]
            for c in pr["int8"]["candidates"]:
                lines.append(f"| {c['split']} | {c['calibration_set']} | {c.get('subnet_convs_in_int8', 0)} | "
                             f"{c.get('subnet_convs_float_for_speed', '–')} | {c['image_auroc_drop']:+.4f} | "
                             f"{c['pixel_auroc_drop']:+.4f} | {c['accepted']} |")
        lines += ["", "Convolution layers of the INT8 IR as they ran (runtime precision and kernel): "
                  + "; ".join(f"{k}: {n}" for k, n in pr["int8"].get("convolutions", {}).items()) + ".", ""]
        lines += ["| IR | hint | ran as | kernel cap | INT8 kernels | threads | p50 ms | p10 ms | p99 ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p, v in pr.items():
            for lat in v["latency"]:
                lines.append(f"| {p} | {lat['hint']} | {lat['ran_as']} | {lat['kernel_cap']} | "
                             f"{lat['int8_kernels']} | {lat['threads']} | {lat['p50_ms']:.2f} | "
                             f"{lat.get('p10_ms', float('nan')):.2f} | {lat['p99_ms']:.2f} |")

        def p50(prec, hint, rows):
            """p50 ms per thread count of the rows timed as the edge runs the IR (rows="edge") or with this machine's
            own kernels, no cap (rows="native")."""
            return {lat["threads"]: lat["p50_ms"] for lat in pr[prec]["latency"] if lat["hint"] == hint
                    and (lat["as_edge_runs"] if rows == "edge" else lat["kernel_cap"] == "none")}

        f32, i8, dflt = p50("fp32", "f32", "edge"), p50("int8", "f32", "edge"), p50("fp32", "default", "native")
        dflt_as = {lat["ran_as"] for lat in pr["fp32"]["latency"] if lat["hint"] == "default"}
        edge_kernels = {lat["int8_kernels"] for lat in pr["int8"]["latency"] if lat["as_edge_runs"]}
        caps = {lat["kernel_cap"] for lat in pr["int8"]["latency"] if lat["as_edge_runs"]}
        r1 = {t: i8[t] / f32[t] for t in sorted(f32)}
        r2 = {t: i8[t] / dflt[t] for t in sorted(dflt)}
        r3 = {t: v / dflt[t] for t, v in p50("int8", "default", "native").items()}
        f32n, i8n = p50("fp32", "f32", "native"), p50("int8", "f32", "native")
        r4 = {t: i8n[t] / f32n[t] for t in sorted(f32n)}
        d_img = pr["int8"]["image_auroc"] - pr["fp32"]["image_auroc"]
        d_pix = pr["int8"]["pixel_auroc"] - pr["fp32"]["pixel_auroc"]
        ok = lambda c: "met" if c else "NOT met"  # noqa: E731
        lines += ["", "Issue 5 acceptance, this run:", "",
                  f"- INT8 / FP32 p50 latency, both at f32 as the edge runs them (kernel cap {', '.join(sorted(caps))}: "
                  f"INT8 layers on {', '.join(sorted(edge_kernels))}; the IRs were calibrated with edge-calibrate --kernel-isa "
                  f"{r.get('kernel_isa', 'native')}): " + ", ".join(f"{t} thread(s) {v:.2f}" for t, v in r1.items())
                  + f" (target ≤ 0.60: {ok(all(v <= 0.6 for v in r1.values()))})"
                  + ("; with this machine's own kernels (INT8 on AMX, no cap): " + ", ".join(f"{t} thread(s) {v:.2f}" for t, v in r4.items())
                     if r.get("kernel_isa", "native") != "native" else "") + ";",
                  f"- INT8 as the edge runs it / FP32 at OpenVINO's default, no cap (ran as {', '.join(sorted(dflt_as))}; "
                  "timed in separate fresh processes, back to back): "
                  + ", ".join(f"{t} thread(s) {v:.2f}" for t, v in r2.items()) + f" (target ≤ 1.00: {ok(all(v <= 1.0 for v in r2.values()))}); "
                  "both at OpenVINO's default (the INT8 IR's float parts then run in bf16 too, which the flow's outputs "
                  "should not, see NOTES.md): " + ", ".join(f"{t} thread(s) {v:.2f}" for t, v in r3.items()) + ";",
                  f"- image AUROC INT8 − FP32 {100 * d_img:+.2f} pt (target within 0.5 pt: {ok(abs(d_img) <= 0.005)}); "
                  f"pixel AUROC {100 * d_pix:+.2f} pt (target within 1 pt: {ok(abs(d_pix) <= 0.01)});"]
        frr = pr["int8"].get("frr", {})
        if frr.get("measured_on_test_good") is not None:
            lines.append(f"- false-reject rate on test/good at the INT8 IR's threshold: {100 * frr['measured_on_test_good']:.1f} % "
                         f"against the stated 95 % upper bound {100 * frr['upper_bound_95']:.1f} % (target FRR {100 * frr['target']:.1f} %): "
                         f"{ok(frr['measured_on_test_good'] <= frr['upper_bound_95'])}.")
        ma = r.get("model_api", {})
        if "skipped" in ma:
            lines += ["", f"model_api: {ma['skipped']}"]
        elif ma:
            g, d = ma["example_good"], ma["example_defect"]
            lines += ["", f"OpenVINO model_api `AnomalyDetection` on the INT8 IR (no sidecar; f32): labels agree with edge-inspect's "
                      f"score verdicts on {ma['labels_agree_with_edge']} of {ma['n']} test images; it calls {ma['defects_called_anomaly']} "
                      f"of {ma['defects']} defective and {ma['good_called_anomaly']} of {ma['good']} good images Anomaly. "
                      f"E.g. {d['image']}: pred_label {d['pred_label']}, pred_score {d['pred_score']:.3f} (edge score {d['edge_score']:.4g}, "
                      f"image_threshold {ma['image_threshold']:.4g}); {g['image']}: {g['pred_label']}, {g['pred_score']:.3f} "
                      f"(edge score {g['edge_score']:.4g}). pred_score is model_api's confidence in its label: "
                      f"clip((score − image_threshold) / normalization_scale + 0.5, 0, 1) for Anomaly, 1 minus that for Normal "
                      f"(normalization_scale {ma['normalization_scale']:.4g})."]
        lines.append("")
    (RESULTS / "quantization.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--time-only"]:  # the fresh timing process of latency_in_fresh_process
        job = json.loads(argv[1])
        print(json.dumps(latency({k: Path(v) for k, v in job["xmls"].items()}, np.load(job["frame"]), job["threads"],
                                 job["hint"], job["runs"])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=str(DATASETS))
    ap.add_argument("--only", action="append")
    ap.add_argument("--runs", default="/tmp/edge_inspect_quant", help="run folders and IRs (not the repo)")
    ap.add_argument("--runs-per-point", type=int, default=200)
    ap.add_argument("--epochs", type=int, help="override the training epochs")
    ap.add_argument("--int8-weights", type=int, default=7, choices=[7, 8], help="as edge-calibrate --int8-weights")
    ap.add_argument("--kernel-isa", default="avx512_core_vnni", choices=list(KERNEL_ISAS),
                    help="as edge-calibrate --kernel-isa: the edge PC the IRs are calibrated and timed for. The default, "
                         "AVX-512 with VNNI and no BF16/AMX, is the issue's 'industrial PC without BF16'; 'native' uses "
                         "this machine's own kernels (AMX for INT8 here)")
    ap.add_argument("--note", help="a line printed in bold at the top of the results (what else this run showed)")
    a = ap.parse_args(argv)
    sets = sorted(d for d in Path(a.datasets).iterdir() if (d / "train" / "good").is_dir()) if Path(a.datasets).is_dir() else []
    sets = [d for d in sets if not a.only or d.name in a.only]
    if not sets:
        print(f"quantization: no MVTec-layout data sets under {a.datasets}", file=sys.stderr)
        return 2
    load = round(os.getloadavg()[0], 1)
    cap_kernel_isa(a.kernel_isa)  # before anything compiles: oneDNN reads the cap once per process
    results = [run_set(d, Path(a.runs), a.runs_per_point, a.epochs, a.int8_weights, a.kernel_isa) for d in sets]
    write(results, {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "isa": cpu_isa(), "cores": os.cpu_count(),
                    "load": load, "int8_weights": a.int8_weights, **({"note": a.note} if a.note else {})})
    print((RESULTS / "quantization.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
