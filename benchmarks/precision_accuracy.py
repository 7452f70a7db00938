"""What OpenVINO's default BF16 execution does to an edge-inspect IR's decisions, against f32.

    python benchmarks/precision_accuracy.py --data ../shared/datasets/magnetic_tile tile-fp32.xml tile-int8.xml

On CPUs with AVX512-BF16 or AMX, OpenVINO runs the float parts of an IR in bfloat16 unless told
INFERENCE_PRECISION_HINT=f32, which edge-inspect always passes (edge.model.compile_config). This
scores every test image of an MVTec-layout set with each IR at f32 and at bf16, one thread, and
reports image/pixel AUROC, how far the score, the map and the per-scale latent statistics move, and
how many verdicts flip at the threshold the IR carries (edge-calibrate computed it at f32).
Writes precision_accuracy.md and .json under --out. On a CPU without BF16, both runs are f32
('ran as' says so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_isa, cpu_name  # noqa: E402


def measure(xml: str, frames, masks, labels) -> list[dict]:
    from calibration.metrics import image_auroc, pixel_auroc
    from edge.model import AnomalyModel

    rows, ref = [], None
    for precision in ("f32", "bf16"):
        model = AnomalyModel(xml, threads=1, precision=precision)
        out = [model.infer(f) for f in frames]
        scores = np.array([o.score for o in out])
        maps = [o.anomaly_map for o in out]
        zsq = np.array([[float(z.mean()) for z in o.zsq] for o in out])
        row = {"ir": Path(xml).name, "precision": model.info.precision, "hint": precision, "ran_as": model.inference_precision,
               "image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc(masks, maps)}
        if ref is None:
            ref = scores, maps, zsq
        else:
            s0, m0, z0 = ref
            rel = np.abs(scores - s0) / np.maximum(np.abs(s0), 1e-12)
            th = model.info.image_threshold
            row.update({"score_rel_change_median": float(np.median(rel)), "score_rel_change_max": float(rel.max()),
                        "map_max_change_over_map_max": float(max(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
                                                                 for a, b in zip(maps, m0))),
                        "zsq_mean_rel_change_max": float(np.max(np.abs(zsq - z0) / z0)),
                        "verdict_flips": int(((scores >= th) != (s0 >= th)).sum()), "image_threshold": th})
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("irs", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    a = ap.parse_args(argv)
    from edge.model import AnomalyModel
    from training.data import load_folder, load_image, load_mask

    size = AnomalyModel(a.irs[0], threads=1).input_size
    test = load_folder(a.data, require_test=True).test
    frames = [load_image(s, size) for s in test]
    masks = [load_mask(s, size) for s in test]
    labels = np.array([s.label for s in test])
    rows = [r for xml in a.irs for r in measure(xml, frames, masks, labels)]
    meta = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "cpu": cpu_name(), "isa": cpu_isa(),
            "data": str(a.data), "n_test": len(test), "n_defective": int(labels.sum()), "threads": 1}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "precision_accuracy.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    f = lambda v, nd=4: "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["# f32 vs OpenVINO's default BF16 execution of edge-inspect IRs (measured here, one run)", "",
             f"Written by `benchmarks/precision_accuracy.py` on {meta['date']}, CPU: {meta['cpu']} ({meta['isa']}), one thread. "
             f"Data: {Path(a.data).name} test set, {meta['n_test']} images ({meta['n_defective']} defective). "
             "Changes are bf16 against f32 of the same IR; verdict flips count images whose reject/pass verdict at the "
             "IR's own image_threshold (calibrated at f32) differs between the two.", "",
             "| IR | precision | hint | ran as | image AUROC | pixel AUROC | score change median / max | map max change / map max | "
             "latent mean Σz² change, max | verdict flips |", "|---|---|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        ch = (f"{100 * r['score_rel_change_median']:.1f} % / {100 * r['score_rel_change_max']:.0f} %"
              if "score_rel_change_median" in r else "–")
        lines.append(f"| {r['ir']} | {r['precision']} | {r['hint']} | {r['ran_as']} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} | "
                     f"{ch} | {f(r.get('map_max_change_over_map_max'), 2)} | {f(r.get('zsq_mean_rel_change_max'), 3)} | "
                     f"{f(r.get('verdict_flips'))} |")
    (a.out / "precision_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
