"""The tuning stage's options (core/tuners/stage.py): the screen-weights start, the width rule,
successive halving over starts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.screening import AlraoScreener
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import TrainConfig
from archscreen.core.training.model import build_plain_model
from archscreen.core.tuners.stage import (
    chosen_copy,
    halving_min_epochs,
    plain_state_from_alrao,
    posterior_width_decades,
    screening_weights,
    starts_for_width,
    tune_with_halving,
)
from archscreen.core.tuning import get_tuner

SPEC = {"name": "mlp", "head": "classifier", "layers": ["flatten", {"linear": 16}, "relu"]}


def _small(name: str = "digits") -> DatasetSplits:
    d = load_dataset(name, seed=0)
    return DatasetSplits(
        d.info, d.x_train[:256], d.y_train[:256], d.x_val[:64], d.y_val[:64], d.x_test[:64], d.y_test[:64]
    )


def _posterior(weights: list[float], lo: float = 1e-4, hi: float = 0.1) -> list[dict[str, float]]:
    n = len(weights)
    return [{"lr": lo * (hi / lo) ** (j / (n - 1)), "weight": w} for j, w in enumerate(weights)]


# ------------------------------------------------------------------ screen-weights start


@pytest.mark.parametrize("copy", [0, 4, 9])
def test_plain_model_from_alrao_equals_the_chosen_copy_in_float64(copy: int) -> None:
    data = _small()
    arch = parse_spec(SPEC)
    torch.manual_seed(3)
    alrao, _ = AlraoScreener().build(arch, data)
    with torch.no_grad():  # make the copies differ from any fresh initialisation
        for p in alrao.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    alrao = alrao.double()
    plain = build_plain_model(arch, data.info).double()
    plain.load_state_dict(plain_state_from_alrao(alrao.state_dict(), copy), strict=True)
    x = data.x_val.double()
    with torch.no_grad():
        z = alrao.body(x)
        want = alrao.head.copy_logits(z)[:, copy]
        got = plain.head.linear(plain.body(x))
    # equal up to float64 rounding: the copies' batched product and nn.Linear may take different
    # BLAS kernels (bitwise equal on one machine, last bits apart on another)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    other = (copy + 1) % 10
    assert (got - alrao.head.copy_logits(z)[:, other]).abs().max() > 1e-3


def test_chosen_copy_is_the_heaviest_and_the_first_on_a_tie() -> None:
    assert chosen_copy(_posterior([0.1, 0.5, 0.2, 0.2])) == 1
    assert chosen_copy(_posterior([0.4, 0.1, 0.4, 0.1])) == 0
    assert chosen_copy({"switch_posterior": _posterior([0, 0, 1.0])}) == 2
    with pytest.raises(ValueError, match="no Switch posterior"):
        chosen_copy({"preferred_lr": 0.01})


def test_plain_state_refuses_a_non_alrao_state_and_a_bad_copy() -> None:
    with pytest.raises(ValueError, match="not an Alrao"):
        plain_state_from_alrao({"body.0.weight": torch.zeros(1)}, 0)
    with pytest.raises(ValueError, match="out of range"):
        plain_state_from_alrao({"head.weight": torch.zeros(3, 2, 2), "head.bias": torch.zeros(3, 2)}, 3)


def test_a_tuning_run_starts_from_a_screening_checkpoints_weights(tmp_path: Path) -> None:
    """A real screening's best weights go into the tuner's plain model: the tuned run's first
    epoch starts from them (its first-epoch validation loss is far from a fresh start's)."""
    data = _small()
    config = TrainConfig(max_epochs=6, patience=10, batch_size=32, seed=0)
    ckpt = tmp_path / "screen.pt"
    res = AlraoScreener().screen(SPEC, data, config, checkpoint_path=ckpt)
    weights = screening_weights(ckpt)
    assert "head.weight" in weights  # the Alrao model's copies
    state = plain_state_from_alrao(weights, chosen_copy(res))
    one = TrainConfig(max_epochs=1, patience=10, batch_size=32, seed=0)
    tuner = get_tuner("fd2-adam")
    warm = tuner.tune(SPEC, data, 1e-3, one, init_state=state)
    cold = tuner.tune(SPEC, data, 1e-3, one)
    assert warm.curves[0]["val_loss"] < cold.curves[0]["val_loss"] - 0.3
    with pytest.raises(RuntimeError, match="Missing key"):
        tuner.tune(SPEC, data, 1e-3, one, init_state={"head.linear.weight": state["head.linear.weight"]})


# ------------------------------------------------------------------ posterior-width starts


def test_width_rule_one_start_within_a_third_of_a_decade() -> None:
    # 10 copies over 3 decades: one copy's spacing is 1/3 decade
    one_copy = _posterior([0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0])
    assert posterior_width_decades(one_copy) == pytest.approx(1 / 6)
    assert starts_for_width(one_copy) == 1
    two = _posterior([0, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0])  # quartiles at the two cells' middles
    assert posterior_width_decades(two) == pytest.approx(1 / 3)
    assert starts_for_width(two) == 1  # within a third of a decade, inclusive
    three = _posterior([0, 0, 0, 0.25, 0.25, 0.25, 0.25, 0, 0, 0])
    assert posterior_width_decades(three) == pytest.approx(2 / 3)
    assert starts_for_width(three) == 2
    flat = _posterior([0.1] * 10)
    assert posterior_width_decades(flat) == pytest.approx(10 / 3 / 2)
    assert starts_for_width(flat) == 3
    assert starts_for_width(flat, max_starts=2) == 2
    assert starts_for_width({"preferred_lr": 0.01}) == 1


# ------------------------------------------------------------------ halving over starts


@pytest.mark.parametrize(
    ("max_epochs", "starts", "eta", "first"),
    [(60, 3, 3, 20), (30, 3, 3, 10), (4, 3, 3, 1), (60, 1, 3, 60), (60, 9, 3, 6), (30, 2, 2, 15)],
)
def test_first_rung(max_epochs: int, starts: int, eta: int, first: int) -> None:
    assert halving_min_epochs(max_epochs, starts, eta) == first


def test_halving_trains_the_best_start_to_the_cap_exactly_as_a_straight_run(tmp_path: Path) -> None:
    data = _small()
    config = TrainConfig(max_epochs=3, patience=10, batch_size=32, seed=1)
    tuner = get_tuner("fd2-adam")
    rates = [1e-3, 1e-4, 3e-2]
    out = tune_with_halving(tuner, SPEC, data, rates, config, tmp_path, eta=3)
    assert out.rungs == [1, 3]
    assert sorted(r.epochs for r in out.runs) == [1, 1, 3]
    leader = next(i for i, r in enumerate(out.runs) if r.epochs == 3)
    first_rung = [v[0] for v in out.values]
    assert first_rung[leader] == min(v for v in first_rung if v is not None)  # the best continued
    straight = tuner.tune(SPEC, data, rates[leader], config)
    assert out.best.val_loss == straight.val_loss  # resumed from its rung checkpoint, exactly
    assert out.best.test_accuracy == straight.test_accuracy
    assert out.best.steps == straight.steps
    again = tune_with_halving(tuner, SPEC, data, rates, config, tmp_path, eta=3)  # resume: no retraining
    assert again.best.val_loss == out.best.val_loss and again.values == out.values
    assert math.isfinite(out.best.val_loss)
