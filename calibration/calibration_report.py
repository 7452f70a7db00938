"""The one-page calibration report: what was measured, what was kept in float and why, thresholds."""

from __future__ import annotations

import html
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: dict) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items()
                               if not isinstance(v, (dict, list))) + "</table>"


def write_html(path: Path, r: dict) -> None:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>edge-calibrate report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.warn{color:#a00}</style>",
        f"<h1>Calibration of {html.escape(Path(r['model']).name)}</h1>",
        f"<p>{html.escape(r['model_kind'])} on {html.escape(r['backbone'])}, input {r['input_size'][0]}×{r['input_size'][1]}, "
        f"precision <b>{html.escape(r['precision'])}</b>, IR weights {r['ir_bytes'] / 1e6:.1f} MB. "
        f"Validated on {html.escape(r['validation']['source'])} ({r['validation']['n_good']} good, "
        f"{r['validation']['n_defective']} defective).</p>",
    ]
    for w in r["warnings"]:
        parts.append(f"<p class='warn'>⚠ {html.escape(w)}</p>")
    for s in r["skipped"]:
        parts.append(f"<p>Skipped: {html.escape(s)}</p>")
    parts.append("<h2>Accuracy and latency (float IR vs shipped IR, both at f32 inference precision, 1 thread)</h2>")
    keys = ["image_auroc", "pixel_auroc", "latent_scale_holdout", "latency_ms_1thread"]
    parts.append("<table><tr><th></th><th>float IR</th><th>shipped IR</th></tr>" + "".join(
        f"<tr><th>{k}</th><td>{_fmt(r['float'].get(k))}</td><td>{_fmt(r['shipped'].get(k))}</td></tr>" for k in keys) + "</table>")
    if "quantization" in r:
        qz = r["quantization"]
        parts.append(f"<h2>Quantization</h2><p>Chosen split: <b>{html.escape(str(qz['chosen']))}</b>, activation ranges from "
                     f"<b>{html.escape(qz['calibration_set'])}</b> — {html.escape(qz['why'])}. "
                     f"{qz['calibration_images']} calibration images, {qz['of_which_with_synthetic_defects']} with synthetic defects drawn in. "
                     "Everything from the model's float scopes on (neck, flow couplings: soft clamp, exp, log-det, Σz², the map) stays in "
                     "floating point: per-tensor INT8 there collapses the anomaly map. Subnet convolutions that this host's CPU ran "
                     "slower in INT8 than in float (per-layer counters) were quantized again in float "
                     "(<i>subnet_convs_float_for_speed</i>) when the whole graph then ran faster, timed side by side"
                     + "".join(f" ({html.escape(c['split'])}: {c['layers']} layer(s), {c['ms_all_in_int8']:.2f} ms all in INT8, "
                               f"{c['ms_those_float']:.2f} ms with them float: {'kept float' if c['kept_float'] else 'left in INT8'})"
                               for c in qz.get("float_for_speed_checks", []))
                     + "; an edge PC of another CPU generation may rank them differently. "
                     f"Calibration host: {html.escape(r['host']['cpu'])} ({html.escape(r['host']['isa'])}). "
                     + (f"Weights are quantized to 8 bits (largest |int8 weight| outside depthwise layers: {qz['int8_weight_max']}): "
                        "<b>this IR runs only on CPUs with VNNI or AMX-INT8</b>; edge-inspect refuses it elsewhere, where 8-bit "
                        "products overflow.</p>" if qz.get("weight_bits") == 8 else
                        f"Weights are quantized to 7 bits (largest |int8 weight| outside depthwise layers: {qz['int8_weight_max']}) so "
                        "that CPUs without VNNI, which sum 8-bit products in saturating 16-bit registers, do not overflow.</p>"))
        cols = ["split", "calibration_set", "kept_in_float_ops", "subnet_convs_in_int8", "subnet_convs_float_for_speed",
                "image_auroc", "pixel_auroc", "image_auroc_drop", "pixel_auroc_drop", "latency_ms_1thread", "accepted"]
        parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>" + "".join(
            "<tr>" + "".join(f"<td>{_fmt(c.get(k))}</td>" for k in cols) + "</tr>" for c in qz["candidates"]) + "</table>")
    parts.append(f"<h2>Parity on {r['parity']['golden_images']} golden images (held-out good and defective)</h2>")
    for name, p in r["parity"].items():
        if isinstance(p, dict):
            parts.append(f"<h3>{html.escape(name)}</h3>" + _table(p))
    t = r["thresholds"]
    img = t["image"]
    parts.append(
        f"<h2>Thresholds</h2><p>Image threshold <b>{img['threshold']:.4g}</b> for a target false-reject rate of "
        f"{img['target_frr']:.2%}: {img['rejected_good']} of {img['n_good']} held-out good images reach it. With {img['n_good']} images "
        f"the false-reject rate is at most <b>{img['frr_upper_bound']:.2%}</b> ({img['confidence']:.0%} one-sided Clopper–Pearson bound); "
        f"more held-out good images tighten this. The bound speaks for parts imaged like those held-out images, which come "
        f"from the training images' capture sessions: a new session or lighting can exceed it, and then re-thresholding "
        f"from good parts imaged at the line (<code>edge-calibrate --model {html.escape(Path(r['model']).name)} --rethreshold GOOD_DIR</code>) restores it. "
        f"Pixel threshold (about one false-positive pixel per good image): {t['pixel_fair']:.4g}. "
        f"NFA ε = {t['nfa_epsilon']:g} (a region is a defect when log10 NFA &lt; ε).</p>")
    if "nfa" in r:
        n = r["nfa"]
        tried = "; ".join(f"{m}: {k} flagged" for m, k in n.get("holdout_good_flagged_by_method", {}).items())
        parts.append(f"<h2>NFA</h2><p>Null scale per latent scale (variance of z on held-out good parts, "
                     f"estimated by <b>{html.escape(n.get('null_scale_method', 'q999'))}</b>; tried in order, held-out good parts "
                     f"{html.escape(tried)}): "
                     f"{', '.join(f'{v:.3g}' for v in n['latent_null_scale'])}. The NFA rule flags {n['holdout_good_flagged']} of "
                     f"{n['holdout_good']} held-out good parts and {n['validation_defects_flagged']} of {n['validation_defects']} "
                     f"defective validation parts; decision rule stored in the IR: <b>{html.escape(n['decision_rule'])}</b> "
                     f"({html.escape(n['note'])}).</p>")
    extra = {k: v for k, v in t.items() if k in ("miss_rate_on_labelled_defects", "false_reject_rate_on_test_good")}
    if extra:
        parts.append(_table(extra))
    path.write_text("\n".join(parts) + "\n")
