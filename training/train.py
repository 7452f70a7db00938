"""Train a flow on good images: frozen backbone features are computed once, then the flow fits them."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .data import DataError, fingerprint, load_folder, load_image, split_holdout
from .locality import DEFAULT_RADIUS, far_excess
from .models import create_model, make_config, saved_config
from .models.likelihood import nll_per_dim


@dataclass
class TrainConfig:
    data: str
    out: str
    model: str = "msflow"
    model_overrides: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    warmup_epochs: int = 2
    weight_decay: float = 1e-5
    grad_clip: float = 2.0
    holdout_fraction: float = 0.15
    augment_flips: bool = False
    # seeded augmented copies of every training image (training.augment presets: none, texture, object, exposure)
    augment: str = "none"
    augment_views: int = 3
    seed: int = 0
    threads: int = 0
    weights: str | None = None
    resume: bool = False
    progress: bool = True
    # "steps" (cool-xuan/msflow: warm-up from 0.1x, then x lr_gamma at each milestone fraction of the epochs)
    # or "cosine" (the seed's schedule: cosine decay to 0.4x)
    lr_schedule: str = "steps"
    lr_milestones: tuple = (0.7, 0.9)
    lr_gamma: float = 0.33
    # weight of the locality term (training.locality): a synthetic defect pasted into each training image must
    # not raise the per-position cost of flow cells at least locality_radius input pixels from it; 0 = off
    locality: float = 0.0
    locality_radius: int = DEFAULT_RADIUS


def to_tensor(images: list[np.ndarray], mean, std) -> torch.Tensor:
    """uint8 BGR (N,H,W,3) -> normalised RGB NCHW float, as the IR's embedded pre-processing does."""
    x = torch.from_numpy(np.stack(images)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _image_batches(samples, size, batch_size: int, desc: str, progress: bool, augment: str, views: int, seed: int):
    """uint8 images batch by batch: every sample followed by its `views` augmented copies."""
    from tqdm import tqdm

    from .augment import preset
    from .augment import views as make_views

    aug = preset(augment)
    for i in tqdm(range(0, len(samples), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        imgs = []
        for j, s in enumerate(samples[i : i + batch_size]):
            img = load_image(s, size)
            imgs.append(img)
            imgs.extend(make_views(img, aug, views, seed * 1_000_003 + i + j))
        yield imgs


def _flipped(x: torch.Tensor, flips: bool) -> list[torch.Tensor]:
    return [x, x.flip(-1), x.flip(-2)] if flips else [x]


@torch.no_grad()
def extract(model, samples, batch_size: int = 16, flips: bool = False, desc: str = "features", progress: bool = True,
            augment: str = "none", views: int = 0, seed: int = 0):
    """Pooled backbone features of every sample (plus `views` augmented copies of each), per scale (N, C, h, w)."""
    out: list[list[torch.Tensor]] = [[] for _ in model.channels]
    for imgs in _image_batches(samples, model.config.input_size, batch_size, desc, progress, augment, views, seed):
        for v in _flipped(to_tensor(imgs, model.mean, model.std), flips):
            for scale, f in enumerate(model.features(v)):
                out[scale].append(f)
    return [torch.cat(parts) for parts in out]


@torch.no_grad()
def extract_pasted(model, samples, radius: int, batch_size: int = 16, flips: bool = False, progress: bool = True,
                   augment: str = "none", views: int = 0, seed: int = 0):
    """The images `extract` makes, in the same order, each with one seeded synthetic defect pasted in
    (training.locality): (features per scale, far cells per scale (N, h, w))."""
    from .locality import far_cells, paste

    feats: list[list[torch.Tensor]] = [[] for _ in model.channels]
    far: list[list[torch.Tensor]] = [[] for _ in model.channels]
    n = 0
    for imgs in _image_batches(samples, model.config.input_size, batch_size, "pasted features", progress, augment,
                               views, seed):
        pasted = [paste(img, seed * 1_000_003 + 500_000_000 + n + k, radius) for k, img in enumerate(imgs)]
        n += len(imgs)
        x = to_tensor([p for p, _ in pasted], model.mean, model.std)
        near = torch.from_numpy(np.stack([m for _, m in pasted]))[:, None]
        for v, m in zip(_flipped(x, flips), _flipped(near, flips)):
            fs = model.features(v)
            for scale, (f, cells) in enumerate(zip(fs, far_cells(m, [tuple(f.shape[-2:]) for f in fs]))):
                feats[scale].append(f)
                far[scale].append(cells)
    return [torch.cat(p) for p in feats], [torch.cat(p) for p in far]


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (0.1 + 0.9 * epoch / max(1, cfg.warmup_epochs))
    if cfg.lr_schedule == "steps":
        drops = sum(epoch >= int(round(m * cfg.epochs)) for m in cfg.lr_milestones)
        return cfg.lr * cfg.lr_gamma**drops
    progress = (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
    return cfg.lr * (0.4 + 0.6 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def mean_loss(model, feats: list[torch.Tensor], batch_size: int) -> float:
    n = feats[0].shape[0]
    total = 0.0
    for i in range(0, n, batch_size):
        b = [f[i : i + batch_size] for f in feats]
        total += float(model.loss(b)) * b[0].shape[0]
    return total / max(1, n)


@torch.no_grad()
def fit_envelope(model, feature_sets: list[list[torch.Tensor]], batch_size: int = 16) -> torch.Tensor:
    """Set `model.map_envelope` from the raw maps of good images' cached features; returns it."""
    from .models.likelihood import normal_envelope

    size = tuple(model.config.input_size)
    peak = None  # running per-position max: the maps of every (augmented) image need not be held at once
    for feats in feature_sets:
        for i in range(0, feats[0].shape[0], batch_size):
            batch = model.outputs_from_features([f[i : i + batch_size] for f in feats], size, raw=True)[0].amax(0, keepdim=True)
            peak = batch if peak is None else torch.maximum(peak, batch)
    env = normal_envelope(peak)
    model.map_envelope.copy_(env)
    return env


def train(cfg: TrainConfig, feature_cache: dict | None = None) -> Path:
    """Train and write RUN_DIR. `feature_cache` (a dict the caller keeps) reuses extracted backbone
    features across runs whose backbone, stages, pyramid, input size and pre-processing agree."""
    from tqdm import tqdm

    if cfg.locality < 0 or (cfg.locality and (cfg.model != "msflow" or cfg.locality_radius < 1)):
        # far cells are laid on msflow's feature grids
        raise DataError(f"--locality {cfg.locality} (radius {cfg.locality_radius} px): a weight >= 0 and a radius "
                        ">= 1, for --model msflow only")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_folder(cfg.data)
    train_set, holdout = split_holdout(data.train, cfg.holdout_fraction, cfg.seed)
    if len(train_set) < 8:
        raise DataError(f"only {len(train_set)} good training images in {cfg.data}: need at least 8")
    last_path = out / "last.pt"
    resumed = checkpoint.load_payload(last_path) if cfg.resume and last_path.is_file() else None
    # a resumed run keeps the model it was started with, even where a default has changed since
    model_cfg = (saved_config(cfg.model, resumed["model_config"]) if resumed else make_config(cfg.model, cfg.model_overrides))
    model = create_model(cfg.model, model_cfg, weights=cfg.weights)
    checkpoint.write_json(out / "config.json", {"model": cfg.model, "model_config": dataclasses.asdict(model_cfg),
                                               "train_config": dataclasses.asdict(cfg)})
    t0 = time.time()
    if cfg.progress:
        counts = model.param_counts() if hasattr(model, "param_counts") else {}
        print(f"edge-train: {cfg.model} {model_cfg.backbone} input {tuple(model_cfg.input_size)}, "
              f"{len(train_set)} train / {len(holdout)} held-out good images, flow params {counts.get('flow', '?')}", flush=True)
    key = None
    if feature_cache is not None:
        c = model_cfg
        key = (c.backbone, tuple(c.stages), tuple(getattr(c, "image_scales", (1.0,))), tuple(c.input_size),
               getattr(c, "pool_stride", None), getattr(c, "image_norm", False), cfg.augment_flips, cfg.augment,
               cfg.augment_views, cfg.seed, cfg.weights, cfg.locality_radius if cfg.locality else None,
               tuple(str(s.path) for s in train_set), tuple(str(s.path) for s in holdout))
    if key is not None and key in feature_cache:
        train_feats, hold_feats, pasted = feature_cache[key]
    else:
        train_feats = extract(model, train_set, flips=cfg.augment_flips, desc="train features", progress=cfg.progress,
                              augment=cfg.augment, views=cfg.augment_views, seed=cfg.seed)
        hold_feats = extract(model, holdout, desc="held-out features", progress=cfg.progress)
        pasted = (extract_pasted(model, train_set, cfg.locality_radius, flips=cfg.augment_flips, progress=cfg.progress,
                                 augment=cfg.augment, views=cfg.augment_views, seed=cfg.seed) if cfg.locality else None)
        if key is not None:
            feature_cache[key] = (train_feats, hold_feats, pasted)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, best = 0, float("inf")
    if resumed:
        checkpoint.restore(model, resumed)
        opt.load_state_dict(resumed["optimizer"])
        start_epoch, best = resumed["epoch"] + 1, resumed["best_holdout_loss"]
        resume_rng = resumed.get("rng")
    else:
        resume_rng = None
    extra = {"train_config": dataclasses.asdict(cfg), "holdout": [str(s.path) for s in holdout],
             "train_files": [str(s.path) for s in train_set], "data_fingerprint": fingerprint(data.train)}
    n = train_feats[0].shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume_rng is not None:
        gen.set_state(resume_rng)
    if cfg.lr_schedule not in ("steps", "cosine"):
        raise DataError(f"unknown lr_schedule {cfg.lr_schedule!r}: use steps or cosine")
    with open(out / "train.log", "a") as log:
        bar = tqdm(range(start_epoch, cfg.epochs), desc="train", unit="epoch", disable=not cfg.progress)
        for epoch in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch, cfg)
            model.flows.train()
            order = torch.randperm(n, generator=gen)
            losses, te = [], time.time()
            for i in range(0, n, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                if pasted:
                    zs, logdet = model.flow([f[idx] for f in train_feats])
                    zp, _ = model.flow([f[idx] for f in pasted[0]])
                    loss = nll_per_dim(zs, logdet) + cfg.locality * far_excess(zs, zp, [c[idx] for c in pasted[1]],
                                                                              model.channels)
                else:
                    loss = model.loss([f[idx] for f in train_feats])
                if not torch.isfinite(loss):
                    raise RuntimeError(f"training diverged at epoch {epoch} (loss {loss}): lower --lr")
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                losses.append(float(loss.detach()))
            model.flows.eval()
            hold = mean_loss(model, hold_feats, cfg.batch_size)
            rate = n / max(1e-9, time.time() - te)
            improved = hold < best
            best = min(best, hold)
            state = {**extra, "epoch": epoch, "holdout_loss": hold, "best_holdout_loss": best}
            if improved:
                checkpoint.save(out / "checkpoint.pt", model, state)
            checkpoint.save(last_path, model, {**state, "optimizer": opt.state_dict(), "rng": gen.get_state()})
            line = f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.4f} holdout {hold:.4f} lr {lr_at(epoch, cfg):.2e} {rate:.0f} img/s{' *' if improved else ''}"
            log.write(line + "\n")
            log.flush()
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", holdout=f"{hold:.3f}", img_s=f"{rate:.0f}")
    if getattr(model_cfg, "envelope", False):
        # the envelope belongs to the selected weights; it is fitted on the same good images, augmented views
        # included, that the flow learned: what the augmentation declares normal (a tray edge flipped to the
        # bottom, a part turned round) is inside it. NOT on the held-out images: edge-calibrate sets the image
        # threshold on them, and inside the envelope their scores were ~0 (threshold 0.004-0.09 on magnetic_tile,
        # then 16 % of good test parts rejected against a stated 2.6 % bound)
        payload = checkpoint.load_payload(out / "checkpoint.pt")
        model.load_state_dict(payload["state_dict"], strict=False)
        model.flows.eval()
        fit_envelope(model, [train_feats], cfg.batch_size)
        keep = {k: v for k, v in payload.items() if k not in ("format", "kind", "model_config", "state_dict", "path")}
        checkpoint.save(out / "checkpoint.pt", model, keep)
    with open(out / "train.log", "a") as log:
        log.write(f"done in {time.time() - t0:.1f} s\n")
    return out
