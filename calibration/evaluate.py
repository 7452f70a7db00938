"""edge-eval: image and pixel AUROC of an IR or a training checkpoint on an MVTec-layout test set.

    edge-eval --model tile.xml --data DIR [--json OUT]
    edge-eval --model RUN_DIR  --data DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.errors import EdgeError


def evaluate(model_path: str, data: str, threads: int = 0) -> dict:
    from training.data import load_folder, load_mask

    from .metrics import image_auroc, pixel_auroc
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

        model, _ = load_model(path)
        size, threshold, kind = model.config.input_size, None, "torch"
        scored = score_torch(model, folder.test)
    elapsed = time.perf_counter() - t0
    labels = np.array([s.label for s in folder.test])
    masks = [load_mask(s, size) for s in folder.test]
    result = {
        "model": str(path), "runs_as": kind, "data": str(data), "n_test": len(labels), "n_defective": int(labels.sum()),
        "image_auroc": image_auroc(labels, scored.scores),
        "pixel_auroc": pixel_auroc(masks, scored.maps) if any(m.any() for m in masks) else None,
        "per_defect_image_auroc": {
            d: image_auroc(labels[sel], scored.scores[sel])
            for d in sorted({s.defect for s in folder.test} - {"good"})
            for sel in [np.array([s.defect in ("good", d) for s in folder.test])]
        },
        "ms_per_image": 1e3 * elapsed / len(labels),
        "scores": {s.path.name if s.label == 0 else f"{s.defect}/{s.path.name}": float(v) for s, v in zip(folder.test, scored.scores)},
    }
    if threshold is not None:
        rejected = scored.scores >= threshold
        result.update(image_threshold=threshold, missed_defects=int((~rejected & (labels == 1)).sum()),
                      false_rejects=int((rejected & (labels == 0)).sum()))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge-eval", description="Evaluate an IR or a checkpoint on a labelled test set.")
    ap.add_argument("--model", required=True, help="IR (.xml) or RUN_DIR / checkpoint")
    ap.add_argument("--data", required=True, help="MVTec-layout folder with test/good and test/<type>")
    ap.add_argument("--json", help="write the full result here")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        result = evaluate(a.model, a.data, a.threads)
    except EdgeError as err:
        print(f"edge-eval: error: {err}", file=sys.stderr)
        return err.exit_code
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
