"""Where a pooled pixel AUROC is lost: defect pixels of each type ranked against the non-defect pixels of each
source (good images, and the defect-free parts of each defect type's images), and how far from a defect the
non-defect pixels that outscore good images lie. A paste check tells the model's own spread from what is in the
defect images: each defect type's defect (its mask's bounding box + 4 px) is copied into good test images at the
same place, and the same distance profile is taken before and after.

    .venv/bin/python benchmarks/pixel_auroc_sources.py --run main=/tmp/edge_inspect_accuracy/magnetic_tile_main \\
        --run kernel1=/tmp/edge_inspect_accuracy/magnetic_tile_ablation_subnet_kernel_1

`--run NAME=PATH` takes a run folder (torch checkpoint) or an IR (.xml), scored through what edge-eval uses.
Pixels are taken on a regular grid (every `--step`-th row and column of the model's map) so that all test
images fit in memory; the pooled AUROC is computed on that grid and printed next to each matrix. Results go to
benchmarks/results/pixel_auroc_sources.{md,json}, one section per run (rows replaced by name).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DISTANCE_BINS = (0, 8, 16, 32, 64, 128, 100_000)  # pixels of the model's input


def rank_auroc(pos: np.ndarray, neg_sorted: np.ndarray) -> float:
    """P(positive > negative) + ties/2, with the negatives sorted once."""
    if len(pos) == 0 or len(neg_sorted) == 0:
        return float("nan")
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    return float(((lo + hi) / 2).mean() / len(neg_sorted))


def decompose(maps: list[np.ndarray], masks: list[np.ndarray], types: list[str], step: int) -> dict:
    """The matrix, the pooled AUROC on the grid and the distance profile of hot non-defect pixels (that one
    on every pixel)."""
    grid = (slice(step // 2, None, step), slice(step // 2, None, step))
    order = sorted(set(types), key=lambda t: (t != "good", t))
    pos = {t: [] for t in order if t != "good"}
    neg = {t: [] for t in order}
    for m, k, t in zip(maps, masks, types):
        m, k = m[grid], k[grid] > 0
        neg[t].append(m[~k])
        if t != "good":
            pos[t].append(m[k])
    pos = {t: np.concatenate(v) for t, v in pos.items()}
    neg = {t: np.sort(np.concatenate(v)) for t, v in neg.items()}
    all_neg = np.sort(np.concatenate(list(neg.values())))
    matrix = {tp: {tn: rank_auroc(p, neg[tn]) for tn in order} | {"all": rank_auroc(p, all_neg)}
              for tp, p in pos.items()}
    hot_level = float(np.percentile(neg["good"], 99))
    profile = {t: distance_profile([m for m, tt in zip(maps, types) if tt == t],
                                   [k for k, tt in zip(masks, types) if tt == t], hot_level) for t in pos}
    all_pos = np.concatenate(list(pos.values()))
    return {
        "pooled_pixel_auroc_on_grid": rank_auroc(all_pos, all_neg),
        "defect_pixel_share": {t: float(len(p) / len(all_pos)) for t, p in pos.items()},
        "negative_pixel_share": {t: float(len(n) / len(all_neg)) for t, n in neg.items()},
        "matrix": matrix,
        "hot_level": hot_level,
        "good_hot_fraction": float((neg["good"] > hot_level).mean()),
        "hot_by_distance": profile,
    }


def load(path: str, threads: int):
    """(maps of a list of uint8 BGR images at the input size, input size (H, W), kind)."""
    if path.endswith(".xml"):
        from edge.model import AnomalyModel

        model = AnomalyModel(Path(path), threads=threads)
        return (lambda imgs: [model.infer(i).anomaly_map for i in imgs]), tuple(model.input_size), f"IR {Path(path).name}"
    import torch

    from calibration.validate import run_torch
    from training.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_model(Path(path))
    return (lambda imgs: run_torch(model, imgs).maps), tuple(model.config.input_size), "torch checkpoint"


def distance_profile(maps, masks, hot_level: float) -> list[float | None]:
    """Share of the pixels outside each mask above `hot_level`, per DISTANCE_BINS bin of distance to the mask."""
    import cv2

    hot, total = np.zeros(len(DISTANCE_BINS) - 1), np.zeros(len(DISTANCE_BINS) - 1)
    for m, k in zip(maps, masks):
        free = k == 0
        b = np.digitize(cv2.distanceTransform(free.astype(np.uint8), cv2.DIST_L2, 5), DISTANCE_BINS) - 1
        for i in range(len(total)):
            sel = free & (b == i)
            total[i] += sel.sum()
            hot[i] += (sel & (m > hot_level)).sum()
    return [None if n == 0 else float(h / n) for h, n in zip(hot, total)]


def paste_check(maps_of, folder, images, maps, masks, size, hot_level: float) -> dict:
    """Each defect type's defects (mask bounding box + 4 px) copied into good test images at the same place:
    the distance profile of hot pixels after pasting, and of the same pixels before. `images`, `maps` and `masks`
    are the test set's, in folder.test's order (nothing is read or scored again but the pasted images)."""
    good = [i for i, s in enumerate(folder.test) if s.defect == "good"]
    clean = [images[i] for i in good]
    before_maps = [maps[i] for i in good]
    out = {}
    for t in sorted({s.defect for s in folder.test} - {"good"}):
        defects = [i for i, s in enumerate(folder.test) if s.defect == t]
        pasted, boxes = [], []
        for j, img in enumerate(clean):
            src = defects[j % len(defects)]
            ys, xs = np.nonzero(masks[src] > 0)
            box = np.zeros(size, np.uint8)
            if len(ys):
                y0, y1, x0, x1 = max(0, ys.min() - 4), ys.max() + 5, max(0, xs.min() - 4), xs.max() + 5
                box[y0:y1, x0:x1] = 1
            img = img.copy()
            img[box > 0] = images[src][box > 0]
            pasted.append(img)
            boxes.append(box)
        out[t] = {"after": distance_profile(maps_of(pasted), boxes, hot_level),
                  "before": distance_profile(before_maps, boxes, hot_level),
                  "box_share": float(np.mean([m.mean() for m in boxes]))}
    return out


def fmt(v) -> str:
    return "–" if v is None or v != v else f"{v:.3f}"


def markdown(sections: dict) -> str:
    lines = ["# Where the pooled pixel AUROC is lost", "",
             "Written by `benchmarks/pixel_auroc_sources.py`. Each cell: AUROC of the row type's defect pixels against",
             "the non-defect pixels of the column's images (`good` = good test images; a defect type = the parts of",
             "its images outside the masks; `all` = every non-defect pixel, which is what the pooled pixel AUROC",
             "uses). Below it: the share of non-defect pixels that score above the good images' 99th percentile",
             "(so 1 % in good images), by distance in input pixels to the nearest defect pixel of the same image.", ""]
    for name, s in sections.items():
        r = s["result"]
        cols = list(r["negative_pixel_share"])
        lines += [f"## {name}", "",
                  f"Model: `{s['model']}` ({s['kind']}), data `{s['data']}`, input {s['input_size'][0]}×{s['input_size'][1]}, "
                  f"every {s['step']}th row and column; pooled pixel AUROC on that grid "
                  f"**{r['pooled_pixel_auroc_on_grid']:.4f}**; measured {s['measured_at']}.", "",
                  "| defect pixels \\ non-defect pixels of | " + " | ".join(cols) + " | all | share of defect pixels |",
                  "|---|" + "---:|" * (len(cols) + 2)]
        for t, row in r["matrix"].items():
            lines.append(f"| {t} | " + " | ".join(fmt(row[c]) for c in cols) + f" | {fmt(row['all'])} | "
                         f"{r['defect_pixel_share'][t]:.3f} |")
        lines.append("| share of non-defect pixels | " + " | ".join(f"{r['negative_pixel_share'][c]:.3f}" for c in cols)
                     + " | 1 | |")
        bins = [f"{a}–{b}" if b < 100_000 else f"≥ {a}" for a, b in zip(DISTANCE_BINS, DISTANCE_BINS[1:])]
        lines += ["", f"Non-defect pixels above the good images' 99th percentile ({r['hot_level']:.3g}), by distance "
                  f"(px) to the nearest defect pixel (good images: {r['good_hot_fraction']:.3f}):", "",
                  "| defect type | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins)]
        for t, prof in r["hot_by_distance"].items():
            lines.append(f"| {t} | " + " | ".join(fmt(v) for v in prof) + " |")
        if s.get("paste"):
            lines += ["", "Paste check: each type's defects (mask bounding box + 4 px) copied into the good test images "
                      "at the same place; the same share by distance to the pasted box, after pasting / before:", "",
                      "| pasted | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins)]
            for t, p in s["paste"].items():
                lines.append(f"| {t} | " + " | ".join(f"{fmt(a)} / {fmt(b)}" for a, b in zip(p["after"], p["before"]))
                             + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=PATH (run folder or .xml); repeatable")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "magnetic_tile"))
    ap.add_argument("--step", type=int, default=4, help="take every step-th row and column of each map")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from training.data import load_folder, load_image, load_mask

    folder = load_folder(a.data, require_test=True)
    json_path = RESULTS / "pixel_auroc_sources.json"
    sections = json.loads(json_path.read_text()) if json_path.exists() else {}
    for spec in a.run:
        name, _, path = spec.rpartition("=")  # the last "=": names like "k=4" keep theirs
        if not name or not path:
            ap.error(f"--run needs NAME=PATH, got {spec!r}")
        maps_of, size, kind = load(path, a.threads)
        masks = [load_mask(s, size) for s in folder.test]
        images = [load_image(s, size) for s in folder.test]
        maps = maps_of(images)
        result = decompose(maps, masks, [s.defect for s in folder.test], a.step)
        paste = paste_check(maps_of, folder, images, maps, masks, size, result["hot_level"])
        sections[name] = {"model": path, "kind": kind, "data": a.data, "input_size": list(size), "step": a.step,
                          "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result, "paste": paste}
        print(name, json.dumps({t: round(r["all"], 3) for t, r in result["matrix"].items()}),
              f"pooled {result['pooled_pixel_auroc_on_grid']:.4f}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)  # written after every run: an interrupted call keeps what it measured
        json_path.write_text(json.dumps(sections, indent=1))
        (RESULTS / "pixel_auroc_sources.md").write_text(markdown(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
