"""Shared fixtures: a small synthetic dataset, a model trained on it, and its IRs.

Built once per test session (about a minute on 2 cores) and reused by the edge, training and
calibration tests that need a real trained model or a real OpenVINO IR.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TINY_MODEL


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from training.synthetic import SyntheticConfig, generate

    return generate(tmp_path_factory.mktemp("data") / "tiles", SyntheticConfig(train=48, test_good=12, test_defect=6, size=128, seed=3))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synthetic_data) -> Path:
    from training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "run"
    return train(TrainConfig(data=str(synthetic_data), out=str(out), model_overrides=dict(TINY_MODEL), epochs=25,
                             holdout_fraction=0.2, seed=0, progress=False))


@pytest.fixture(scope="session")
def int8_ir(tmp_path_factory, trained_run, synthetic_data) -> Path:
    from calibration.calibrate import CalibrationConfig, calibrate

    out = tmp_path_factory.mktemp("ir8") / "tile.xml"
    calibrate(CalibrationConfig(str(trained_run), str(synthetic_data), str(out), precision="int8", progress=False))
    return out


@pytest.fixture(scope="session")
def fp32_ir(tmp_path_factory, trained_run, synthetic_data) -> Path:
    from calibration.calibrate import CalibrationConfig, calibrate

    out = tmp_path_factory.mktemp("ir32") / "tile.xml"
    calibrate(CalibrationConfig(str(trained_run), str(synthetic_data), str(out), precision="fp32", progress=False))
    return out
