"""edge-eval: image AUROC, pixel AUROC and AUPRO of an IR or a checkpoint on an MVTec-layout test set.

    edge-eval --model tile.xml --data DIR [--json OUT] [--report OUT.html]
    edge-eval --model RUN_DIR  --data DIR [--json OUT] [--report OUT.html]

Per defect type: image AUROC of that type against the good images, pixel AUROC and AUPRO over
the good images plus that type. A checkpoint also reports parameters and GMACs of the backbone
and the flow separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import EdgeError


def evaluate(model_path: str, data: str, threads: int = 0, report: str | None = None) -> dict:
    from training.data import load_folder

    from .scoring import score_ir, score_torch

    folder = load_folder(data, require_test=True)
    if not folder.has_labels:
        raise EdgeError(f"data folder {data} needs good and defective test images (test/good and test/<type>) to evaluate")
    path = Path(model_path)
    t0 = time.perf_counter()
    if path.suffix.lower() == ".xml":
        from edge.model import AnomalyModel

        model = AnomalyModel(path, threads=threads)
        size, threshold, kind = model.input_size, model.info.image_threshold, f"ir:{model.info.precision}"
        scored = score_ir(model, folder.test)
    else:
        from training.checkpoint import load_model

        import torch

        if threads:
            torch.set_num_threads(threads)
        model, _ = load_model(path)
        size, threshold, kind = model.config.input_size, None, "torch"
        scored = score_torch(model, folder.test)
    elapsed = time.perf_counter() - t0
    complexity = None
    if kind == "torch":
        from training.flops import count

        complexity = count(model)
    return summarize(folder, scored, size, str(path), kind, data, elapsed, complexity, threshold, report)


def summarize(folder, scored, size, model_name: str, kind: str, data: str, elapsed: float, complexity: dict | None,
              threshold: float | None = None, report: str | None = None) -> dict:
    """Metrics of scored test images (shared by edge-eval and benchmarks/accuracy.py)."""
    from training.data import load_mask

    from .metrics import aupro, image_auroc, pixel_auroc

    path = model_name
    labels = np.array([s.label for s in folder.test])
    masks = [load_mask(s, size) for s in folder.test]
    per_defect = {}
    for d in sorted({s.defect for s in folder.test} - {"good"}):
        sel = np.array([s.defect in ("good", d) for s in folder.test])
        idx = np.where(sel)[0]
        has_mask = any(masks[i].any() for i in idx)
        per_defect[d] = {
            "n": int(sum(s.defect == d for s in folder.test)),
            "image_auroc": image_auroc(labels[sel], scored.scores[sel]),
            "pixel_auroc": pixel_auroc([masks[i] for i in idx], [scored.maps[i] for i in idx]) if has_mask else None,
            "aupro": aupro([masks[i] for i in idx], [scored.maps[i] for i in idx]) if has_mask else None,
        }
    result = {
        "model": str(path), "runs_as": kind, "data": str(data), "n_test": len(labels), "n_defective": int(labels.sum()),
        "image_auroc": image_auroc(labels, scored.scores),
        "pixel_auroc": pixel_auroc(masks, scored.maps) if any(m.any() for m in masks) else None,
        "aupro": aupro(masks, scored.maps) if any(m.any() for m in masks) else None,
        "per_defect_image_auroc": {d: v["image_auroc"] for d, v in per_defect.items()},
        "per_defect": per_defect,
        "input_size": list(size),
        "complexity": complexity,
        "ms_per_image": 1e3 * elapsed / len(labels),
        "scores": {s.path.name if s.label == 0 else f"{s.defect}/{s.path.name}": float(v) for s, v in zip(folder.test, scored.scores)},
    }
    if threshold is not None:
        rejected = scored.scores >= threshold
        result.update(image_threshold=threshold, missed_defects=int((~rejected & (labels == 1)).sum()),
                      false_rejects=int((rejected & (labels == 0)).sum()))
    if report:
        from .report import write_report

        result["report"] = str(write_report(report, result, folder.test, scored.scores, scored.maps, masks, size))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-eval", description="Evaluate an IR or a checkpoint on a labelled test set.")
    ap.add_argument("--model", required=True, help="IR (.xml) or RUN_DIR / checkpoint")
    ap.add_argument("--data", required=True, help="MVTec-layout folder with test/good and test/<type>")
    ap.add_argument("--json", help="write the full result here")
    ap.add_argument("--report", help="write an HTML report (worst good parts, best/worst defects, heatmaps) here")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        result = evaluate(a.model, a.data, a.threads, a.report)
    except EdgeError as err:
        print(f"edge-eval: error: {err}", file=sys.stderr)
        return err.exit_code
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("scores", "per_defect_image_auroc")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
