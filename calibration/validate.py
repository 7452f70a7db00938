"""Check an IR against the model it came from: parity, latent scale, accuracy on (synthetic) defects."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Outputs:
    scores: np.ndarray  # (N,)
    maps: list[np.ndarray]  # (H, W) each
    latent_scale: np.ndarray  # (N,) mean over pixels and scales of Σ_c z² / C
    zsq: list[list[np.ndarray]] = field(default_factory=list)  # per image, per scale Σ_c z² (h_s, w_s)


@dataclass
class ValidationSet:
    """Frames (uint8 BGR at input size), labels and masks; `source` says where the defects came from."""

    frames: list[np.ndarray]
    labels: np.ndarray
    masks: list[np.ndarray]
    source: str  # "labelled defects" or "synthetic anomalies from good images"
    kinds: list[str] = field(default_factory=list)


def run_compiled(compiled, frames: list[np.ndarray], channels: list[int], shapes: list[tuple[int, int]]) -> Outputs:
    """Run an exported IR (see calibration.export for its outputs); `shapes` = latent_shapes(model)."""
    from edge.model import split_zsq

    request = compiled.create_infer_request()
    scores, maps, scale, zsq = [], [], [], []
    for f in frames:
        request.infer({0: f[None]})
        scores.append(float(request.get_tensor("score").data.reshape(-1)[0]))
        maps.append(np.array(request.get_tensor("anomaly_map").data[0, 0], dtype=np.float32))
        zs = split_zsq(np.array(request.get_tensor("zsq").data, dtype=np.float32), shapes)
        scale.append(float(np.mean([z.mean() / c for z, c in zip(zs, channels)])))
        zsq.append(zs)
    return Outputs(np.asarray(scores), maps, np.asarray(scale), zsq)


def nfa_flags(zsq: list[list[np.ndarray]], channels: list[int], size: tuple[int, int], epsilon: float,
              scale: list[float]) -> np.ndarray:
    """Per image: does the tree NFA find any region with log10 NFA < epsilon (after null scaling)?"""
    from edge.nfa import tree_nfa

    return np.array([bool(tree_nfa([z / s for z, s in zip(zs, scale)], channels, size, epsilon).regions) for zs in zsq])


def run_torch(model, frames: list[np.ndarray], batch_size: int = 8) -> Outputs:
    import torch

    from training.train import to_tensor

    scores, maps, scale = [], [], []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            amap, score, *zsq = model.anomaly_outputs(to_tensor(frames[i : i + batch_size], model.mean, model.std))
            scores += score.numpy().tolist()
            maps += list(amap[:, 0].numpy())
            per = torch.stack([q.mean(dim=(1, 2, 3)) / c for q, c in zip(zsq, model.channels)], 1)
            scale += per.mean(1).numpy().tolist()
    return Outputs(np.asarray(scores), maps, np.asarray(scale))


def accuracy(out: Outputs, vset: ValidationSet) -> dict:
    from .metrics import image_auroc, pixel_auroc

    return {"image_auroc": image_auroc(vset.labels, out.scores),
            "pixel_auroc": pixel_auroc(vset.masks, out.maps) if any(m.any() for m in vset.masks) else float("nan")}


def parity(ref: Outputs, other: Outputs) -> dict:
    """Largest deviations of `other` from `ref`, relative to the reference's range."""
    from scipy.stats import spearmanr

    span = float(np.abs(ref.scores).max()) + 1e-12
    map_err = max(float(np.abs(a - b).max()) / (float(np.abs(b).max()) + 1e-12) for a, b in zip(other.maps, ref.maps))
    return {"max_score_rel_err": float(np.abs(other.scores - ref.scores).max()) / span,
            "max_map_rel_err": map_err,
            "score_spearman": float(spearmanr(ref.scores, other.scores).statistic) if len(ref.scores) > 2 else float("nan")}
