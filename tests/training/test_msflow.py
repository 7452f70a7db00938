"""MS-Flow: invertible, exact log-det, independent sub-feature flows, the likelihood sees a pasted defect,
checkpoints round-trip (and resume), and the whole graph exports to OpenVINO with parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.models import create_model, list_models, make_config
from training.models.msflow import PRESETS

# Lite0 stages 1/2 (24 @ stride 4, 40 @ stride 8), no pooling: a 16x16 input gives 4x4 and 2x2 maps (544 dims)
TINY = {"stages": [1, 2], "input_size": [16, 16], "flow_depth": [2, 2], "subfeatures": 2, "pool_stride": 1, "pos_dim": 8}


def perturbed(model):
    """Every flow parameter moved off its identity initialisation, so no test passes on identity blocks."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module", params=["permute", "swap"])
def tiny(request):
    return perturbed(create_model("msflow", make_config("msflow", {**TINY, "coupling": request.param}), random_init=True))


def test_registered_and_presets():
    assert "msflow" in list_models()
    cfg = make_config("msflow", {})
    assert cfg.input_size == (256, 256) and cfg.backbone == "tf_efficientnet_lite0" and cfg.subfeatures == 4
    for preset in PRESETS.values():
        make_config("msflow", preset)  # every preset is a valid config
    assert make_config("msflow", PRESETS["paper_b5"]).backbone == "tf_efficientnet_b5"


def test_surface_preset_gives_the_default_grids_from_deeper_stages():
    """`surface` reads stride 8/16/32 stages unpooled: the flows see the same 32/16/8 grids at 256 px as the
    default (so the NFA's test counts and the edge's cost of the map stay put), with deeper features."""
    default = create_model("msflow", make_config("msflow", {}), random_init=True)
    surface = create_model("msflow", make_config("msflow", PRESETS["surface"]), random_init=True)
    assert surface.shapes == default.shapes == [(32, 32), (16, 16), (8, 8)]
    assert surface.channels[-1] > default.channels[-1]  # the stride-32 stage is wider than the stride-16 one
    assert [len(f.blocks) for f in surface.flows] == [4, 6, 8]


def test_edge_train_names_an_unknown_preset(tmp_path, capsys):
    from training.cli import main

    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no preset 'nope'" in err[0] and "surface" in err[0]


def test_invertible(tiny):
    feats = [torch.randn(2, c, *hw) for c, hw in zip(tiny.channels, tiny.shapes)]
    with torch.no_grad():
        zs, _ = tiny.flow(feats)
        back = tiny.reverse(zs)
    err = max(float((a - b).abs().max()) for a, b in zip(back, feats))
    assert err < 1e-4
    assert max(float((z - f).abs().max()) for z, f in zip(zs, feats)) > 1e-2  # not the identity


def test_logdet_is_exact(tiny):
    """log|det J| of the flow equals the slogdet of the autograd Jacobian features -> latents."""
    shapes = [(c, *hw) for c, hw in zip(tiny.channels, tiny.shapes)]
    sizes = [int(np.prod(s)) for s in shapes]

    def f(flat):
        parts = [p.reshape(1, *s) for p, s in zip(torch.split(flat, sizes), shapes)]
        zs, _ = tiny.flow(parts)
        return torch.cat([z.reshape(-1) for z in zs])

    x = torch.randn(sum(sizes), dtype=torch.float64)
    tiny.double()
    try:
        jac = torch.autograd.functional.jacobian(f, x)
        parts = [p.reshape(1, *s) for p, s in zip(torch.split(x, sizes), shapes)]
        _, logdet = tiny.flow(parts)
    finally:
        tiny.float()
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1], rtol=1e-6, atol=1e-6)


def test_group_norm_is_a_layer_norm_over_each_groups_channels_per_pixel():
    """The 4-D form (means as constant grouped 1x1 convolutions, for OpenVINO) against the plain definition."""
    from training.models.msflow import GroupChannelNorm

    torch.manual_seed(0)
    norm = GroupChannelNorm(3, 5)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 4 * torch.randn(2, 15, 4, 3) + 2
    g = x.reshape(2, 3, 5, 4, 3)
    ref = torch.nn.functional.layer_norm(g.movedim(2, -1), (5,), eps=norm.eps).movedim(-1, 2)
    ref = (ref * norm.weight + norm.bias).reshape(2, 15, 4, 3)
    assert torch.allclose(norm(x), ref, atol=1e-5)


