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
        {"kind": "run", "cell": "c", "method": "archscreen", "seed": 0, "delivered": {"1": {"test": 0.95}}},
        {
            "kind": "run",
            "cell": "c",
            "method": "optuna-hyperband",
            "seed": 0,
            "delivered": {"1": {"test": 0.90}},
        },
        {"kind": "run", "cell": "c", "method": "archscreen", "seed": 1, "delivered": {"1": {"test": 0.10}}},
    ]
    assert search.headline(rows) == pytest.approx(5.0)  # seed 1 has no Optuna run: left out


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
