"""Every tuner through the TunerContract and on every example spec, plus start-from-screening."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.training.loop import TrainConfig
from archscreen.core.tuning import (
    TUNERS,
    FD2Tuner,
    Trajectory,
    Tuner,
    TuningResult,
    get_tuner,
    initial_lr_from_screen,
)
from archscreen.testing import TunerContract
from tests.conftest import EXAMPLES, example_dataset

CONFIG = TrainConfig(max_epochs=1, patience=5, batch_size=32, max_steps_per_epoch=3, eval_batch_size=256)
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
_DATA: dict[str, DatasetSplits] = {}


def data(name: str) -> DatasetSplits:
    """The dataset cut to a few hundred samples: the contract is about behaviour, not accuracy."""
    if name not in _DATA:
        d = load_dataset(name, seed=0)
        _DATA[name] = DatasetSplits(
            info=d.info,
            x_train=d.x_train[:512],
            y_train=d.y_train[:512],
            x_val=d.x_val[:96],
            y_val=d.y_val[:96],
            x_test=d.x_test[:96],
            y_test=d.y_test[:96],
        )
    return _DATA[name]


def tune(
    spec: Path,
    dataset: DatasetSplits,
    init_lr: float | None,
    config: TrainConfig,
    *,
    tuner: str = "fd2",
    **kwargs: Any,
) -> TuningResult:
    """One run of the named tuner (what the removed module-level ``tune()`` did)."""
    return get_tuner(tuner).tune(spec, dataset, init_lr, config, **kwargs)


class TestEveryTuner(TunerContract):
    """The importable contract (archscreen.testing.TunerContract) over the whole registry."""

    @pytest.fixture(params=sorted(TUNERS))
    def contract_tuner(self, request: pytest.FixtureRequest) -> Tuner:
        return get_tuner(request.param)


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("name", sorted(TUNERS))
def test_every_tuner_on_every_example(name: str, example: Path) -> None:
    init = get_tuner(name).default_init_lr()
    r = tune(example, data(example_dataset(example)), init, CONFIG, tuner=name)
    assert r.tuner == name and r.stopped_because == "max_epochs" and r.steps == 3
    assert r.trajectory[0] == [0, pytest.approx(init, rel=1e-9)] and len(r.trajectory) == 4
    assert all(lr > 0 and math.isfinite(lr) for _, lr in r.trajectory)
    assert r.recommended_lr > 0 and math.isfinite(r.recommended_lr)
    assert math.isfinite(r.val_loss) and len(r.curves) == 1
    d = r.to_dict()
    for key in ("recommended_lr", "trajectory", "val_loss", "test_accuracy", "stopped_because"):
        assert key in d


def test_paper_exact_turns_every_guard_off() -> None:
    t = FD2Tuner(paper_exact=True)
    assert (t.eps, t.delta, t.every, t.relative_eps, t.curvature_guard, t.finite_guard) == (
        1e-5,
        1e-6,
        1,
        False,
        False,
        False,
    )
    assert t.max_change is None and t.eval_dtype is None and t.eval_samples is None
    assert get_tuner("salera", paper_exact=True).noise_margin == 0.0  # type: ignore[attr-defined]
    assert get_tuner("fd1", paper_exact=True).max_change is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown tuner 'fd3'"):
        get_tuner("fd3")


def test_trajectory_is_thinned() -> None:
    t = get_tuner("fd1")
    t.max_points = 8
    r = t.tune(EXAMPLES / "mlp.yaml", data("mnist1d"), 0.05, replace(CONFIG, max_steps_per_epoch=40))
    assert len(r.trajectory) <= 8 and r.trajectory[0][0] == 0
    steps = [s for s, _ in r.trajectory]
    assert steps == sorted(steps) and len({b - a for a, b in itertools.pairwise(steps)}) == 1


POSTERIOR = [{"lr": 1e-4, "weight": 0.0}, {"lr": 1e-2, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]


def test_initial_lr_from_screen() -> None:
    assert initial_lr_from_screen(POSTERIOR) == pytest.approx(0.1)  # exp(mean(log 1e-2, log 1))
    assert initial_lr_from_screen({"switch_posterior": POSTERIOR}) == pytest.approx(0.1)
    assert initial_lr_from_screen(POSTERIOR, lr_range=(1e-3, 0.05)) == pytest.approx(0.05)
    one = [{"lr": 1e-4, "weight": 1.0}, {"lr": 10.0, "weight": 0.0}]
    assert initial_lr_from_screen(one) == pytest.approx(1e-4)
    assert initial_lr_from_screen({"switch_posterior": None, "preferred_lr": 0.03}) == 0.03
    with pytest.raises(ValueError, match="no Switch posterior"):
        initial_lr_from_screen({"switch_posterior": None})
    with pytest.raises(ValueError, match="weights"):
        initial_lr_from_screen([{"lr": 0.1, "weight": 0.0}])


def test_start_from_an_alrao_screening() -> None:
    from archscreen.core.screening import AlraoScreener

    digits = data("digits")
    s = AlraoScreener(num_copies=4).screen(EXAMPLES / "lenet5.yaml", digits, CONFIG)
    lr0 = initial_lr_from_screen(s)
    lrs = [e["lr"] for e in s.switch_posterior or []]
    assert min(lrs) <= lr0 <= max(lrs)
    r = tune(EXAMPLES / "lenet5.yaml", digits, lr0, CONFIG)
    assert r.init_lr == lr0 and r.trajectory[0][1] == lr0


def test_fd2_defaults_and_paper_exact_recommendation() -> None:
    t = FD2Tuner()
    assert (t.max_change, t.eval_dtype, t.recommend, t.guard) == (1.1, torch.float64, "best", False)
    exact = FD2Tuner(paper_exact=True)
    assert (exact.recommend, exact.eval_dtype) == ("tail", None)
    with pytest.raises(ValueError, match="Invalid recommend"):
        FD2Tuner(recommend="median")  # type: ignore[arg-type]


def test_recommended_rate_rules() -> None:
    # max_points above the step count: the trajectory holds every step's rate, so both rules
    # can be recomputed from it exactly.
    cfg = replace(CONFIG, max_epochs=3, max_steps_per_epoch=16)
    results = {}
    for rule in ("mean", "tail", "best"):
        t = FD2Tuner(recommend=rule, max_change=2.0)
        t.max_points = 1000
        results[rule] = t.tune(EXAMPLES / "mlp.yaml", data("mnist1d"), 0.01, cfg)
    r = results["mean"]
    rates = [lr for s, lr in r.trajectory if s >= 1]
    assert r.steps == len(rates) == 48 and len(set(rates)) > 3  # the rate moved
    assert r.recommended_lr == pytest.approx(sum(rates) / len(rates), rel=1e-12)
    tail = [lr for s, lr in results["tail"].trajectory if s >= 36]
    assert results["tail"].recommended_lr == pytest.approx(math.exp(sum(map(math.log, tail)) / len(tail)))
    assert results["tail"].trajectory == r.trajectory  # the rule changes the report, not the run
    best = results["best"]
    upto = [lr for s, lr in best.trajectory if 1 <= s <= 16 * best.best_epoch]
    assert best.best_epoch >= 1 and best.recommended_lr == pytest.approx(sum(upto) / len(upto), rel=1e-12)


def test_fd2_inside_the_page_hinkley_guard(tmp_path: Path) -> None:
    mnist = data("mnist1d")
    spec = EXAMPLES / "mlp.yaml"
    cfg = replace(CONFIG, max_epochs=3)
    t = FD2Tuner(guard=True)
    r = t.tune(spec, mnist, 0.05, cfg)
    assert "page_hinkley_triggers" in r.events and r.events["rate_updates"] > 0
    assert all(lr > 0 and math.isfinite(lr) for _, lr in r.trajectory)
    # checkpoint and resume through the wrapper
    calls = [0]

    def crash(step: int, steps_per_epoch: int) -> None:
        calls[0] += 1
        if calls[0] == steps_per_epoch + 2:
            raise RuntimeError("simulated crash")

    ckpt = tmp_path / "run.pt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        FD2Tuner(guard=True).tune(spec, mnist, 0.05, cfg, step_hook=crash, checkpoint_path=ckpt)
    resumed = FD2Tuner(guard=True).tune(spec, mnist, 0.05, cfg, checkpoint_path=ckpt)
    assert resumed.trajectory == r.trajectory and resumed.recommended_lr == r.recommended_lr


def test_which_posterior_can_start_which_tuner() -> None:
    from archscreen.core.screening import AlraoScreener, FixedRateScreener
    from archscreen.core.tuning import posterior_fits_tuner, screening_optimizer

    # the names the screeners really write into a result's ``screener`` field
    assert screening_optimizer(AlraoScreener(base="adam").name) == "adam"
    assert screening_optimizer(AlraoScreener(base="sgd").name) == "sgd"
    for fixed in (FixedRateScreener(lr=0.1), FixedRateScreener(lr=1e-3, optimizer="adam")):
        assert screening_optimizer(fixed.name) is None, fixed.name  # one rate: no posterior to start from
    fd2, ag_adam = get_tuner("fd2"), get_tuner("ag-adam")
    assert posterior_fits_tuner("sgd", fd2) and not posterior_fits_tuner("adam", fd2)
    assert posterior_fits_tuner("adam", ag_adam) and posterior_fits_tuner(None, get_tuner("fd1"))


def test_best_epoch_rule_uses_the_rates_up_to_the_best_epoch() -> None:
    traj = Trajectory.new(100)
    traj.steps_per_epoch = 2
    for lr in (0.1, 0.3, 1.0, 3.0, 10.0, 10.0):  # three epochs; the rate climbs past the useful range
        traj.record(lr)
    assert traj.epoch_sums == pytest.approx([0.4, 4.4, 24.4])
    assert traj.recommended("best", best_epoch=1) == pytest.approx(0.2)
    assert traj.recommended("best", best_epoch=2) == pytest.approx(1.1)
    assert traj.recommended("best", best_epoch=0) == pytest.approx(24.4 / 6)  # no epoch improved
    assert traj.recommended("mean") == pytest.approx(24.4 / 6)


def test_trajectory_reads_a_checkpoint_dict_from_before_the_class() -> None:
    """The trajectory is a plain dict in optimizer state: an old checkpoint's dict still reads."""
    old = {"points": [[0, 0.1], [1, 0.2], [2, 0.4]], "stride": 1, "max_points": 8, "step": 2}  # no lr_sum
    t = Trajectory(old)
    assert t.run_mean() == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    t.record(0.8)
    assert t.steps == 3 and t.points[-1] == [3, 0.8]


def test_tuning_results_serialise_as_before_the_shared_base() -> None:
    r = tune(EXAMPLES / "mlp.yaml", data("mnist1d"), 0.01, CONFIG)
    before = [
        "tuner", "spec_name", "spec_hash", "dataset", "task", "seed", "init_lr", "recommended_lr",
        "final_lr", "trajectory", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "val_bpc",
        "test_bpc", "val_mse", "test_mse", "epochs", "best_epoch", "steps", "seconds", "stopped_because",
        "paper_exact", "base_optimizer", "recommended_by", "events", "curves",
    ]  # fmt: skip
    # fields added since (e.g. ScreenResult.estimate) come after the old ones
    assert list(r.to_dict())[: len(before)] == before
    # the class-balanced metrics a tuned answer is chosen and reported by (store/ranking.py)
    assert r.val_balanced_accuracy is not None and r.to_dict()["test_macro_f1"] == r.test_macro_f1 is not None
