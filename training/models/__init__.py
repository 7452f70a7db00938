"""Model registry: one model per file, `create_model(kind, config)` builds any of them.

Each model module registers a config dataclass and an `nn.Module` class with `register`.
Every model maps a normalised NCHW image to per-scale latents `z` and log-det terms, and
exposes `anomaly_outputs(x)` for export (anomaly map, image score, per-scale Σ_c z²).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

_REGISTRY: dict[str, tuple[type, type]] = {}


def register(kind: str, config_cls: type) -> Callable[[type], type]:
    def wrap(model_cls: type) -> type:
        _REGISTRY[kind] = (config_cls, model_cls)
        model_cls.kind = kind
        return model_cls

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def config_class(kind: str) -> type:
    from edge.errors import EdgeError

    if kind not in _REGISTRY:
        raise EdgeError(f"unknown model {kind!r}; available: {', '.join(list_models())}")
    return _REGISTRY[kind][0]


def presets(kind: str) -> dict[str, dict]:
    """A registered model's named configurations: the `PRESETS` dict of its module ({} when it has none)."""
    import sys

    config_class(kind)  # unknown kinds get the registry's error
    return dict(getattr(sys.modules[_REGISTRY[kind][1].__module__], "PRESETS", {}))


def make_config(kind: str, overrides: dict[str, Any] | None = None):
    """Build a model config, accepting JSON-ish overrides (lists become tuples)."""
    from edge.errors import EdgeError

    cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise EdgeError(f"unknown {kind} config keys: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return cls(**clean)


def saved_config(kind: str, saved: dict[str, Any]):
    """The config a checkpoint was trained with, from its saved dict: fields added to the config class after the
    checkpoint was written take the value every earlier checkpoint had (the class's `saved_before`), not today's
    default."""
    return make_config(kind, {**getattr(config_class(kind), "saved_before", {}), **saved})


def create_model(kind: str, config=None, **backbone_kwargs):
    config = config if config is not None else config_class(kind)()
    return _REGISTRY[kind][1](config, **backbone_kwargs)


from . import msflow  # noqa: E402,F401  (registers itself)
from . import uflow  # noqa: E402,F401  (registers itself)
