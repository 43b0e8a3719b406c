"""Contract suite every tuner passes on every example spec, plus start-from-screening."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.spec import SpecError
from archscreen.core.training.loop import Progress, TrainConfig, TrainingCancelled
from archscreen.core.tuning import TUNERS, FD2Tuner, get_tuner, initial_lr_from_screen, tune
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


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("name", sorted(TUNERS))
def test_every_tuner_on_every_example(name: str, example: Path) -> None:
    init = 1e-3 if name == "ag-adam" else 0.01
    r = tune(example, data(example_dataset(example)), init, CONFIG, tuner=name)
    assert r.tuner == name and r.stopped_because == "max_epochs" and r.steps == 3
    assert r.trajectory[0] == [0, pytest.approx(init, rel=1e-9)] and len(r.trajectory) == 4
    assert all(lr > 0 and math.isfinite(lr) for _, lr in r.trajectory)
    assert r.recommended_lr > 0 and math.isfinite(r.recommended_lr)
    assert math.isfinite(r.val_loss) and len(r.curves) == 1
    d = r.to_dict()
    for key in ("recommended_lr", "trajectory", "val_loss", "test_accuracy", "stopped_because"):
        assert key in d


@pytest.mark.parametrize("name", sorted(TUNERS))
def test_deterministic_and_cancellable(name: str) -> None:
    digits = data("digits")
    spec = EXAMPLES / "lenet5.yaml"
    a = tune(spec, digits, None, CONFIG, tuner=name)
    b = tune(spec, digits, None, CONFIG, tuner=name)
    assert a.trajectory == b.trajectory and a.val_loss == b.val_loss

    def cancel(p: Progress) -> None:
        assert "lr" in p.extra
        raise TrainingCancelled

    c = tune(spec, digits, None, replace(CONFIG, max_epochs=3), callback=cancel, tuner=name)
    assert c.stopped_because == "cancelled" and c.epochs == 1


@pytest.mark.parametrize("name", ["fd2", "salera"])
def test_checkpoint_resume_is_identical(name: str, tmp_path: Path) -> None:
    mnist = data("mnist1d")
    spec = EXAMPLES / "mlp.yaml"
    cfg = replace(CONFIG, max_epochs=3)
    full = tune(spec, mnist, 0.05, cfg, tuner=name)
    ckpt = tmp_path / "run.pt"

    calls = [0]

    def crash_in_epoch_two(step: int, steps_per_epoch: int) -> None:
        calls[0] += 1
        if calls[0] == steps_per_epoch + 2:  # after epoch 1's checkpoint was written
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        get_tuner(name).tune(spec, mnist, 0.05, cfg, step_hook=crash_in_epoch_two, checkpoint_path=ckpt)
    assert ckpt.exists()
    resumed = tune(spec, mnist, 0.05, cfg, tuner=name, checkpoint_path=ckpt)
    assert resumed.trajectory == full.trajectory
    assert resumed.val_loss == full.val_loss and resumed.recommended_lr == full.recommended_lr


def test_invalid_spec_fails_before_training() -> None:
    bad = {"name": "bad", "layers": [{"conv2d": {"out": 4, "kernel": 9}}, "flatten"], "head": "classifier"}
    calls: list[Progress] = []
    with pytest.raises(SpecError, match=r"layers\[0\]\.conv2d"):
        tune(bad, data("digits"), 0.01, CONFIG, callback=calls.append)
    assert calls == []


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
    from archscreen.core.tuning import _new_trajectory, _recommended, _record

    traj = _new_trajectory(100)
    traj["steps_per_epoch"] = 2
    for lr in (0.1, 0.3, 1.0, 3.0, 10.0, 10.0):  # three epochs; the rate climbs past the useful range
        _record(traj, lr)
    assert traj["epoch_sums"] == pytest.approx([0.4, 4.4, 24.4])
    assert _recommended(traj, "best", best_epoch=1) == pytest.approx(0.2)
    assert _recommended(traj, "best", best_epoch=2) == pytest.approx(1.1)
    assert _recommended(traj, "best", best_epoch=0) == pytest.approx(24.4 / 6)  # no epoch improved
    assert _recommended(traj, "mean") == pytest.approx(24.4 / 6)
