"""The normal envelope: the map and score show only what exceeds the highest NLL good parts reach
at each position; training fits it on the selected weights, the checkpoint and the IR carry it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.models.likelihood import ENVELOPE_TIE, envelope_excess, normal_envelope


def test_excess_is_only_the_tie_term_inside_the_envelope_and_exact_beyond():
    env = torch.full((1, 1, 4, 4), 2.0)
    amap = torch.full((1, 1, 4, 4), 1.5)
    amap[0, 0, 1, 2] = 5.0
    out = envelope_excess(amap, env)
    inside = torch.ones_like(amap, dtype=torch.bool)
    inside[0, 0, 1, 2] = False
    torch.testing.assert_close(out[inside], ENVELOPE_TIE * amap[inside])
    assert out[0, 0, 1, 2].item() == pytest.approx(3.0 + ENVELOPE_TIE * 5.0)
    # order is kept inside the envelope (no ties at zero)
    assert envelope_excess(torch.tensor([1.0]), torch.tensor([2.0])) < envelope_excess(torch.tensor([1.5]), torch.tensor([2.0]))


def test_envelope_is_the_per_position_max_widened_by_the_spread():
    maps = torch.zeros(3, 1, 9, 9)
    maps[0, 0, 4, 4] = 7.0
    maps[1, 0, 0, 0] = 2.0
    env = normal_envelope(maps, spread=3)
    assert env.shape == (1, 1, 9, 9)
    assert env[0, 0, 3:6, 3:6].eq(7.0).all() and env[0, 0, 4, 6] == 0.0
    assert env[0, 0, 0, 0] == 2.0 and env[0, 0, 1, 1] == 2.0
    assert normal_envelope(maps, spread=1)[0, 0, 3, 3] == 0.0


@pytest.fixture(scope="module")
def envelope_run(tmp_path_factory):
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("envelope")
    data = generate(root / "data", SyntheticConfig(train=14, test_good=3, test_defect=3, size=64, seed=1))
    cfg = TrainConfig(data=str(data), out=str(root / "run"), epochs=2, batch_size=4, threads=1, progress=False,
                      augment="texture", augment_views=1,
                      model_overrides={"stages": [1, 2], "input_size": [32, 32], "flow_depth": [1, 2], "pos_dim": 8,
                                       "envelope": True})
    return data, train(cfg)


def fitted_and_held_out(data, payload) -> tuple[list, list]:
    """The run's good training images split into those the flow (and the envelope) learned and the held-out ones."""
    from training.data import load_folder

    held = set(payload["holdout"])
    train = load_folder(data).train
    return [s for s in train if str(s.path) not in held], [s for s in train if str(s.path) in held]


def raw_and_map(model, samples):
    """(raw NLL map, the map the model outputs: the envelope's excess) of `samples`."""
    from training.data import load_image
    from training.train import to_tensor

    x = to_tensor([load_image(s, model.config.input_size) for s in samples], model.mean, model.std)
    with torch.no_grad():
        return model.outputs_from_features(model.features(x), x.shape[-2:], raw=True)[0], model.anomaly_outputs(x)[0]


def test_training_fits_the_envelope_on_training_images_only_not_the_held_out_ones(envelope_run):
    from training.checkpoint import load_model, load_payload

    data, run = envelope_run
    model, payload = load_model(run)
    assert "map_envelope" in payload["state_dict"] and model.map_envelope.min() > 0
    train, hold = fitted_and_held_out(data, payload)
    assert train and hold
    raw, amap = raw_and_map(model, train)
    # every good image the envelope was fitted on lies inside it: only the tie term is left
    torch.testing.assert_close(amap, ENVELOPE_TIE * raw)
    assert load_payload(run)["epoch"] >= 0  # the selected checkpoint's bookkeeping survived the re-save


def test_ir_applies_the_envelope_like_torch(envelope_run):
    import openvino as ov

    from calibration.export import to_openvino
    from training.checkpoint import load_model
    from training.data import load_folder, load_image
    from training.train import to_tensor

    data, run = envelope_run
    model, _ = load_model(run)
    compiled = ov.Core().compile_model(to_openvino(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for sample in load_folder(data).test:
        img = load_image(sample, model.config.input_size)
        res = compiled({0: img[None]})
        with torch.no_grad():
            amap, score, *_ = model.anomaly_outputs(to_tensor([img], model.mean, model.std))
        np.testing.assert_allclose(res[compiled.output("anomaly_map")].reshape(-1), amap.numpy().reshape(-1),
                                   rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(res[compiled.output("score")].reshape(-1), score.numpy().reshape(-1), rtol=1e-3, atol=1e-6)


def test_the_envelope_is_fitted_without_the_held_out_images(tmp_path):
    # edge-calibrate sets the image threshold on the held-out images: fitted into the envelope they scored ~0
    from training.checkpoint import load_model
    from training.models.likelihood import normal_envelope
    from training.synthetic import SyntheticConfig, generate
    from training.train import TrainConfig, train

    data = generate(tmp_path / "data", SyntheticConfig(train=14, test_good=2, test_defect=2, size=64, seed=3))
    run = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=4, threads=1, progress=False,
                            model_overrides={"stages": [1, 2], "input_size": [32, 32], "flow_depth": [1, 1], "pos_dim": 8,
                                             "envelope": True}))
    model, payload = load_model(run)
    train, hold = (raw_and_map(model, samples)[0] for samples in fitted_and_held_out(data, payload))
    torch.testing.assert_close(model.map_envelope, normal_envelope(train), rtol=1e-4, atol=1e-4)
    with_hold = normal_envelope(torch.cat([train, hold]))
    assert not torch.allclose(model.map_envelope, with_hold, rtol=1e-4, atol=1e-4)  # this case tells the two apart
