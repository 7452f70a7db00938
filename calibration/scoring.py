"""Score images with a trained torch model or an IR, through the same pre-processing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import Sample, load_image


@dataclass
class Scored:
    scores: np.ndarray  # (N,)
    maps: list[np.ndarray]  # (H, W) each


def score_torch(model, samples: list[Sample], batch_size: int = 8, keep_maps: bool = True) -> Scored:
    from .validate import run_torch

    out = run_torch(model, [load_image(s, model.config.input_size) for s in samples], batch_size)
    return Scored(out.scores.astype(np.float64), out.maps if keep_maps else [])


def score_ir(model, samples: list[Sample] | list[Path], keep_maps: bool = True) -> Scored:
    """`model` is an edge.model.AnomalyModel; `samples` are Samples or image paths."""
    scores, maps = [], []
    for s in samples:
        result = model.infer(load_image(s, model.input_size))
        scores.append(result.score)
        if keep_maps:
            maps.append(result.anomaly_map)
    return Scored(np.asarray(scores, dtype=np.float64), maps)
