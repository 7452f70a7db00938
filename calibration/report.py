"""A self-contained HTML report of an evaluation: figures, per-defect table, the hardest images.

Shows the worst-scored good parts (highest scores: the next false rejects), and the best and
worst defects (highest and lowest scores: the misses) with their anomaly heatmaps over the
image and the ground-truth outline. Images are embedded as PNG data URIs, so the file travels alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np


def overlay(image_bgr: np.ndarray, amap: np.ndarray, mask: np.ndarray | None, vmin: float, vmax: float) -> np.ndarray:
    """Image with the map as a JET heatmap (fixed scale vmin..vmax over the whole test set) and the mask outline."""
    import cv2

    norm = np.clip((amap - vmin) / max(1e-12, vmax - vmin), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(image_bgr, 0.55, heat, 0.45, 0)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def _png(img: np.ndarray, max_side: int = 320) -> str:
    import cv2

    scale = min(1.0, max_side / max(img.shape[:2]))
    if scale < 1:
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4f}"
    return html.escape(str(v))


def write_report(path: str | Path, result: dict, samples, scores: np.ndarray, maps: list[np.ndarray],
                 masks: list[np.ndarray], size: tuple[int, int], n_show: int = 6) -> Path:
    """`samples`, `scores`, `maps`, `masks` in the same order (the test set)."""
    from training.data import load_image

    labels = np.array([s.label for s in samples])
    vmin = float(np.percentile([m.min() for m in maps], 5))
    vmax = float(np.percentile([m.max() for m in maps], 95))
    threshold = result.get("image_threshold")

    def tiles(indices, title):
        cells = []
        for i in indices:
            s = samples[i]
            img = overlay(load_image(s, size), maps[i], masks[i], vmin, vmax)
            flag = "" if threshold is None else (" rejected" if scores[i] >= threshold else " passed")
            cells.append(f'<figure><img src="{_png(img)}"><figcaption>{html.escape(s.defect)}/{html.escape(s.path.name)}'
                         f'<br>score {scores[i]:.4g}{flag}</figcaption></figure>')
        return f"<h2>{html.escape(title)}</h2><div class=row>{''.join(cells) or '<p>none</p>'}</div>"

    good = np.where(labels == 0)[0]
    bad = np.where(labels == 1)[0]
    worst_good = good[np.argsort(-scores[good])][:n_show]
    best_bad = bad[np.argsort(-scores[bad])][:n_show]
    worst_bad = bad[np.argsort(scores[bad])][:n_show]

    head = ["image_auroc", "pixel_auroc", "aupro", "n_test", "n_defective", "runs_as", "input_size", "ms_per_image"]
    summary = "".join(f"<tr><th>{k}</th><td>{_fmt(result.get(k))}</td></tr>" for k in head if k in result)
    for k, v in (result.get("complexity") or {}).items():
        summary += f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{v.get('n', '')}</td><td>{_fmt(v.get('image_auroc'))}</td>"
        f"<td>{_fmt(v.get('pixel_auroc'))}</td><td>{_fmt(v.get('aupro'))}</td></tr>"
        for d, v in result.get("per_defect", {}).items())
    page = f"""<!doctype html><meta charset=utf-8><title>edge-eval {html.escape(str(result.get('model')))}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
.row{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;font-size:12px}} img{{display:block;max-height:320px}}</style>
<h1>edge-eval report</h1><p>model <code>{html.escape(str(result.get('model')))}</code>, data <code>{html.escape(str(result.get('data')))}</code>.
Heatmaps share one colour scale ({vmin:.3g}..{vmax:.3g}); white outlines are ground truth.</p>
<table>{summary}</table>
<h2>Per defect type</h2><table><tr><th>defect</th><th>n</th><th>image AUROC (vs good)</th><th>pixel AUROC</th><th>AUPRO</th></tr>{rows}</table>
{tiles(worst_good, 'Worst-scored good parts (highest scores)')}
{tiles(best_bad, 'Best-detected defects (highest scores)')}
{tiles(worst_bad, 'Worst-detected defects (lowest scores)')}
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
