"""edge-calibrate: export a trained model to an OpenVINO IR for the edge, with its decision thresholds.

    edge-calibrate --checkpoint RUN_DIR --data DIR --out tile.xml [--precision int8|fp16|fp32] [--target-frr 0.005]
    edge-calibrate --model tile.xml --set image_threshold=3.2     (rewrite metadata, no re-export)
    edge-calibrate --model tile.xml --rethreshold GOOD_DIR [--target-frr 0.005]   (on site, from good parts)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.cpu import KERNEL_ISAS
from edge.errors import EdgeError


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
        if key == "kernel_isa" and value not in KERNEL_ISAS:
            raise EdgeError(f"kernel_isa must be one of {', '.join(KERNEL_ISAS)}, not {value!r}")
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
    ap.add_argument("--max-drop", type=float, default=0.005, help="largest image-AUROC drop INT8 may cost against float")
    ap.add_argument("--nfa-epsilon", type=float, default=0.0, help="a region is a defect when log10 NFA < epsilon")
    ap.add_argument("--int8-weights", type=int, default=7, choices=[7, 8],
                    help="INT8 weight bits: 7 runs on every x86 CPU; 8 keeps more accuracy but only runs where the edge PC "
                         "(and this host) has VNNI or AMX-INT8")
    ap.add_argument("--kernel-isa", default="native", choices=list(KERNEL_ISAS),
                    help="the edge PC's instruction set, when it has less than this host: OpenVINO's kernels here are "
                         "capped at it while calibrating, and edge-inspect applies the same cap (avx512_core_vnni: an "
                         "AVX-512 PC without BF16/AMX; avx2_vnni / avx2: most Core and Atom industrial PCs)")
    ap.add_argument("--allow-mixed-sizes", action="store_true", help="accept images of different sizes (each is resized to the input)")
    ap.add_argument("--model", help="with --set: an existing IR whose metadata to rewrite")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="rewrite one metadata key")
    ap.add_argument("--rethreshold", metavar="GOOD_DIR", help="with --model: set image_threshold at --target-frr from "
                                                              "good parts imaged at the line (no re-export)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.rethreshold:
            if not a.model:
                raise EdgeError("--rethreshold needs --model tile.xml")
            from .rethreshold import rethreshold

            result = rethreshold(a.model, a.rethreshold, a.target_frr)
        elif a.set:
            if not a.model:
                raise EdgeError("--set needs --model tile.xml")
            result = set_metadata(a.model, a.set)
        else:
            if not (a.checkpoint and a.data and a.out):
                raise EdgeError("give --checkpoint RUN_DIR --data DIR --out tile.xml (or --model tile.xml --set KEY=VALUE)")
            from .calibrate import CalibrationConfig, calibrate

            report = calibrate(CalibrationConfig(checkpoint=a.checkpoint, data=a.data, out=a.out, precision=a.precision,
                                                 target_frr=a.target_frr, max_drop=a.max_drop, nfa_epsilon=a.nfa_epsilon,
                                                 allow_mixed_sizes=a.allow_mixed_sizes, int8_weights=a.int8_weights,
                                                 kernel_isa=a.kernel_isa, progress=not a.no_progress))
            for warning in report["warnings"]:
                print(f"edge-calibrate: warning: {warning}", file=sys.stderr)
            result = {"model": report["model"], "precision": report["precision"],
                      "quantized": report.get("quantization", {}).get("chosen", "none"),
                      "image_threshold": report["thresholds"]["image"]["threshold"],
                      "frr_upper_bound": report["thresholds"]["image"]["frr_upper_bound"],
                      "image_auroc": report["shipped"]["image_auroc"], "validated_on": report["validation"]["source"],
                      "report": str(Path(report["model"]).with_suffix(".report.html"))}
    except EdgeError as err:
        print(f"edge-calibrate: error: {err}", file=sys.stderr)
        return err.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
