"""edge-calibrate: export a trained model to an OpenVINO IR for the edge, with its decision thresholds.

    edge-calibrate --checkpoint RUN_DIR --data DIR --out tile.xml [--precision int8|fp16|fp32] [--target-frr 0.005]
    edge-calibrate --model tile.xml --set image_threshold=3.2     (rewrite metadata, no re-export)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import asdict
from pathlib import Path

from edge.errors import EdgeError


def calibrate(checkpoint: str, data: str, out: str, precision: str = "int8", target_frr: float = 0.005,
              progress: bool = True) -> dict:
    from tqdm import tqdm

    import edge
    from edge.metadata import ModelInfo, update_info, write_info
    from edge.model import AnomalyModel
    from training.checkpoint import load_model
    from training.data import DataError, Sample, fingerprint, load_folder, load_image

    from .export import save_ir, to_openvino
    from .quantize import calibration_frames, quantize_backbone
    from .scoring import score_ir
    from .thresholds import threshold_at_frr

    if precision not in ("int8", "fp16", "fp32"):
        raise EdgeError(f"unknown precision {precision!r}: use int8, fp16 or fp32")
    model, payload = load_model(checkpoint)
    folder = load_folder(data)
    holdout = [Sample(Path(p), 0) for p in payload.get("holdout", [])]
    train_files = [Sample(Path(p), 0) for p in payload.get("train_files", [])] or folder.train
    if not holdout:
        raise DataError("the checkpoint names no held-out good images: retrain with edge-train --holdout 0.15")
    missing = [s.path for s in holdout + train_files if not s.path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} training images named in the checkpoint are missing (e.g. {missing[0]}): pass the data folder it was trained on")
    size = model.config.input_size
    steps = tqdm(total=4, desc="calibrate", unit="step", disable=not progress)
    ov_model = to_openvino(model)
    steps.update(1)
    ignored: list[str] = []
    n_cal = n_def = 0
    if precision == "int8":
        good = [load_image(s, size) for s in train_files[:300]]
        frames, n_def = calibration_frames(good)
        n_cal = len(frames)
        ov_model, ignored = quantize_backbone(ov_model, frames, model.float_scopes)
    steps.update(1)
    info = ModelInfo(
        edge_inspect_version=edge.__version__, model_kind=payload["kind"], backbone=model.config.backbone,
        input_height=size[0], input_width=size[1], latent_channels=list(model.channels),
        mean_values=" ".join(f"{255 * m:g}" for m in model.mean), scale_values=" ".join(f"{255 * s:g}" for s in model.std),
        score_kind=f"mean of top {model.config.top_fraction:.0%} of 0.5*mean_c(z^2) summed over scales",
        precision=precision, quantized_scope="backbone" if precision == "int8" else "none",
        target_frr=target_frr, n_calibration_good=len(holdout), training_fingerprint=payload.get("data_fingerprint", ""),
        calibrated_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    write_info(ov_model, info)
    out_path = Path(out)
    save_ir(ov_model, out_path, compress_to_fp16=(precision == "fp16"))
    steps.update(1)
    # thresholds come from the IR as the edge will run it, on good images the flow never saw
    edge_model = AnomalyModel(out_path)
    hold_scores = score_ir(edge_model, holdout, keep_maps=False).scores
    thr = threshold_at_frr(hold_scores, target_frr)
    update_info(ov_model, image_threshold=thr.threshold, frr_upper_bound=thr.frr_upper_bound)
    save_ir(ov_model, out_path, compress_to_fp16=(precision == "fp16"))
    steps.update(1)
    steps.close()
    report = {"model": str(out_path), "precision": precision, "checkpoint": payload["path"], "kind": payload["kind"],
              "input_size": list(size), "image_threshold": asdict(thr), "holdout_scores": hold_scores.tolist(),
              "calibration_images": n_cal, "calibration_images_with_synthetic_defects": n_def,
              "kept_in_floating_point": len(ignored), "inference_precision": edge_model.inference_precision}
    out_path.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def set_metadata(model_path: str, items: list[str]) -> dict:
    from edge.metadata import update_info
    from edge.model import read_ir

    from .export import save_ir

    ir = read_ir(model_path)
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise EdgeError(f"--set expects KEY=VALUE, got {item!r}")
        changes[key] = value
    info = update_info(ir, **changes)
    save_ir(ir, model_path)
    return {k: getattr(info, k) for k in changes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-calibrate", description="Export, quantize and calibrate a model for the edge.")
    ap.add_argument("--checkpoint", help="RUN_DIR written by edge-train")
    ap.add_argument("--data", help="the data folder the model was trained on")
    ap.add_argument("--out", help="IR to write (tile.xml; tile.bin beside it)")
    ap.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"])
    ap.add_argument("--target-frr", type=float, default=0.005, help="target false-reject rate of good parts")
    ap.add_argument("--model", help="with --set: an existing IR whose metadata to rewrite")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="rewrite one metadata key")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.set:
            if not a.model:
                raise EdgeError("--set needs --model tile.xml")
            result = set_metadata(a.model, a.set)
        else:
            if not (a.checkpoint and a.data and a.out):
                raise EdgeError("give --checkpoint RUN_DIR --data DIR --out tile.xml (or --model tile.xml --set KEY=VALUE)")
            result = calibrate(a.checkpoint, a.data, a.out, a.precision, a.target_frr, progress=not a.no_progress)
            result = {k: result[k] for k in ("model", "precision", "image_threshold", "calibration_images", "kept_in_floating_point")}
    except EdgeError as err:
        print(f"edge-calibrate: error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
