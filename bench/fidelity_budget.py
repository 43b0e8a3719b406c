"""The budget as a dimension of fidelity study II's held-out protocol (issue 27, docs/fidelity.md).

Budgets (epoch cap × patience × stop rule, and budgets in optimizer steps scaled to the dataset
through ``core/budget.py``) are compared on the selection half, one chosen by the rule written in
docs/fidelity.md, then reported on the report half and the new architectures against Adam at 1e-3
under the same budget.

A stop rule only decides when a run stops, so each net and seed is trained once ("long run"),
until every budget under study has stopped (a callback replays each rule after every epoch and
raises ``TrainingCancelled`` when the last one has). Every epoch records the validation loss, the
test score, the cumulative steps and process CPU-seconds (the bench's own per-epoch evaluations
excluded), the Switch's preferred rate and the best output copy's validation loss. Each budget's
result is read off that curve (:func:`read_budget`); ``tests/bench/test_fidelity_budget.py``
checks it equals the budget trained on its own.

    python bench/fidelity_budget.py --pool selection --jobs 2          # every budget
    python bench/fidelity_budget.py --pool heldout --rules NAME --jobs 2  # the chosen one + Adam
    python bench/fidelity_budget.py --report-only --markdown docs/fidelity-budget-tables.md

Last line: ``fidelity_budget_chosen: NAME, estimate error X % (today Y %), CPU Z× today``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_suites import BUDGETS

from archscreen.core.budget import StepBudget, epoch_budget
from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener, FixedRateScreener, Screener, _then
from archscreen.core.training.loop import LN2, TrainConfig, TrainingCancelled, evaluate

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "results" / "fidelity-budget.jsonl"
KINDS = {
    "alrao": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),  # DEFAULT_SCREENER
    "adam": lambda: FixedRateScreener(lr=1e-3, optimizer="adam"),  # the bar, same budget
}
CAP_FACTORS = (1, 2, 3)
PATIENCES = (10, 15, 20)
STOPS = ("patience", "plateau", "plateau-nofloor")
STEP_BUDGETS = {
    "steps-2k": StepBudget(min_epochs=10, min_steps=2000, patience_epochs=5, patience_steps=500),
    "steps-3k": StepBudget(min_epochs=10, min_steps=3000, patience_epochs=5, patience_steps=750),
}
PLATEAU = {"ema": 0.3, "tol": 1e-3, "min_steps": 1000, "min_epochs": 5}  # TrainConfig's defaults


@dataclass(frozen=True)
class BudgetRule:
    """One budget: an epoch cap, a patience and a stop rule (``patience``, ``plateau``: smoothed
    with the step floor, ``plateau-nofloor``: smoothed without it)."""

    name: str
    max_epochs: int
    patience: int
    stop: str = "patience"


def rules_for(dataset: str, train_size: int) -> list[BudgetRule]:
    """Every budget under study on ``dataset``: today's, the 27-point factorial, the step-scaled."""
    base = BUDGETS[dataset]
    cap, batch = base["max_epochs"], base["batch_size"]
    out = [BudgetRule("today", cap, base["patience"])]
    out += [
        BudgetRule(f"cap{k}x-p{p}-{stop}", k * cap, p, stop)
        for k in CAP_FACTORS
        for p in PATIENCES
        for stop in STOPS
    ]
    for name, sb in STEP_BUDGETS.items():
        eb = epoch_budget(train_size, batch, sb)
        out.append(BudgetRule(name, eb.max_epochs, eb.patience))
    return out


def stop_epoch(
    val_loss: list[float], train_loss: list[float], steps: list[int], rule: BudgetRule
) -> int | None:
    """The epoch (1-based) at which ``core/training/loop.py`` stops under ``rule`` on this curve,
    or None if the curve ends before it would (the run was cut short for this rule)."""
    best, bad, ema, best_ema, ema_bad = math.inf, 0, math.nan, math.inf, 0
    floor_steps = PLATEAU["min_steps"] if rule.stop == "plateau" else 0
    floor_epochs = PLATEAU["min_epochs"] if rule.stop == "plateau" else 0
    for i, (v, t) in enumerate(zip(val_loss, train_loss, strict=True)):
        epoch = i + 1
        diverged = not (math.isfinite(t) and math.isfinite(v))
        if not diverged and v < best:
            best, bad = v, 0
        else:
            bad += 1
        if not diverged:
            w = PLATEAU["ema"]
            ema = v if math.isnan(ema) else w * v + (1 - w) * ema
            if not math.isfinite(best_ema) or ema < best_ema - PLATEAU["tol"] * abs(best_ema):
                best_ema, ema_bad = ema, 0
            else:
                ema_bad += 1
        if diverged or epoch >= rule.max_epochs:
            return epoch
        if rule.stop == "patience" and bad >= rule.patience:
            return epoch
        if (
            rule.stop != "patience"
            and ema_bad >= rule.patience
            and steps[i] >= floor_steps
            and epoch >= floor_epochs
        ):
            return epoch
    return None


