"""Run folders and checkpoints.

    RUN_DIR/config.json     model kind, model config, training config
    RUN_DIR/checkpoint.pt   the selected model (best held-out good loss)
    RUN_DIR/last.pt         the latest epoch, for --resume
    RUN_DIR/train.log       one line per epoch

Checkpoints hold the flow weights only; the frozen backbone is rebuilt from its weights package
(or the file named in the config), so a checkpoint stays small.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from edge.errors import EdgeError

from .models import create_model, saved_config

FORMAT = "edge-inspect-checkpoint/1"


class CheckpointError(EdgeError):
    """A run folder or checkpoint is missing, from another tool or another model kind."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def save(path: Path, model, extra: dict) -> None:
    payload = {"format": FORMAT, "kind": model.kind, "model_config": dataclasses.asdict(model.config),
               "state_dict": trainable_state(model), **extra}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_payload(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: pass the RUN_DIR written by edge-train")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}): it is corrupt or not from edge-train") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an edge-inspect checkpoint")
    payload["path"] = str(path)
    return payload


def load_model(path: str | Path, expect_kind: str | None = None):
    """Rebuild a trained model from a run folder or checkpoint file; returns (model, payload)."""
    payload = load_payload(path)
    if expect_kind and payload["kind"] != expect_kind:
        raise CheckpointError(f"checkpoint {payload['path']} holds a {payload['kind']} model, not {expect_kind}")
    weights = payload.get("train_config", {}).get("weights")
    model = create_model(payload["kind"], saved_config(payload["kind"], payload["model_config"]), weights=weights)
    restore(model, payload)
    return model.eval(), payload


def restore(model, payload: dict) -> None:
    """Load a checkpoint's trained state into `model` (built from the checkpoint's own config); every saved
    tensor must fit and every trainable one must be there (the backbone is never saved)."""
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    # checkpoints from before the normal envelope lack its buffer: it stays zero and unused
    missing = [k for k in missing if not k.startswith("backbone.") and not (k == "map_envelope" and not getattr(model.config, "envelope", False))]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {payload['path']} does not fit its model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
