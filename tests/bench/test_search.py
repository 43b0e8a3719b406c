"""bench/search.py: the delivered model read off a trace, the archscreen pipeline's fork (ASHA's
rungs, the budget's finish), and ``--quick`` end to end (every method, two budgets, the report)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import search  # noqa: E402


def _t(cpu: float, val: float, test: float, complete: bool = True) -> dict:
    return {
        "cpu": cpu,
        "complete": complete,
        "val_loss": val,
        "test": test,
        "epochs": 3,
        "lr": 1e-3,
        "params": {},
    }


def test_delivered_is_the_best_complete_trial_ended_within_the_budget() -> None:
    trace = [_t(1.0, 0.5, 0.80), _t(2.0, 0.1, 0.70, complete=False), _t(3.0, 0.3, 0.90), _t(5.0, 0.2, 0.95)]
    assert search.delivered_from_trace(trace, 0.5) is None  # nothing ended yet
    at_4 = search.delivered_from_trace(trace, 4.0)
    assert at_4 is not None and at_4["test"] == 0.90 and at_4["trials"] == 3  # the pruned 0.1 is not a model
    at_9 = search.delivered_from_trace(trace, 9.0)
    assert at_9 is not None and at_9["test"] == 0.95 and at_9["spent"] == 5.0


def test_headline_pairs_seeds_and_reads_budget_b() -> None:
    rows = [
        {
            "kind": "run",
            "cell": "digits-mlp",
            "method": "archscreen",
            "seed": 0,
            "delivered": {"1": {"test": 0.95}},
        },
        {
            "kind": "run",
            "cell": "digits-mlp",
            "method": "optuna-hyperband",
            "seed": 0,
            "delivered": {"1": {"test": 0.90}},
        },
        {
            "kind": "run",
            "cell": "digits-mlp",
            "method": "archscreen",
            "seed": 1,
            "delivered": {"1": {"test": 0.10}},
        },
    ]
    # rows written before variants are the first variant's; seed 1 has no Optuna run: left out
    assert search.headline(rows, search.FIRST_VARIANT) == pytest.approx(5.0)


def _run(
    method: str, seed: int, test: float, variant: str | None = None, mults: list[int] | None = None
) -> dict:
    row = {
        "kind": "run",
        "cell": "digits-mlp",
        "method": method,
        "seed": seed,
        "mults": mults or [1],
        "delivered": {str(m): {"test": test, "spent": 1.0, "params": {"depth": seed}} for m in mults or [1]},
    }
    return row if variant is None else {**row, "variant": variant}


def test_reports_read_one_archscreen_variant_and_the_last_row_of_each_run() -> None:
    rows = [
        _run("archscreen", 0, 0.90),  # written before variants: the first variant's settings
        _run("archscreen", 0, 0.99, variant="r3-screen"),
        _run("optuna-hyperband", 0, 0.95),
        _run("optuna-hyperband", 0, 0.96, mults=[1, 3]),  # a rerun to a larger budget replaces it
    ]
    assert search.headline(rows, search.FIRST_VARIANT) == pytest.approx(-6.0)
    assert search.headline(rows, "r3-screen") == pytest.approx(3.0)
    cells = [search.CELLS["digits-mlp"]]
    # an archscreen row counts as done for its own variant only; Optuna's rows for every variant
    assert search.plan(cells, ["archscreen", "optuna-hyperband"], [0], rows, "r9-screen") == [
        ("digits-mlp", "archscreen", 0)
    ]
    assert search.plan(cells, ["archscreen", "optuna-hyperband"], [0], rows, "r3-screen") == []
    # a row whose largest budget is below the one asked now runs again
    assert search.plan(cells, ["archscreen"], [0], rows, "r3-screen", mults=[1, 3]) == [
        ("digits-mlp", "archscreen", 0)
    ]


def test_the_variant_rule_takes_the_best_pooled_mean_and_the_lower_rung_on_a_tie() -> None:
    rows = [
        _run("archscreen", 100, 0.970, variant="r1-screen"),
        _run("archscreen", 100, 0.980, variant="r3-screen"),
        _run("archscreen", 100, 0.9805, variant="r9-screen"),  # within 0.1 points: the lower rung wins
        _run("archscreen", 0, 0.999, variant="r1-screen"),  # not a selection seed
    ]
    table, chosen = search.variants_table(rows, [100])
    assert chosen == "r3-screen" and "| r9-screen | 98.05 | 98.05 |" in table
    rows.append(_run("archscreen", 100, 0.990, variant="r9-screen"))  # the last row counts
    assert search.variants_table(rows, [100])[1] == "r9-screen"


def test_reach_compares_archscreen_at_3b_with_optuna_at_9b() -> None:
    rows = [_run("archscreen", 0, 0.98, variant=search.DEFAULT_VARIANT, mults=[1, 3, 9]),
            _run("optuna-hyperband", 0, 0.97, mults=[1, 3, 9])]  # fmt: skip
    lines = search.reach_lines(rows)
    assert "- digits-mlp: archscreen at 3B 98.00 ± 0.00 against Optuna + Hyperband at 9B 97.00" in lines[0]
    assert lines[0].endswith("**met**") and lines[1] == "- table-mlp: not run to 9B"
    rows.append(_run("optuna-hyperband", 0, 0.99, mults=[1, 3, 9]))
    assert search.reach_lines(rows)[0].endswith("**missed**")


def test_top_points_are_distinct_and_name_who_found_them() -> None:
    rows = [_run("archscreen", 0, 0.97), _run("random", 0, 0.98), _run("optuna-hyperband", 1, 0.99)]
    top = search.top_points(rows, "digits-mlp", k=2)
    assert [t["test"] for t in top] == [0.99, 0.98]  # seed 0's point: random's score, both methods
    assert top[1]["found_by"] == ["archscreen", "random"] and top[1]["params"] == {"depth": 0}


@pytest.mark.slow
def test_quick_runs_every_method_at_two_budgets(tmp_path: Path) -> None:
    results = tmp_path / "search.jsonl"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "search.py"), "--quick", "--jobs", "1", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("search_vs_optuna: ") and math.isfinite(float(last.split(": ")[1]))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    b = next(r for r in rows if r["kind"] == "calibration")["B"]
    runs = {r["method"]: r for r in rows if r["kind"] == "run"}
    assert set(runs) == set(search.METHODS)
    for method, run in runs.items():
        assert set(run["delivered"]) == {"1", "3"}, method
        for mult, d in run["delivered"].items():
            assert d is not None and 0.0 <= d["test"] <= 1.0, (method, mult)
            # the Optuna methods stop at the budget; archscreen's search part stops once its spent CPU
            # plus the finish's estimate reach it (one job may cross it), then the finish is added
            search_part = d["spent"] - d.get("finish_cpu", 0.0)
            assert search_part <= 1.5 * int(mult) * b, (method, mult, d)
    fork = runs["archscreen"]["delivered"]["3"]
    rungs = {int(e): n for e, n in fork["rungs"].items()}
    # successive halving: some runs stopped at the first rung, some trained on to the cap
    assert rungs.get(1, 0) >= 1 and rungs.get(3, 0) >= 1, rungs
    assert fork["starts"] >= 1 and fork["trials"] >= 2
    # the learning-rate grid check of the top points any method delivered
    grid = tmp_path / "grid.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "search.py"),
            "--grid-check",
            "--cells",
            "digits-mlp",
            "--max-epochs",
            "3",
            "--jobs",
            "1",
            "--results",
            str(results),
            "--grid-results",
            str(grid),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    checked = [json.loads(line) for line in grid.read_text().splitlines()]
    assert 1 <= len(checked) <= search.GRID_POINTS
    for row in checked:
        assert [r["lr"] for r in row["runs"]] == pytest.approx(search.GRID_RATES)
        assert set(row["found_by"]) <= set(search.METHODS) and 0.0 <= row["test"] <= 1.0
    assert "**digits-mlp: best found**" in proc.stdout