def read_budget(long_row: dict[str, Any], rule: BudgetRule) -> dict[str, Any] | None:
    """What a run under ``rule`` would have given, read off a long run (None: not long enough)."""
    c = long_row["curve"]
    stop = stop_epoch(c["val_loss"], c["train_loss"], c["steps"], rule)
    if stop is None:
        return None
    finite = [(v, i) for i, v in enumerate(c["val_loss"][:stop]) if math.isfinite(v)]
    best_i = min(finite)[1] if finite else stop - 1
    return {
        "dataset": long_row["dataset"],
        "arch": long_row["arch"],
        "kind": long_row["kind"],
        "seed": long_row["seed"],
        "rule": rule.name,
        "val_loss": c["val_loss"][best_i],
        "test": c["test"][best_i],
        "last_val_loss": c["val_loss"][stop - 1],
        "best_copy_val_loss": (c.get("best_copy_val_loss") or [None] * stop)[best_i],
        "preferred_lr": (c.get("preferred_lr") or [None] * stop)[best_i],
        "steps": c["steps"][stop - 1],
        "cpu_seconds": c["cpu"][stop - 1],
        "epochs": stop,
        "best_epoch": best_i + 1,
        # the product's estimate costs a curve fit: computed on demand (product_estimate)
        "max_epochs": rule.max_epochs,
        "long_row": long_row,
    }


def product_estimate(budget_row: dict[str, Any]) -> float | None:
    """The product's extrapolated estimate (``core.estimate.estimate_for_curves``, validation units)
    of a budget's run (a :func:`read_budget` row): what ``ScreenResult.estimate`` would hold."""
    from archscreen.core.estimate import estimate_for_curves

    long_row, stop, max_epochs = budget_row["long_row"], budget_row["epochs"], budget_row["max_epochs"]
    c = long_row["curve"]
    task = {"chartext": "language_model", "regression": "regression"}.get(
        long_row["dataset"], "classification"
    )
    field = "val_mse" if task == "regression" else "val_accuracy"
    records = [
        {
            "steps": c["steps"][i] - (c["steps"][i - 1] if i else 0),
            "val_loss": c["val_loss"][i],
            field: c["val_score"][i],
        }
        for i in range(stop)
    ]
    est = estimate_for_curves(records, task, max_epochs=max_epochs)
    return est.value if est is not None else None


def _test_score(task: str, metrics: Any) -> float:
    """Accuracy points, bits per character or MSE: the study's units."""
    if task == "language_model":
        return metrics.loss / LN2
    if task == "regression":
        return metrics.mse
    return 100 * metrics.accuracy


def _best_copy_val_loss(model: Any, x: torch.Tensor, y: torch.Tensor, batch: int, task: str) -> float | None:
    """Validation NLL of the best single output copy (Alrao only: None for a plain head)."""
    if getattr(model.head, "switch", None) is None:
        return None
    total: torch.Tensor | None = None
    count = 0
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        out = model(xb, yb)
        n = yb.numel() if task == "language_model" else len(yb)
        ll = out.copy_loglik.double() * n
        total = ll if total is None else total + ll
        count += n
    assert total is not None
    return float(-(total / max(count, 1)).max())


class _Recorder:
    """The long run's callback: records each epoch, ends the run when every rule has stopped."""

    def __init__(self, run: Any, rules: list[BudgetRule]) -> None:
        self.run, self.rules = run, rules
        self.curve: dict[str, list[Any]] = {
            k: []
            for k in (
                "val_loss",
                "train_loss",
                "val_score",
                "test",
                "steps",
                "cpu",
                "preferred_lr",
                "best_copy_val_loss",
            )
        }
        self.cpu0 = time.process_time()
        self.own_cpu = 0.0  # the bench's extra evaluations, not part of any budget's cost

    def __call__(self, progress: Any) -> None:
        t0 = time.process_time()
        rec, model, data = progress.record, self.run.model, self.run.splits
        task = data.info.task
        c = self.curve
        c["cpu"].append(t0 - self.cpu0 - self.own_cpu)
        c["val_loss"].append(rec.val_loss)
        c["train_loss"].append(rec.train_loss)
        c["val_score"].append(rec.val_mse if task == "regression" else rec.val_accuracy)
        c["steps"].append((c["steps"][-1] if c["steps"] else 0) + rec.steps)
        with torch.no_grad():
            test = evaluate(model, data.x_test, data.y_test, self.run.config.eval_batch_size)
            c["test"].append(_test_score(task, test))
            c["best_copy_val_loss"].append(
                _best_copy_val_loss(model, data.x_val, data.y_val, self.run.config.eval_batch_size, task)
            )
        head = model.head
        if getattr(head, "switch", None) is not None:
            from archscreen.core.alrao import preferred_lr

            c["preferred_lr"].append(preferred_lr(head))
        self.own_cpu += time.process_time() - t0
        if all(stop_epoch(c["val_loss"], c["train_loss"], c["steps"], r) is not None for r in self.rules):
            raise TrainingCancelled("every budget under study has stopped")


