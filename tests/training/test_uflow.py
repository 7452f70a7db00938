"""U-Flow: exact log-det (so the latent's N(0, I) claim rests on a true density), shapes, registry, export parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.models import create_model, list_models, make_config
from training.models.uflow import carry_channels, plan

# Lite0 stages 1/2 (24 @ stride 4, 40 @ stride 8): a 16x16 input gives 4x4 and 2x2 maps, 544 dims in all
TINY = {"stages": [1, 2], "input_size": [16, 16], "flow_depth": [2, 2]}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("uflow", make_config("uflow", TINY), random_init=True).eval()
    # perturb every flow parameter so the test does not pass on identity-initialised blocks
    with torch.no_grad():
        for p in model.flows.parameters():
            if p.requires_grad:  # not the fixed permutation matrices
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_registered():
    assert "uflow" in list_models()
    cfg = make_config("uflow", {})
    assert cfg.input_size == (256, 256) and cfg.backbone.startswith("tf_efficientnet_lite")


def test_channel_plan():
    # Lite0 stages 2/3/4 at 256: 40 @ 32^2, 112 @ 16^2, 320 @ 8^2
    flow_c, out_c, carry_c = plan((40, 112, 320))
    assert flow_c == [59, 152, 320] and out_c == [59, 76, 160] and carry_c == [0, 76, 160]
    assert all(c % 4 == 0 for c in carry_c)
    # dimensions are conserved: every input dimension ends in exactly one output latent
    dims_in = 40 * 32 * 32 + 112 * 16 * 16 + 320 * 8 * 8
    assert 59 * 32 * 32 + 76 * 16 * 16 + 160 * 8 * 8 == dims_in
    assert carry_channels(8) == 4
    with pytest.raises(ValueError):
        carry_channels(4)


def test_shapes_and_outputs(tiny):
    x = torch.randn(2, 3, 16, 16)
    feats = tiny.features(x)
    zs, logdet = tiny.flow(feats)
    assert [tuple(z.shape[1:]) for z in zs] == [(c, *hw) for c, hw in zip(tiny.channels, tiny.shapes)]
    assert logdet.shape == (2,)
    amap, score, *zsq = tiny.anomaly_outputs(x)
    assert amap.shape == (2, 1, 16, 16) and score.shape == (2,)
    for q, z in zip(zsq, zs):
        torch.testing.assert_close(q, (z**2).sum(1, keepdim=True))


def test_logdet_is_exact(tiny):
    """log|det J| reported by the flow equals the slogdet of the autograd Jacobian of features -> latents."""
    model = tiny.double()
    try:
        feats = [f.double() for f in model.features(torch.randn(1, 3, 16, 16, dtype=torch.float64))]
        sizes = [f[0].numel() for f in feats]
        shapes = [f.shape for f in feats]

        def fn(flat):
            parts = torch.split(flat, sizes)
            zs, _ = model.flow([p.reshape(s) for p, s in zip(parts, shapes)])
            return torch.cat([z.reshape(-1) for z in zs])

        flat = torch.cat([f.reshape(-1) for f in feats])
        jac = torch.autograd.functional.jacobian(fn, flat, vectorize=True)
        sign, logabs = torch.linalg.slogdet(jac)
        with torch.no_grad():
            _, logdet = model.flow(feats)
        assert jac.shape == (sum(sizes), sum(sizes)) and sign != 0
        assert abs(float(logabs) - float(logdet[0])) < 1e-6 * max(1.0, abs(float(logabs)))
    finally:
        tiny.float()


def test_loss_trains_toward_unit_gaussian():
    """A few Adam steps on fixed features lower the NLL (the trainer's loop, in miniature)."""
    torch.manual_seed(1)
    model = create_model("uflow", make_config("uflow", TINY), random_init=True)
    feats = [f.detach() for f in model.features(torch.randn(16, 3, 16, 16))]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = float(model.loss(feats))
    for _ in range(30):
        loss = model.loss(feats)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.loss(feats)) < first - 0.1


def test_openvino_parity_and_float_scope(tiny):
    """Whole-graph export (the edge path) gives the torch latents at f32, and INT8 would keep them in float."""
    ov = pytest.importorskip("openvino")
    from calibration.export import float_op_names, to_openvino

    ov_model = to_openvino(tiny.float())
    ignored = set(float_op_names(ov_model, tiny.float_scopes))
    for out in ov_model.outputs:  # every output is computed from the float scope on
        assert out.get_node().input_value(0).get_node().get_friendly_name() in ignored
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    res = compiled({"image": frame[None]})
    x = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
    x = (x - torch.tensor(tiny.mean).view(1, 3, 1, 1)) / torch.tensor(tiny.std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = tiny.anomaly_outputs(x)
    from calibration.export import latent_shapes
    from edge.model import split_zsq

    got = split_zsq(res[compiled.output("zsq")], latent_shapes(tiny))
    for g, w in zip(got, want[2:]):
        np.testing.assert_allclose(g, w.numpy()[0, 0], rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("kind, tiny_config", [("uflow", TINY), ("msflow", {**TINY, "subfeatures": 2, "pos_dim": 8})])
def test_image_norm_makes_features_blind_to_a_global_gain_and_offset(kind, tiny_config):
    """`image_norm` (one function, both models) standardises each image inside the graph: a brighter or darker
    session of the same part gives the same features; without it the features change."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    shifted = 1.7 * x - 0.4
    normed = create_model(kind, make_config(kind, {**tiny_config, "image_norm": True}), random_init=True).eval()
    plain = create_model(kind, make_config(kind, tiny_config), random_init=True).eval()
    with torch.no_grad():
        for a, b in zip(normed.features(x), normed.features(shifted)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert any(float((a - b).abs().max()) > 0.1 for a, b in zip(plain.features(x), plain.features(shifted)))