@pytest.mark.parametrize("coupling", ["permute", "swap"])
def test_folding_norm_means_into_convolutions_keeps_outputs_and_drops_one_conv_per_norm(coupling):
    """fold_for_export (the export copy's rewrite) moves each norm's mean subtraction into the convolutions that
    feed it and skips the last fusion layer's channel reordering: the same map and Σz² (the outputs), one
    constant-kernel convolution fewer per norm and one Gather fewer per scale. The model handed to export is left
    as it was."""
    from calibration.export import export_copy, to_openvino
    from training.models.msflow import GroupChannelNorm

    model = perturbed(create_model("msflow", make_config("msflow", {**TINY, "coupling": coupling}), random_init=True))
    x = torch.randn(2, 3, 16, 16)
    folded = export_copy(model)
    norms = [m for m in folded.modules() if isinstance(m, GroupChannelNorm)]
    assert norms and all(m.centered for m in norms)
    assert not any(m.centered for m in model.modules() if isinstance(m, GroupChannelNorm))
    with torch.no_grad():
        want = model.anomaly_outputs(x)
        got = folded.anomaly_outputs(x.flip(1))  # the export copy takes BGR
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    def norm_convs(ov_model):
        return sum(1 for op in ov_model.get_ordered_ops()
                   if op.get_type_name() in ("Convolution", "GroupConvolution") and ".norm" in op.get_friendly_name())

    exported = to_openvino(model)
    model.fold_for_export = lambda: None  # the same export without the rewrite
    unfolded = to_openvino(model)
    assert norm_convs(exported) == len(norms)  # the variance's mean only
    assert norm_convs(unfolded) == 2 * len(norms)
    # the last fusion layer leaves its latents unordered (only Σ z² is exported): one Gather fewer per scale
    gathers = [sum(op.get_type_name() == "Gather" for op in m.get_ordered_ops()) for m in (exported, unfolded)]
    assert gathers[0] == gathers[1] - len(model.channels)
    assert folded.fusion[-1].ordered is False and model.fusion[-1].ordered is True


def test_fusion_pools_with_plain_average_pooling_where_sizes_divide_and_exports_without_adaptive_pool():
    """The fusion's pooling to the coarsest grid: plain average pooling where the sizes divide (OpenVINO runs it
    with a fast kernel), adaptive pooling elsewhere; the same latents as adaptive pooling everywhere."""
    from calibration.export import to_openvino
    from training.models.msflow import FusionCoupling, pool_kernel

    assert pool_kernel((32, 32), (8, 8)) == (4, 4) and pool_kernel((16, 12), (8, 6)) == (2, 2)
    assert pool_kernel((15, 10), (8, 6)) is None
    model = perturbed(create_model("msflow", make_config("msflow", {**TINY, "input_size": [32, 32]}), random_init=True))
    fusion = [m for m in model.modules() if isinstance(m, FusionCoupling)]
    assert fusion and all(k is not None for m in fusion for k, s in zip(m.pool_kernels, m.shapes) if tuple(s) != m.coarse)
    feats = [torch.randn(2, c, h, w) for c, (h, w) in zip(model.channels, model.shapes)]
    with torch.no_grad():
        zs, _ = model.flow(feats)
        for m in fusion:
            m.pool_kernels = [None] * len(m.pool_kernels)  # adaptive pooling throughout
        adaptive, _ = model.flow(feats)
    for a, b in zip(zs, adaptive):
        torch.testing.assert_close(a, b)
    types = {op.get_type_name() for op in to_openvino(perturbed(create_model(
        "msflow", make_config("msflow", {**TINY, "input_size": [32, 32]}), random_init=True))).get_ordered_ops()}
    assert "AvgPool" in types and "AdaptiveAvgPool" not in types


def test_subfeature_flows_are_independent():
    """Without fusion, latents of one sub-feature depend only on that sub-feature's channels."""
    model = perturbed(create_model("msflow", make_config("msflow", {**TINY, "fusion_depth": 0, "coupling": "permute"}),
                                   random_init=True))  # swap's layout has its own test below
    c, (h, w) = model.channels[0], model.shapes[0]
    x = torch.randn(1, c, h, w, requires_grad=True)
    z, _ = model.flows[0](x)
    half = c // 2
    (grad,) = torch.autograd.grad(z[:, :half].sum(), x)
    assert float(grad[:, half:].abs().max()) == 0.0 and float(grad[:, :half].abs().max()) > 0


