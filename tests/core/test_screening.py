"""Contract suite every Screener passes, plus Alrao-specific screening checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest
import torch

from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener, FixedRateScreener, Screener, grid
from archscreen.core.spec import SpecError, parse_spec
from archscreen.core.training.loop import Progress, TrainConfig, TrainingCancelled

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


def values(r) -> list[tuple[float, ...]]:
    """The curves without wall-clock times."""
    return [(c["epoch"], c["train_loss"], c["val_loss"], c["val_accuracy"], c["steps"]) for c in r.curves]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(params=sorted(SCREENERS))
def screener(request) -> Screener:
    return SCREENERS[request.param]()


class TestScreenerContract:
    def test_same_seed_same_result(self, screener: Screener, digits) -> None:
        a = screener.screen(MLP, digits, CONFIG)
        b = screener.screen(MLP, digits, CONFIG)
        assert values(a) == values(b)
        assert a.val_loss == b.val_loss and a.test_accuracy == b.test_accuracy

    def test_other_seed_other_result(self, screener: Screener, digits) -> None:
        a = screener.screen(MLP, digits, CONFIG)
        b = screener.screen(MLP, digits, replace(CONFIG, seed=1))
        assert values(a) != values(b)

    def test_reports_the_best_epoch(self, screener: Screener, digits) -> None:
        r = screener.screen(MLP, digits, CONFIG)
        best = min(r.curves, key=lambda c: c["val_loss"])
        assert r.best_epoch == best["epoch"]
        assert r.val_loss == pytest.approx(best["val_loss"], rel=1e-6)
        assert r.epochs == len(r.curves) == 3
        assert r.stopped_because == "max_epochs"
        assert 0.0 <= (r.test_accuracy or -1) <= 1.0

    def test_invalid_spec_fails_before_training(self, screener: Screener, digits) -> None:
        bad = {
            "name": "bad",
            "layers": [{"conv2d": {"out": 4, "kernel": 9}}, "flatten"],
            "head": "classifier",
        }
        calls: list[Progress] = []
        with pytest.raises(SpecError, match=r"layers\[0\]\.conv2d"):
            screener.screen(bad, digits, CONFIG, callback=calls.append)
        assert calls == []

    def test_cancel_keeps_partial_curves(self, screener: Screener, digits) -> None:
        def cancel(p: Progress) -> None:
            raise TrainingCancelled

        r = screener.screen(MLP, digits, CONFIG, callback=cancel)
        assert r.stopped_because == "cancelled"
        assert len(r.curves) == 1

    def test_cancel_from_step_hook_stops_mid_epoch(self, screener: Screener, digits) -> None:
        steps_seen: list[tuple[int, int]] = []

        def cancel_in_epoch_two(step: int, per_epoch: int) -> None:
            steps_seen.append((step, per_epoch))
            if len(steps_seen) == per_epoch + 3:
                raise TrainingCancelled

        r = screener.screen(MLP, digits, CONFIG, step_hook=cancel_in_epoch_two)
        assert r.stopped_because == "cancelled"
        assert len(r.curves) == 1  # the unfinished second epoch is dropped
        assert len(steps_seen) == CONFIG.max_steps_per_epoch + 3
        assert math.isfinite(r.val_loss)

    def test_checkpoint_resume_equals_uninterrupted(self, screener: Screener, digits, tmp_path: Path) -> None:
        full = screener.screen(MLP, digits, CONFIG)

        def stop_at_2(p: Progress) -> None:
            if p.epoch == 2:
                raise SystemExit("worker died")  # not a cancel: the checkpoint of epoch 1 remains

        ckpt = tmp_path / "run.pt"
        with pytest.raises(SystemExit):
            screener.screen(MLP, digits, CONFIG, callback=stop_at_2, checkpoint_path=ckpt)
        assert ckpt.exists()
        resumed = screener.screen(MLP, digits, CONFIG, checkpoint_path=ckpt)
        assert values(resumed) == values(full)
        assert resumed.val_loss == full.val_loss
        assert resumed.test_accuracy == full.test_accuracy
        assert resumed.steps == full.steps

    def test_does_not_touch_the_data(self, screener: Screener, digits) -> None:
        before = digits.x_train.clone()
        screener.screen(MLP, digits, CONFIG)
        assert torch.equal(before, digits.x_train)


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
