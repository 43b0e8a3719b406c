"""Every example spec validates on its declared dataset and trains one Alrao epoch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener
from archscreen.core.spec import parse_spec, validate_spec
from archscreen.core.training.loop import TrainConfig
from tests.conftest import EXAMPLES, example_dataset

SPECS = sorted(EXAMPLES.glob("*.yaml"))


def test_there_are_examples_for_every_family() -> None:
    names = {p.stem for p in SPECS}
    for required in (
        "logistic_regression",
        "mlp",
        "lenet5",
        "resnet_small",
        "mobilenet_small",
        "char_lstm",
        "gru_classifier",
    ):
        assert required in names


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_example_trains_one_epoch(path: Path) -> None:
    data = load_dataset(example_dataset(path), seed=0)
    spec = parse_spec(path)
    validate_spec(spec, data.info)
    result = AlraoScreener(num_copies=4).screen(spec, data, TrainConfig(max_epochs=1, batch_size=64))
    assert result.epochs == 1
    assert math.isfinite(result.val_loss)
    assert result.steps == math.ceil(len(data.x_train) / 64)