@pytest.mark.parametrize("coupling", ["permute", "swap"])
def test_subnet_kernel_1_keeps_each_latent_to_its_own_positions_features(coupling):
    """subnet_kernel=1: changing the features at one position changes the scale flow's z only there (3x3 subnets
    spread it to the neighbours); the fusion pools to the coarsest grid and upsamples bilinearly, so through it a
    change reaches only the fine positions that interpolate from its coarse cell. Both kernels invert."""
    cfg = {**TINY, "input_size": [32, 32], "coupling": coupling}  # 8x8 and 4x4 maps
    spread = {}
    for kernel in (1, 3):
        model = perturbed(create_model("msflow", make_config("msflow", {**cfg, "subnet_kernel": kernel}),
                                       random_init=True))
        feats = [torch.randn(1, c, h, w) for c, (h, w) in zip(model.channels, model.shapes)]
        with torch.no_grad():
            zs, _ = model.flow(feats)
            assert max(float((r - f).abs().max()) for r, f in zip(model.reverse(zs), feats)) < 1e-4
            moved = [f.clone() for f in feats]
            moved[0][:, :, 2, 5] += 3.0  # one position of the fine scale
            zm, _ = model.flows[0](moved[0])
            z0, _ = model.flows[0](feats[0])
            changed = (zm - z0).abs().amax(1)[0] > 1e-6
            assert bool(changed[2, 5])
            spread[kernel] = int(changed.sum())
            zs_moved, _ = model.flow(moved)
            whole = (zs_moved[0] - zs[0]).abs().amax(1)[0] > 1e-6
            if kernel == 1:  # position (2, 5) pools into coarse cell (1, 2); rows 1-4, columns 3-6 interpolate from it
                assert whole.nonzero().tolist() == [[r, c] for r in range(1, 5) for c in range(3, 7)]
    assert spread[1] == 1 and spread[3] > 9


def test_subnet_kernel_must_be_odd():
    with pytest.raises(ValueError, match="subnet_kernel"):
        create_model("msflow", make_config("msflow", {**TINY, "subnet_kernel": 2}), random_init=True)


def test_swap_coupling_keeps_subfeatures_apart_and_inverts_with_odd_halves():
    """coupling="swap": sub-feature g is channels [g·ca, (g+1)·ca) of the first half plus [g·cb, (g+1)·cb) of the
    second; with an odd sub-feature width the halves differ and alternate between blocks. The flow must invert
    and keep the k flows independent (no fusion here)."""
    from training.models.msflow import ScaleFlow

    torch.manual_seed(0)
    k, cg, h, w = 3, 5, 4, 4  # ca = 2, cb = 3
    flow = ScaleFlow(k * cg, k, h, w, depth=3, clamp=1.9, hidden_ratio=1.0, pos_dim=4, rng=np.random.default_rng(0),
                     coupling="swap")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, k * cg, h, w, requires_grad=True)
    z, _ = flow(x)
    assert float((flow.reverse(z) - x).detach().abs().max()) < 1e-4 and float((z - x).detach().abs().max()) > 1e-2

    def members(g, first):  # the channels of sub-feature g in a tensor whose first half is `first` wide per group
        second = cg - first
        return [g * first + i for i in range(first)] + [k * first + g * second + i for i in range(second)]

    out_first = flow.blocks[-1].conv2s.out_channels // k  # the last block's transformed half comes out first
    for g in range(k):
        (grad,) = torch.autograd.grad(z[:, members(g, out_first)].sum(), x, retain_graph=True)
        inside = members(g, 2)
        outside = [c for c in range(k * cg) if c not in inside]
        assert float(grad[:, outside].abs().max()) == 0.0 and float(grad[:, inside].abs().max()) > 0