def long_run(
    dataset: str,
    arch: str,
    body: dict[str, Any],
    kind: str,
    seed: int,
    rules: list[BudgetRule],
    max_steps_per_epoch: int | None = None,
) -> dict[str, Any]:
    """Train one net once under every rule at once (see the module docstring); one cache row.
    ``max_steps_per_epoch`` shortens epochs (the tests' tiny runs)."""
    from fidelity import spec_for

    from archscreen.core.runs import start_run

    torch.set_num_threads(1)
    row: dict[str, Any] = {
        "dataset": dataset,
        "arch": arch,
        "kind": kind,
        "seed": seed,
        "rules": [r.name for r in rules],
    }
    t0 = time.perf_counter()
    try:
        base = BUDGETS[dataset]
        cfg = TrainConfig(
            max_epochs=max(r.max_epochs for r in rules),
            patience=10**6,
            batch_size=base["batch_size"],
            seed=seed,
            max_steps_per_epoch=max_steps_per_epoch,
        )
        screener: Screener = KINDS[kind]()
        run = start_run(spec_for(arch, body, dataset), dataset, cfg, screener.build)
        recorder = _Recorder(run, rules)
        hook = screener.epoch_hook(run.model, run.optimizer)
        result = run.train(callback=_then(hook, recorder))
        row |= {"curve": recorder.curve, "stopped_because": result.stopped_because, "epochs": result.epochs}
    except Exception as exc:  # a failed run is a row with its error, never a crash
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["seconds"] = time.perf_counter() - t0
    return row


def train_size(dataset: str) -> int:
    return len(load_dataset(dataset, seed=0).x_train)


def execute(
    todo: list[tuple[str, str, str, int]],
    bodies: dict[tuple[str, str], Any],
    rules_by_ds: dict[str, list[BudgetRule]],
    cache: Path,
    jobs: int,
) -> None:
    """Run the long runs in ``jobs`` processes, appending each row to ``cache`` as it finishes."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool, cache.open("a") as fh:
        futs = [
            pool.submit(long_run, ds, a, bodies[(ds, a)], kind, s, rules_by_ds[ds]) for ds, a, kind, s in todo
        ]
        for i, fut in enumerate(as_completed(futs), 1):
            row = fut.result()
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(
                f"# {i}/{len(todo)} {row['dataset']} {row['arch']} {row['kind']} seed {row['seed']}: "
                f"{row.get('epochs')} epochs, {row['seconds']:.0f} s {row.get('error', '')}",
                flush=True,
            )


def load_long(cache: Path) -> list[dict[str, Any]]:
    """The cache's rows without errors (the last row of a key wins: a rerun replaces it)."""
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                rows[(r["dataset"], r["arch"], r["kind"], r["seed"])] = r
    return list(rows.values())


def main() -> None:
    from fidelity import heldout_suites, pool_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", choices=("selection", "heldout"), default="selection")
    p.add_argument("--rules", default=None, help="heldout: the budget names to run (default: every one)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", type=Path, default=CACHE)
    p.add_argument("--also", type=Path, nargs="*", default=None, help="read-only caches of long runs")
    p.add_argument("--only", default=None, help="comma-separated datasets")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    args = p.parse_args()
    only = args.only.split(",") if args.only else None
    suites, _ = heldout_suites(only)
    bodies = {(ds, a): b for ds, s in suites.items() for a, b in s.items()}
    rules_by_ds = {ds: rules_for(ds, train_size(ds)) for ds in suites}
    train_rules = rules_by_ds
    if args.rules:
        names = set(args.rules.split(",")) | {"today"}
        train_rules = {ds: [r for r in rs if r.name in names] for ds, rs in rules_by_ds.items()}
    if not args.report_only:
        pools = ("selection",) if args.pool == "selection" else ("report", "new")
        kinds = ("alrao",) if args.pool == "selection" else ("alrao", "adam")
        done = {(r["dataset"], r["arch"], r["kind"], r["seed"]) for r in load_long(args.out)}
        # seed 0 of everything first, the new architectures before the report half, both kinds of a
        # net together: a sweep stopped early has the most useful part
        todo = [
            (ds, a, kind, s)
            for s in range(args.seeds)
            for pool in pools[::-1]
            for ds, suite in suites.items()
            for a in suite
            for kind in kinds
            if pool_of(ds, a) == pool and (ds, a, kind, s) not in done
        ]
        print(f"# {len(todo)} long runs to go ({args.out})", flush=True)
        execute(todo, bodies, train_rules, args.out, args.jobs)
    from fidelity_budget_report import report

    rows = load_long(args.out) + [r for c in (args.also or []) for r in load_long(c)]
    for line in report(rows, suites, rules_by_ds, args):
        print(line)


if __name__ == "__main__":
    main()
