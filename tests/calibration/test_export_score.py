"""The exported image score: the mean of the anomaly map's top k values, computed without TopK."""

import numpy as np
import openvino as ov
import pytest
import torch

from calibration.export import top_k_mean


def _exact(flat: np.ndarray, k: int) -> np.ndarray:
    return np.sort(flat.astype(np.float64), axis=1)[:, -k:].mean(1)


def _maps(n=4096):
    rng = np.random.default_rng(3)
    gamma = rng.gamma(2.0, 1.0, (1, n))
    spiky = gamma.copy()
    spiky[0, :40] += 1000 * rng.random(40)  # a few huge values: the widest bisection range
    ties = rng.integers(0, 5, (1, n)).astype(np.float64)  # many values equal to the k-th largest
    constant = np.full((1, n), 0.25)
    return {"gamma": gamma, "spiky": spiky, "ties": ties, "constant": constant,
            "two rows": np.concatenate([gamma, spiky])}


@pytest.mark.parametrize("name", list(_maps()))
@pytest.mark.parametrize("k", [1, 17, 123, 4096])
def test_top_k_mean_equals_the_sorted_mean_of_the_k_largest_values(name, k):
    flat = _maps()[name].astype(np.float32)
    got = top_k_mean(torch.from_numpy(flat), k).numpy()
    want = _exact(flat, k)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_top_k_mean_of_a_map_with_nan_is_nan_so_the_part_is_rejected():
    flat = torch.rand(1, 1000)
    flat[0, 10] = float("nan")
    assert torch.isnan(top_k_mean(flat, 30)).all()


def test_openvino_runs_the_top_k_mean_without_a_topk_op_and_gives_the_same_value():
    class Score(torch.nn.Module):
        def forward(self, x):
            return top_k_mean(x, 1966)

    flat = _maps(256 * 256)["spiky"].astype(np.float32)
    model = ov.convert_model(Score(), example_input=torch.from_numpy(flat))
    assert not [op for op in model.get_ops() if op.get_type_name() == "TopK"]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({0: flat})[compiled.output(0)].reshape(-1)
    np.testing.assert_allclose(got, _exact(flat, 1966), rtol=1e-6)