def test_swap_coupling_exports_without_gathers_in_the_flows_and_with_parity():
    """The point of coupling="swap": the scale flows export with no Gather (the fusion keeps its own), and the IR
    computes what torch does."""
    import openvino as ov

    from calibration.export import to_openvino
    from training.train import to_tensor

    model = perturbed(create_model("msflow", make_config("msflow", {**TINY, "coupling": "swap"}), random_init=True))
    ov_model = to_openvino(model)
    gathers = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() == "Gather"]
    assert gathers and not [n for n in gathers if ".flows." in n]
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    img = np.random.default_rng(0).integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    res = compiled({0: img})
    with torch.no_grad():
        amap, score, *zsq = model.anomaly_outputs(to_tensor(list(img), model.mean, model.std))
    np.testing.assert_allclose(res[compiled.output("anomaly_map")].reshape(-1), amap.numpy().reshape(-1), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(res[compiled.output("zsq")].reshape(-1), torch.cat([q.flatten(1) for q in zsq], 1).numpy().reshape(-1),
                               rtol=1e-3, atol=1e-4)


def test_outputs_contract(tiny):
    x = torch.randn(2, 3, 16, 16)
    zs, logdet = tiny.flow(tiny.features(x))
    assert [tuple(z.shape[1:]) for z in zs] == [(c, *hw) for c, hw in zip(tiny.channels, tiny.shapes)]
    assert logdet.shape == (2,)
    amap, score, *zsq = tiny.anomaly_outputs(x)
    assert amap.shape == (2, 1, 16, 16) and score.shape == (2,) and len(zsq) == len(tiny.channels)
    for q, z in zip(zsq, zs):  # Σ_c z² over ALL channels of the scale (all sub-features)
        torch.testing.assert_close(q, (z**2).sum(1, keepdim=True))


def test_image_pyramid_and_other_timm_backbones():
    cfg = make_config("msflow", {"backbone": "resnet18", "stages": [2], "image_scales": [1.0, 0.5],
                                 "input_size": [64, 48], "flow_depth": [1, 1], "pos_dim": 8})
    model = create_model("msflow", cfg, random_init=True)
    assert model.channels == (128, 128) and model.shapes == [(4, 3), (2, 2)]
    amap, score, *zsq = model.anomaly_outputs(torch.randn(1, 3, 64, 48))
    assert amap.shape == (1, 1, 64, 48) and [tuple(q.shape[-2:]) for q in zsq] == [(4, 3), (2, 2)]


def _tiles(n, size, seed, defect=False):
    from training.synthetic import draw_defect, surface

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = surface(rng, size)
        if defect:
            img, _ = draw_defect(rng, img, "spot")
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def test_pasted_defect_lowers_likelihood():
    """Trained on good tiles (real Lite0 features), the same tiles with a pasted defect score higher."""
    from training.train import to_tensor

    torch.manual_seed(0)
    cfg = make_config("msflow", {"stages": [1, 2], "input_size": [64, 64], "flow_depth": [2, 2], "pos_dim": 8})
    model = create_model("msflow", cfg)
    good = to_tensor(_tiles(24, 64, 0), model.mean, model.std)
    with torch.no_grad():
        feats = model.features(good)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    for step in range(40):
        idx = torch.randperm(24)[:8]
        loss = model.loss([f[idx] for f in feats])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    rng = np.random.default_rng(5)
    from training.synthetic import draw_defect

    clean = _tiles(8, 64, 1)
    pasted = []
    for img in clean:
        # a dark blob pasted at the centre
        d = img.astype(np.float32).copy()
        d[24:40, 24:40] *= 0.35
        pasted.append(np.clip(d, 0, 255).astype(np.uint8))
    with torch.no_grad():
        s_clean = model.anomaly_outputs(to_tensor(clean, model.mean, model.std))[1]
        out = model.anomaly_outputs(to_tensor(pasted, model.mean, model.std))
    assert bool((out[1] > s_clean).all()), (s_clean, out[1])
    amap = out[0][:, 0]
    assert float(amap[:, 24:40, 24:40].mean()) > float(amap[:, :16, :16].mean())  # the map points at the blob
    del rng, draw_defect


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("msflow")
    data = generate(root / "data", SyntheticConfig(train=14, test_good=4, test_defect=2, size=64, seed=0))
    cfg = TrainConfig(data=str(data), out=str(root / "run"), epochs=2, batch_size=4, threads=1, progress=False,
                      model_overrides={"stages": [1, 2], "input_size": [32, 32], "flow_depth": [1, 2], "pos_dim": 8})
    return data, train(cfg), cfg


def test_checkpoint_round_trip_and_resume(tiny_run):
    import dataclasses

    from training.checkpoint import load_model, load_payload
    from training.train import train

    data, run, cfg = tiny_run
    model, payload = load_model(run)
    assert not any(k.startswith("backbone.") for k in payload["state_dict"])
    x = torch.randn(1, 3, 32, 32)
    again, _ = load_model(run)
    for a, b in zip(model.anomaly_outputs(x), again.anomaly_outputs(x)):
        torch.testing.assert_close(a, b)
    # the saved state equals the live trained state, key by key
    for k, v in model.state_dict().items():
        if not k.startswith("backbone."):
            torch.testing.assert_close(v, payload["state_dict"][k])
    # resume continues from the last epoch instead of starting over
    train(dataclasses.replace(cfg, epochs=3, resume=True))
    log = (run / "train.log").read_text().splitlines()
    assert [line.split()[1] for line in log if line.startswith("epoch")] == ["1/2", "2/2", "3/3"]
    assert load_payload(run / "last.pt")["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["model"] == "msflow"


def test_checkpoint_saved_before_the_coupling_field_loads_as_permute(tmp_path):
    """Checkpoints trained before `coupling` existed (all of them "permute") keep loading after the default
    became "swap": a missing field takes the value it was trained with, not today's default."""
    from training import checkpoint

    old = perturbed(create_model("msflow", make_config("msflow", {**TINY, "coupling": "permute"}), random_init=True))
    checkpoint.save(tmp_path / "checkpoint.pt", old, {"epoch": 0})
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del payload["model_config"]["coupling"]
    torch.save(payload, tmp_path / "checkpoint.pt")
    assert make_config("msflow", {}).coupling == "swap"
    loaded, _ = checkpoint.load_model(tmp_path)
    assert loaded.config.coupling == "permute"
    feats = [torch.randn(1, c, h, w) for c, (h, w) in zip(old.channels, old.shapes)]  # the backbone is not saved
    with torch.no_grad():
        for a, b in zip(old.flow(feats)[0], loaded.flow(feats)[0]):
            torch.testing.assert_close(a, b)


def test_resuming_a_run_started_before_the_coupling_field_continues_it_as_permute(tiny_run, tmp_path):
    """`--resume` rebuilds the model the run was started with (its saved config), not today's defaults: a run
    begun as "permute" before the field existed continues as "permute", every saved tensor loaded."""
    import dataclasses

    from training import checkpoint
    from training.train import train

    data, _, cfg = tiny_run
    first = dataclasses.replace(cfg, out=str(tmp_path / "run"), epochs=1,
                                model_overrides={**cfg.model_overrides, "coupling": "permute"})
    run = train(first)
    for name in ("last.pt", "checkpoint.pt"):  # as written before the field existed
        payload = torch.load(run / name, weights_only=False)
        del payload["model_config"]["coupling"]
        torch.save(payload, run / name)
    before = checkpoint.load_payload(run / "last.pt")["state_dict"]
    train(dataclasses.replace(first, epochs=2, resume=True, model_overrides=dict(cfg.model_overrides)))
    assert json.loads((run / "config.json").read_text())["model_config"]["coupling"] == "permute"
    after = checkpoint.load_payload(run / "last.pt")
    assert after["epoch"] == 1 and after["model_config"]["coupling"] == "permute"
    assert set(after["state_dict"]) == set(before)  # the same tensors, trained on from where they were


def test_exports_to_openvino_with_parity(tiny_run):
    import openvino as ov

    from calibration.export import to_openvino
    from training.checkpoint import load_model
    from training.data import load_folder, load_image
    from training.train import to_tensor

    data, run, _ = tiny_run
    model, _ = load_model(run)
    compiled = ov.Core().compile_model(to_openvino(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.get_any_name() for o in compiled.outputs]
    assert names == ["anomaly_map_capped", "anomaly_map", "score", "zsq"]
    img = load_image(load_folder(data).test[-1], model.config.input_size)
    res = compiled({0: img[None]})
    with torch.no_grad():
        amap, score, *zsq = model.anomaly_outputs(to_tensor([img], model.mean, model.std))
    want = {"anomaly_map": amap, "score": score, "zsq": torch.cat([q.flatten(1) for q in zsq], 1),
            "anomaly_map_capped": torch.minimum(amap, score.view(-1, 1, 1, 1))}
    for name, r in want.items():
        np.testing.assert_allclose(res[compiled.output(name)].reshape(-1), r.numpy().reshape(-1), rtol=1e-3, atol=1e-4)


def test_ir_colour_order_matches_training(tiny_run):
    import openvino as ov

    from calibration.export import to_openvino
    from training.checkpoint import load_model
    from training.train import to_tensor

    _, run, _ = tiny_run
    model, _ = load_model(run)
    compiled = ov.Core().compile_model(to_openvino(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 200  # pure blue in BGR
    with torch.no_grad():
        ref = model.anomaly_outputs(to_tensor([img], model.mean, model.std))[1]
    np.testing.assert_allclose(compiled({0: img[None]})[compiled.output("score")], ref.numpy(), rtol=1e-3)
