"""edge-train: learn a flow from images of good parts only.

    edge-train --data DIR --out RUN_DIR [--model msflow] [--preset surface] [--config FILE.json] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.errors import EdgeError
from training.augment import PRESETS as AUGMENT_PRESETS


def model_preset(model: str, name: str) -> dict:
    """A model's named configuration (training.models.presets), or an EdgeError naming the choices."""
    from .models import presets

    named = presets(model)
    if not named:
        raise EdgeError(f"model {model!r} has no named presets: pass --config FILE or --set KEY=VALUE")
    if name not in named:
        raise EdgeError(f"model {model!r} has no preset {name!r}: choose one of {', '.join(named)}")
    return named[name]


def main(argv: list[str] | None = None) -> int:
    from .train import TrainConfig

    d = TrainConfig(data="", out="")
    ap = argparse.ArgumentParser(prog="edge-train", description="Train an anomaly flow on good images.")
    ap.add_argument("--data", required=True, help="MVTec-layout folder or a folder of good images")
    ap.add_argument("--out", required=True, help="run folder to write")
    ap.add_argument("--model", default=d.model)
    ap.add_argument("--preset", help="named model configuration (msflow: default, surface, paper_b5, wrn50); "
                                     "--config and --set override it")
    ap.add_argument("--config", help="JSON file of model config overrides (e.g. {\"input_size\": [256, 256]})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="one model config override")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--holdout", type=float, default=d.holdout_fraction, help="fraction of good images held out")
    ap.add_argument("--augment-flips", action="store_true", help="add flipped copies (textures, symmetric parts)")
    ap.add_argument("--augment", default=d.augment, choices=sorted(AUGMENT_PRESETS),
                    help="augmented copies of each good image: texture (flips, lighting jitter), object (any rotation, "
                         "shifts, flips, milder lighting jitter) or exposure (lighting gain, highlights clipped as a "
                         "sensor clips them); see training/augment.py")
    ap.add_argument("--augment-views", type=int, default=d.augment_views, help="augmented copies per image")
    ap.add_argument("--locality", type=float, default=d.locality,
                    help="weight of the locality term (training/locality.py): a synthetic defect pasted into each "
                         "training image must not raise the cost of flow cells far from it (tighter maps; 0 = off)")
    ap.add_argument("--locality-radius", type=int, default=d.locality_radius,
                    help="input pixels around the pasted defect where nothing is asked")
    ap.add_argument("--weights", help="backbone weights file (timm state dict) for backbones without offline weights")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        overrides = dict(model_preset(a.model, a.preset)) if a.preset else {}
        if a.config:
            path = Path(a.config)
            if not path.is_file():
                raise EdgeError(f"config file {path} not found")
            try:
                overrides.update(json.loads(path.read_text()))
            except json.JSONDecodeError as err:
                raise EdgeError(f"config file {path} is not valid JSON ({err})") from None
        for item in a.set:
            key, _, value = item.partition("=")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        cfg = TrainConfig(data=a.data, out=a.out, model=a.model, model_overrides=overrides, epochs=a.epochs,
                          batch_size=a.batch_size, lr=a.lr, holdout_fraction=a.holdout, augment_flips=a.augment_flips,
                          augment=a.augment, augment_views=a.augment_views, locality=a.locality,
                          locality_radius=a.locality_radius,
                          seed=a.seed, threads=a.threads, weights=a.weights, resume=a.resume, progress=not a.no_progress)
        from .train import train

        out = train(cfg)
    except EdgeError as err:
        print(f"edge-train: error: {err}", file=sys.stderr)
        return err.exit_code
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
