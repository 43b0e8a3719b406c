"""Fidelity study II (``bench/fidelity.py --heldout``): the split, the new suites, the cache format."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fidelity  # noqa: E402
from fidelity_suites import BUDGETS, FULL_SUITES, HELDOUT_SUITES, SPLIT_SEED, split_of  # noqa: E402

from archscreen.core.data import load_dataset  # noqa: E402
from archscreen.core.spec import parse_spec, validate_spec  # noqa: E402


def test_split_is_a_fixed_hash_with_both_halves_on_every_dataset() -> None:
    assert SPLIT_SEED == 17
    pairs = [(ds, a) for ds, suite in FULL_SUITES.items() for a in suite]
    first = [split_of(ds, a) for ds, a in pairs]
    assert first == [split_of(ds, a) for ds, a in pairs]  # deterministic
    for ds in FULL_SUITES:
        halves = {split_of(ds, a) for a in FULL_SUITES[ds]}
        assert halves == {"selection", "report"}
    # pinned: a change of the hash or the seed would silently move architectures between halves
    assert split_of("digits", "lenet5") == "selection" and split_of("digits", "logreg") == "report"
    assert sum(h == "report" for h in first) == 19


def test_new_architectures_meet_the_issue_and_fit_their_datasets() -> None:
    new = [(ds, a) for ds, suite in HELDOUT_SUITES.items() for a in suite]
    assert len(new) >= 12 and len(HELDOUT_SUITES) >= 3
    assert "regression" in HELDOUT_SUITES and "regression" in BUDGETS
    transformers = [a for a in HELDOUT_SUITES["chartext"] if "transformer" in a]
    assert len(transformers) >= 2
    names = {a for ds, a in new}
    assert {"h-mlp-wide-shallow", "h-mlp-deep-narrow"} <= names
    assert any("sigmoid" in a for a in names) and any("tanh" in a for a in names)
    for ds, a in new:
        assert a not in FULL_SUITES.get(ds, {})  # never a name the first study used
        assert fidelity.pool_of(ds, a) == "new"
        body = HELDOUT_SUITES[ds][a]
        validate_spec(parse_spec(fidelity.spec_for(a, body, ds)), load_dataset(ds).info)


def test_heldout_plan_trains_each_switch_on_its_half_only() -> None:
    suites, dropped = fidelity.heldout_suites(None)
    assert dropped == []
    runs = fidelity.plan_heldout(suites, lambda ds: [0.01, 0.1], 2, 2)
    by_label: dict[str, set[str]] = {}
    for r in runs:
        by_label.setdefault(r.label, set()).add(fidelity.pool_of(r.dataset, r.arch))
    assert by_label["grid-sgd@0.1"] == {"new"} and by_label[fidelity.DEFAULT_SCREENER] == {"new"}
    assert by_label["adam@1e-3+2x"] == {"new", "report"}
    # every switch that is reported runs on all three pools; the settings that were not chosen on
    # the selection half run there only
    for label in (
        "alrao-adam[1e-4..0.1]+body[1e-3..0.1]",
        "alrao-adam[1e-4..0.1]+recentre@5",
        "alrao-adam[1e-4..0.1]+recentre@10",
    ):
        assert by_label[label] == {"new", "selection", "report"}, label
    assert by_label["alrao-adam[1e-4..0.1]+curve"] == {"new", "selection", "report"}
    assert by_label["alrao-adam[1e-4..0.1]+recentre@5w2"] == {"selection"}
    for label in fidelity.CURVE_PARTS:
        want = {"new", "selection", "report"} if label.endswith("cap1") else {"new", "selection"}
        assert by_label[label] == want, label
    assert by_label["alrao-adam[1e-4..0.1]+curvelog"] == {"selection"}
    assert {r.dataset for r in runs if r.label == "alrao-adam"} == {"regression"}  # its product range
    assert len({r.key for r in runs}) == len(runs)


def test_variant_budgets_double_what_they_say() -> None:
    base = dict(BUDGETS["mnist1d"])
    two = fidelity.VARIANT_BUDGET["adam@1e-3+2x"](base)
    assert (two["max_epochs"], two["patience"]) == (2 * base["max_epochs"], 2 * base["patience"])
    curve = fidelity.VARIANT_BUDGET["alrao-adam[1e-4..0.1]+curve"](base)
    assert curve["stop_rule"] == "plateau" and curve["max_epochs"] == 2 * base["max_epochs"]
    assert curve["patience"] == base["patience"]
    # each part of the curve-aware budget alone: one thing differs from the whole rule
    whole = dict(curve)
    smooth = fidelity.VARIANT_BUDGET["alrao-adam[1e-4..0.1]+curve-smooth-only"](base)
    assert smooth == {**whole, "plateau_min_steps": 0, "plateau_min_epochs": 0}
    floor = fidelity.VARIANT_BUDGET["alrao-adam[1e-4..0.1]+curve-floor-only"](base)
    assert floor == {**whole, "plateau_ema": 1.0, "plateau_tol": 0.0}
    cap1 = fidelity.VARIANT_BUDGET["alrao-adam[1e-4..0.1]+curve-cap1"](base)
    assert cap1 == {**whole, "max_epochs": base["max_epochs"]}


def test_a_new_run_writes_format_2_with_its_curve() -> None:
    run = fidelity.Run("regression", "h-mlp-wide-shallow", fidelity.DEFAULT_SCREENER, 0)
    body = HELDOUT_SUITES["regression"]["h-mlp-wide-shallow"]
    row = fidelity.run_one(run, body, {"max_epochs": 3, "patience": 3, "max_steps_per_epoch": 4})
    assert "error" not in row, row.get("error")
    assert row["format"] == fidelity.FORMAT_VERSION == 2
    assert row["curve"]["steps"] == [4, 8, 12]
    assert len(row["curve"]["val_loss"]) == 3 and all(v > 0 for v in row["curve"]["val_score"])  # MSE
    assert fidelity.test_score(row, "regression") == row["test_mse"]
    json.dumps(row)  # a cache line


def _line(arch: str, label: str, budget: dict[str, int], **extra: Any) -> str:
    row = {"dataset": "digits", "arch": arch, "screener": label, "seed": 0, "val_loss": 1.0, "budget": budget}
    return json.dumps({**row, **extra})


def test_load_rows_reads_both_formats_and_drops_other_budgets(tmp_path: Path) -> None:
    budget = dict(BUDGETS["digits"])
    new, old = tmp_path / "ii.jsonl", tmp_path / "i.jsonl"
    new.write_text(_line("a", "x", budget, format=2, curve={"steps": [1]}) + "\n")
    old.write_text(
        _line("a", "x", budget)
        + "\n"  # the same key: the first cache wins
        + _line("b", "x", budget)
        + "\n"
        + _line("c", "x", {**budget, "max_epochs": 1})
        + "\n"  # another budget: stale
    )
    rows = fidelity.load_rows([new, old, tmp_path / "missing.jsonl"], {"digits": budget})
    assert [(r["arch"], r["format"]) for r in rows] == [("a", 2), ("b", 1)]


def test_extrapolated_test_score_moves_by_the_curves_gain() -> None:
    # validation accuracy still rising as a power law towards 0.9; test score at the best epoch 70 %
    steps = [10 * (i + 1) for i in range(20)]
    val = [0.9 - 0.2 * (s / steps[-1]) ** -0.7 for s in steps]
    row = {"curve": {"steps": steps, "val_score": val, "val_loss": [1.0] * 20}, "test_accuracy": 0.70}
    best = fidelity.extrapolated_test(row, "digits", "best-observed", None, 400)
    assert best is not None and best[0] == pytest.approx(70.0)
    est = fidelity.extrapolated_test(row, "digits", "power-law", None, 400)
    assert est is not None
    assert est[0] == pytest.approx(70.0 + 100 * (0.9 - val[-1]), abs=0.5)
    assert est[1] <= est[0] <= est[2]
    assert fidelity.extrapolated_test({"test_accuracy": 0.5}, "digits", "auto", None, 1) is None  # format 1


def test_regression_and_bpc_are_lower_is_better() -> None:
    for ds in ("regression", "chartext"):
        assert fidelity.better(ds)(1.0, 2.0) == pytest.approx(1.0)
    assert fidelity.better("digits")(1.0, 2.0) == pytest.approx(-1.0)
    assert math.isinf(fidelity.test_score({"test_mse": None}, "regression"))


def test_recentre_labels_pin_their_warm_up_and_width() -> None:
    from archscreen.core.screening import AlraoScreener

    for label, (after, width) in {
        "alrao-adam[1e-4..0.1]+recentre@5": (5, 1.0),
        "alrao-adam[1e-4..0.1]+recentre@10": (10, 1.0),
        "alrao-adam[1e-4..0.1]+recentre@5w2": (5, 2.0),
    }.items():
        screener = fidelity.VARIANTS[label]()
        assert isinstance(screener, AlraoScreener)
        assert (screener.recentre_after, screener.recentre_width) == (after, width)
        assert screener.settings("classification")[:2] == (1e-4, 0.1)
    assert AlraoScreener().recentre_after is None  # the paper's behaviour stays the default


def _cal_row(arch: str, seed: int, acc: float) -> dict[str, Any]:
    return {"dataset": "digits", "arch": arch, "screener": "d", "seed": seed, "test_accuracy": acc / 100}


def test_calibration_fits_on_the_selection_half_and_scores_the_other() -> None:
    # Selection: 19 runs whose error rate is 4 % while the best rate's is 2 % (log ratio -0.693),
    # and one whose best-rate error is the same as observed (residual 0).
    sel_archs = [f"s{i}" for i in range(20)]
    rows = {("digits", a, "d", 0): _cal_row(a, 0, 96.0) for a in sel_archs}
    truths_sel = {"digits": {"test": {a: 98.0 for a in sel_archs[:19]} | {"s19": 96.0}}}
    # Evaluation: one net observed at 90 % (error 10 -> corrected 5, i.e. 95 %), truth 95 %.
    rows[("digits", "e0", "d", 0)] = _cal_row("e0", 0, 90.0)
    truths_eval = {"digits": {"test": {"e0": 95.0}}}
    cal = fidelity.calibration_table(
        rows, truths_sel, truths_eval, {"digits": sel_archs}, {"digits": ["e0"]}, "d", 1
    )
    fit = cal["fits"]["classification"]
    assert fit["n"] == 20
    assert fit["median"] == pytest.approx(math.log(0.5))
    # split conformal, n = 20: the 5 % and 95 % order statistics are ranks 1 and 20
    assert fit["low"] == pytest.approx(math.log(0.5)) and fit["high"] == pytest.approx(0.0)
    m = cal["datasets"]["digits"]
    assert m["raw"] == pytest.approx(5.0) and m["corrected"] == pytest.approx(0.0, abs=1e-9)
    assert m["coverage"] == 1.0 and m["width"] == pytest.approx(5.0)
    # no selection-half run of a family: nothing is fitted for it, nothing is scored
    reg = fidelity.calibration_table(
        rows,
        truths_sel,
        {"regression": {"test": {"r": 0.1}}},
        {"digits": sel_archs},
        {"regression": ["r"]},
        "d",
        1,
    )
    assert "regression" not in reg["fits"] and reg["datasets"] == {}
