"""The fidelity study's suites, yardsticks and scoring (``bench/fidelity*.py``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
import schedulefree
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fidelity  # noqa: E402
from fidelity_screeners import _ParamsAtXBetweenSteps  # noqa: E402
from fidelity_suites import FULL_SUITES, QUICK_SUITE  # noqa: E402

from archscreen.core.data import load_dataset  # noqa: E402
from archscreen.core.spec import parse_spec, validate_spec  # noqa: E402


def test_every_suite_architecture_fits_its_dataset() -> None:
    for dataset, suite in {**FULL_SUITES, "quick": QUICK_SUITE}.items():
        info = load_dataset("mnist1d" if dataset == "quick" else dataset).info
        for arch, body in suite.items():
            validate_spec(parse_spec(fidelity.spec_for(arch, body)), info)


def test_full_suite_spans_what_the_study_promises() -> None:
    assert set(FULL_SUITES) == {"mnist1d", "digits", "chartext"}
    assert len({a for suite in FULL_SUITES.values() for a in suite}) >= 16
    widths = set()
    for suite in FULL_SUITES.values():
        for body in suite.values():
            for layer in body["layers"]:
                if isinstance(layer, dict) and ({"lstm", "gru"} & set(layer)):
                    widths.add(next(iter(layer.values()))["hidden"])
    assert min(widths) == 8 and max(widths) == 128


def test_schedule_free_wrapper_leaves_the_averaged_weights_between_steps() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    wrapped = _ParamsAtXBetweenSteps(schedulefree.AdamWScheduleFree(model.parameters(), lr=0.1))
    reference = schedulefree.AdamWScheduleFree(twin.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    for _ in range(3):
        wrapped.zero_grad()
        model(x).pow(2).sum().backward()
        wrapped.step()
        reference.train()
        reference.zero_grad()
        twin(x).pow(2).sum().backward()
        reference.step()
        reference.eval()  # x: what an evaluation must see
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    wrapped.zero_grad()  # before a forward pass the weights are y, not x
    assert not torch.equal(model.weight, twin.weight)


def _row(arch: str, label: str, seed: int, val: float, acc: float, steps: int = 10) -> dict[str, Any]:
    return {
        "dataset": "digits",
        "arch": arch,
        "screener": label,
        "seed": seed,
        "val_loss": val,
        "test_accuracy": acc,
        "steps": steps,
        "seconds": 1.0,
        "stopped_because": "patience",
        "preferred_lr": None,
    }


def test_scores_against_a_known_truth() -> None:
    # Truth: a < b < c < d by validation loss, best rate 0.1 for all; accuracies 90, 80, 70, 60.
    archs = ["a", "b", "c", "d"]
    lrs = [0.01, 0.1]
    rows = []
    for i, a in enumerate(archs):
        for s in range(2):
            rows.append(_row(a, "grid-sgd@0.1", s, 1.0 + i, 0.9 - 0.1 * i))
            rows.append(_row(a, "grid-sgd@0.01", s, 5.0 + i, 0.1))
        rows.append(_row(a, "good", 0, 2.0 + i, 0.85 - 0.1 * i, steps=5))  # same order, 5 points low
        rows.append(_row(a, "reversed", 0, 9.0 - i, 0.9 - 0.1 * i))
    suites = {"digits": {a: {} for a in archs}}
    result = fidelity.analyse(rows, suites, lambda ds: lrs, 2, ["grid-sgd"], ["good", "reversed"], 1)
    cell = result["digits/grid-sgd"]
    assert cell["truth"]["lr"] == dict.fromkeys(archs, 0.1)
    assert cell["truth"]["noise_ceiling"] == pytest.approx(1.0)
    good, rev = cell["screeners"]["good"], cell["screeners"]["reversed"]
    assert good["spearman"] == pytest.approx(1.0) and rev["spearman"] == pytest.approx(-1.0)
    assert good["top1_regret"] == pytest.approx(0.0)
    assert rev["top1_regret"] == pytest.approx(30.0)  # picked d (60 %) instead of a (90 %)
    assert rev["top3_regret"] == pytest.approx(10.0)  # its top 3 (d, c, b) holds b (80 %)
    assert good["estimate_error"] == pytest.approx(5.0)
    assert good["compute_ratio"] == pytest.approx(4 * 4 * 10 / (4 * 5))
    assert math.isclose(fidelity.headline(result, "good", "grid-sgd") or 0, 1.0)
    assert fidelity.headline(result, "good") is None  # no Adam grid, so no best-of-both truth
    markdown = fidelity.report(result, rows)
    assert "| reversed | -1.000 |" in "\n".join(markdown)


@pytest.mark.parametrize(
    "label",
    [
        "schedulefree-adamw",
        "prodigy",
        "dadapt-sgd",
        "short-adam@0.001",
        "zero-cost",
        "lr-find-sgd",
        "alrao-adam",
    ],
)
def test_every_yardstick_runs_without_error(label: str) -> None:
    run = fidelity.Run("digits", "cnn-bn", label, 0)
    row = fidelity.run_one(
        run, FULL_SUITES["digits"]["cnn-bn"], {"max_epochs": 1, "patience": 1, "max_steps_per_epoch": 3}
    )
    assert "error" not in row, row.get("error")
    if label == "zero-cost":
        assert math.isfinite(row["synflow"]) and math.isfinite(row["grad_norm"])
    elif label.startswith("lr-find"):
        assert row["preferred_lr"] is not None and 1e-7 < row["preferred_lr"] < 10
    else:
        assert math.isfinite(row["val_loss"]) and row["steps"] == 3


def test_the_study_default_is_what_the_service_runs() -> None:
    from archscreen.api.schemas import ScreeningConfig
    from archscreen.core.screening import AlraoScreener

    studied = fidelity.VARIANTS[fidelity.DEFAULT_SCREENER]()
    product = AlraoScreener()
    assert isinstance(studied, AlraoScreener)
    assert studied.base == product.base == ScreeningConfig().base
    for task in ("classification", "language_model"):
        assert studied.settings(task) == product.settings(task)


def test_trained_labels_pin_their_settings() -> None:
    # A label names fixed settings: cached runs must not change meaning when a default moves.
    from archscreen.core.screening import AlraoScreener

    assert fidelity.TRAINED["alrao-sgd"]().settings("classification") == (1e-5, 10.0, 10)  # type: ignore[attr-defined]
    assert fidelity.TRAINED["alrao-adam"]().settings("classification") == (1e-5, 0.1, 10)  # type: ignore[attr-defined]
    for label, factory in {**fidelity.TRAINED, **fidelity.VARIANTS}.items():
        screener = factory()
        if isinstance(screener, AlraoScreener):
            assert label.startswith(f"alrao-{screener.base}")
        else:
            assert not label.startswith("alrao")


def test_best_of_both_takes_each_architectures_better_search() -> None:
    archs = ["a", "b"]
    rows = []
    for s in range(2):
        rows += [_row("a", "grid-sgd@0.1", s, 1.0, 0.9), _row("b", "grid-sgd@0.1", s, 2.0, 0.7)]
        rows += [_row("a", "grid-adam@0.001", s, 1.5, 0.8), _row("b", "grid-adam@0.001", s, 0.5, 0.95)]
    rows += [_row("a", "s", 0, 1.0, 0.9), _row("b", "s", 0, 0.9, 0.9)]
    result = fidelity.analyse(
        rows,
        {"digits": {a: {} for a in archs}},
        lambda ds: [0.1],
        2,
        ["grid-sgd", "grid-adam"],
        ["s"],
        1,
        adam_lrs_for=lambda ds: [0.001],
    )
    both = result["digits/best-of-both"]
    assert both["truth"]["winner"] == {"a": "sgd", "b": "adam"}
    assert both["truth"]["val"] == {"a": 1.0, "b": 0.5} and both["truth"]["test"] == {"a": 90.0, "b": 95.0}
    assert both["truth"]["steps"] == {"a": 40, "b": 40}  # both searches' compute
    assert result["digits/grid-sgd"]["screeners"]["s"]["spearman"] == pytest.approx(-1.0)
    assert both["screeners"]["s"]["spearman"] == pytest.approx(1.0)
    assert fidelity.headline(result, "s") == pytest.approx(1.0)
