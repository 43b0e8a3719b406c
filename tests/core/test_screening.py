"""The Screener contract for every screener, plus Alrao-specific screening checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import pytest

from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener, FixedRateScreener, Screener, grid
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import TrainConfig
from archscreen.testing import ScreenerContract

MLP = {
    "name": "tiny-mlp",
    "layers": ["flatten", {"linear": 32}, "relu", {"dropout": 0.1}, {"linear": 16}, "tanh"],
    "head": "classifier",
}
SCREENERS: dict[str, Callable[[], Screener]] = {
    "alrao-sgd": lambda: AlraoScreener(num_copies=4, base="sgd"),
    "alrao-adam": lambda: AlraoScreener(num_copies=4, base="adam", lr_max=0.1),
    "sgd": lambda: FixedRateScreener(lr=0.1),
    "adam": lambda: FixedRateScreener(lr=1e-3, optimizer="adam"),
}
CONFIG = TrainConfig(max_epochs=3, patience=5, batch_size=64, max_steps_per_epoch=8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


class TestScreenerContract(ScreenerContract):
    """Every screener through the importable contract (archscreen.testing.ScreenerContract)."""

    @pytest.fixture(params=sorted(SCREENERS))
    def contract_screener(self, request: pytest.FixtureRequest) -> Screener:
        return SCREENERS[request.param]()


def test_results_serialise_as_before_the_shared_base(digits) -> None:
    """to_dict keeps the key order results had before RunResult held the shared fields."""
    r = AlraoScreener(num_copies=4).screen(MLP, digits, replace(CONFIG, max_epochs=1))
    before = [
        "screener", "spec_name", "spec_hash", "dataset", "task", "seed", "val_loss", "val_accuracy",
        "test_loss", "test_accuracy", "val_bpc", "test_bpc", "val_mse", "test_mse", "epochs",
        "best_epoch", "steps", "seconds", "stopped_because", "preferred_lr", "switch_posterior", "lr",
        "curves",
    ]  # fmt: skip
    # fields added since (e.g. ScreenResult.estimate) come after the old ones
    assert list(r.to_dict())[: len(before)] == before
    assert r.to_dict()["screener"] == "alrao-adam" and r.to_dict()["curves"] == r.curves


def test_alrao_result_has_posterior_over_copy_rates(digits) -> None:
    r = AlraoScreener(num_copies=5, lr_min=1e-4, lr_max=1.0).screen(MLP, digits, CONFIG)
    assert r.switch_posterior is not None and len(r.switch_posterior) == 5
    rates = [e["lr"] for e in r.switch_posterior]
    assert rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1.0)
    assert sum(e["weight"] for e in r.switch_posterior) == pytest.approx(1.0, abs=1e-6)
    assert r.preferred_lr is not None and 1e-4 <= r.preferred_lr <= 1.0


def test_alrao_learns_digits(digits) -> None:
    r = AlraoScreener().screen(parse_spec(MLP), digits, TrainConfig(max_epochs=5, batch_size=32))
    assert r.val_accuracy is not None and r.val_accuracy > 0.8
    # the class-balanced scores of the Switch-averaged prediction, on both splits
    for score in (r.val_balanced_accuracy, r.val_macro_f1, r.test_balanced_accuracy, r.test_macro_f1):
        assert score is not None and 0.5 < score <= 1.0
    assert r.to_dict()["val_macro_f1"] == r.val_macro_f1


def test_grid_picks_the_best_mean_rate(digits) -> None:
    g = grid(MLP, digits, [1e-4, 0.1], seeds=2, config=CONFIG)
    by = g.by_lr()
    assert len(g.runs) == 4 and set(by) == {1e-4, 0.1}
    means = {lr: sum(r.val_loss for r in runs) / 2 for lr, runs in by.items()}
    assert g.best_lr == min(means, key=lambda k: means[k]) == 0.1
    assert g.best_mean_val_loss == pytest.approx(means[0.1])


def test_divergence_stops_the_run() -> None:
    spec = {"name": "reg", "layers": [{"linear": 32}, "relu"], "head": "regression"}
    r = FixedRateScreener(lr=10.0).screen(spec, "regression", CONFIG)
    assert r.stopped_because == "diverged"
    assert r.epochs == 1  # stopped at once, not after patience
    assert not math.isfinite(r.val_loss)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_alrao_regression_defaults_do_not_diverge(base: Literal["sgd", "adam"]) -> None:
    spec = {"name": "reg", "layers": [{"linear": 32}, "relu"], "head": "regression"}
    r = AlraoScreener(base=base).screen(spec, "regression", CONFIG)
    assert r.stopped_because == "max_epochs"
    assert math.isfinite(r.val_loss) and r.val_mse is not None
