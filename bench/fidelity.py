"""Screening fidelity: does one Alrao run rank architectures like a full learning-rate search?

For every architecture of a suite (``bench/fidelity_suites.py``):

* two ground truths, each the architecture's best-learning-rate score: plain SGD
  over 8 log-spaced rates and Adam over 6 (``--quick``: SGD over 7, Adam with
  ``--adam-grid``), 2 seeds each, early stopping on validation loss; the best rate
  has the lowest mean validation loss, and the truth is that rate's mean
  validation loss and test score;
* screeners on the same suite with the same loop, budget and accounting (steps,
  wall time): Alrao-SGD and Alrao-Adam (our defaults), plain SGD at 0.1, Adam at
  its default 1e-3 (what a user would do instead: the bar), schedule-free AdamW,
  Prodigy, D-Adaptation SGD, a short 3-rate Adam grid (each run a third of the
  epochs), zero-cost proxies at initialisation (SynFlow, gradient norm), and the
  learning-rate range test (torch-lr-finder) as the yardstick for Alrao's rate hint.

Reported per dataset, ground truth and screener: Spearman and Kendall against the
truth's validation loss, Spearman on the test score, top-1 and top-3 regret, the
estimate error (mean |screener's test score − best-rate test score|), compute
relative to the grid, and the learning-rate hint's error in decades. The test score
is accuracy in points for classification and bits per character for the language
model. The noise ceiling is how well grid seed 0 ranks against seed 1.

Every run is one JSON line in a cache under ``bench/results/``, so an interrupted
study resumes where it stopped; ``--jobs N`` trains N runs at once. ``--full`` also
writes the tables as Markdown and the plots as PNG (``--plots DIR``).

A third truth is derived from the two: ``best-of-both``, each architecture's best rate with
either optimizer (the better search by mean validation loss), i.e. the best score a
learning-rate search would find for it: the score the product promises to estimate.

``--heldout`` (fidelity study II, ``docs/fidelity.md``): the first study's 32 pairs split by a
seeded hash into a selection half (the only one a switch may be chosen on) and a report half, 17
architectures written after the defaults froze (``HELDOUT_SUITES``: regression, digits, MNIST-1D,
chartext transformers), Adam at 1e-3 with the screener's budget and with twice it, the
curve-aware budget (``TrainConfig.stop_rule="plateau"``), the body-rate-range switch, and the
extrapolated estimate (``core/estimate.py``) chosen on the selection half. It reads the first
study's committed cache and writes format-2 lines (with per-epoch curves) to its own. Last lines:
``fidelity_ii_new_spearman`` and ``fidelity_ii_report_new_spearman`` (the default and, in
brackets, same-budget Adam).

Last lines (``--full``): ``fidelity_vs_adam: X`` (the default screener's Spearman minus
default Adam's) and ``fidelity_spearman: X`` (the default screener), both the mean over
the datasets against the best-of-both truth; the lines before them give the same against
each optimizer's truth. ``--quick``: ``fidelity_spearman`` of Alrao-SGD vs the SGD truth.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line
from fidelity_screeners import FreeRateScreener, lr_range_test, zero_cost_scores
from fidelity_suites import (
    ADAM_LRS,
    ADAM_LRS_BY_DATASET,
    BUDGETS,
    FULL_SUITES,
    HELDOUT_SUITES,
    QUICK_SGD_LRS,
    QUICK_SUITE,
    SGD_LRS,
    split_of,
)

from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener, FixedRateScreener, Screener
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The product's default screener: what the service runs when a study does not say.
DEFAULT_SCREENER = "alrao-adam[1e-4..0.1]"  # tests/bench checks it is what AlraoScreener() runs
BASELINE = "adam@1e-3"

# Trained screeners: one run each per seed. The first two are the product's; the next two
# the one-run baselines a user would run instead; then learning-rate-free yardsticks.
TRAINED: dict[str, Callable[[], Screener]] = {
    "alrao-sgd": lambda: AlraoScreener(base="sgd"),
    # The Adam range before the study; the study's winner is the variant alrao-adam[1e-4..0.1].
    "alrao-adam": lambda: AlraoScreener(base="adam", lr_min=1e-5, lr_max=0.1),
    "adam@1e-3": lambda: FixedRateScreener(lr=1e-3, optimizer="adam"),
    "sgd@0.1": lambda: FixedRateScreener(lr=0.1),
    "schedulefree-adamw": lambda: FreeRateScreener("schedulefree-adamw"),
    "prodigy": lambda: FreeRateScreener("prodigy"),
    "dadapt-sgd": lambda: FreeRateScreener("dadapt-sgd"),
}
# Settings under study (not defaults); each is a switch of AlraoScreener or of the budget.
VARIANTS: dict[str, Callable[[], Screener]] = {
    "alrao-sgd[1e-3..1]": lambda: AlraoScreener(base="sgd", lr_min=1e-3, lr_max=1.0),
    "alrao-adam[1e-4..0.1]": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    "alrao-adam+patience": lambda: AlraoScreener(base="adam", lr_min=1e-5, lr_max=0.1),
    "alrao-sgd+patience": lambda: AlraoScreener(base="sgd"),
    "alrao-adam[1e-4..0.1]+patience": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    # The bar with the same extra patience, so the patience variants are compared fairly.
    "adam@1e-3+patience": lambda: FixedRateScreener(lr=1e-3, optimizer="adam"),
    # Study II. The bar with twice the screener's epochs and patience ("adam@1e-3 2x").
    "adam@1e-3+2x": lambda: FixedRateScreener(lr=1e-3, optimizer="adam"),
    # The default under the curve-aware budget (TrainConfig.stop_rule="plateau", cap 2x epochs).
    "alrao-adam[1e-4..0.1]+curve": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    # Item 2, each part of the curve-aware budget alone (second session): the smoothed patience
    # without the step floor, the step floor with raw patience, and both under the fixed cap.
    "alrao-adam[1e-4..0.1]+curve-smooth-only": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    "alrao-adam[1e-4..0.1]+curve-floor-only": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    "alrao-adam[1e-4..0.1]+curve-cap1": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
    # Item 5: the body's rates in their own, narrower and higher, range; the copies keep (1e-4, 0.1).
    "alrao-adam[1e-4..0.1]+body[1e-3..0.1]": lambda: AlraoScreener(
        base="adam", lr_min=1e-4, lr_max=0.1, body_lr_min=1e-3
    ),
    # Item 5, option b: after 5 warm-up epochs the body's rates are drawn again, log-uniformly over
    # one decade centred on the Switch posterior's preferred rate (AlraoScreener.recentre_after).
    "alrao-adam[1e-4..0.1]+recentre@5": lambda: AlraoScreener(
        base="adam", lr_min=1e-4, lr_max=0.1, recentre_after=5, recentre_width=1.0
    ),
    # Two more settings of the same switch, run on the selection half only, where one is chosen
    # (lowest mean relative estimate error among those whose validation-loss Spearman on MNIST-1D
    # and chartext is not below the default's), then run on the report half and the new nets.
    "alrao-adam[1e-4..0.1]+recentre@10": lambda: AlraoScreener(
        base="adam", lr_min=1e-4, lr_max=0.1, recentre_after=10, recentre_width=1.0
    ),
    "alrao-adam[1e-4..0.1]+recentre@5w2": lambda: AlraoScreener(
        base="adam", lr_min=1e-4, lr_max=0.1, recentre_after=5, recentre_width=2.0
    ),
    # The default run again, unchanged, on the first study's selection half: its cache lines
    # predate the curve field, and the extrapolation method is chosen on these curves.
    "alrao-adam[1e-4..0.1]+curvelog": lambda: AlraoScreener(base="adam", lr_min=1e-4, lr_max=0.1),
}
# Budget changes of a variant, applied on top of the dataset's budget: Alrao's validation curve
# is noisier than a single-rate run's (features with large rates), so the "+patience" variants
# wait twice as long before stopping (the epoch cap stays).
VARIANT_BUDGET: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "alrao-adam+patience": lambda c: {**c, "patience": 2 * c["patience"]},
    "alrao-sgd+patience": lambda c: {**c, "patience": 2 * c["patience"]},
    "alrao-adam[1e-4..0.1]+patience": lambda c: {**c, "patience": 2 * c["patience"]},
    "adam@1e-3+patience": lambda c: {**c, "patience": 2 * c["patience"]},
    "adam@1e-3+2x": lambda c: {**c, "max_epochs": 2 * c["max_epochs"], "patience": 2 * c["patience"]},
    # Curve-aware: the same patience, counted on the smoothed curve, at least 1000 optimizer steps
    # (TrainConfig's default floor) and the dataset's epoch cap doubled, so slow learners can go on.
    "alrao-adam[1e-4..0.1]+curve": lambda c: {
        **c,
        "max_epochs": 2 * c["max_epochs"],
        "stop_rule": "plateau",
    },
    "alrao-adam[1e-4..0.1]+curve-smooth-only": lambda c: {
        **c,
        "max_epochs": 2 * c["max_epochs"],
        "stop_rule": "plateau",
        "plateau_min_steps": 0,
        "plateau_min_epochs": 0,
    },
    # raw patience (no smoothing, any drop counts) until the floor
    "alrao-adam[1e-4..0.1]+curve-floor-only": lambda c: {
        **c,
        "max_epochs": 2 * c["max_epochs"],
        "stop_rule": "plateau",
        "plateau_ema": 1.0,
        "plateau_tol": 0.0,
    },
    "alrao-adam[1e-4..0.1]+curve-cap1": lambda c: {**c, "stop_rule": "plateau"},
}
CURVE_PARTS = (
    "alrao-adam[1e-4..0.1]+curve-smooth-only",
    "alrao-adam[1e-4..0.1]+curve-floor-only",
    "alrao-adam[1e-4..0.1]+curve-cap1",
)
# The cache line format: 1 (study I) had no curves; 2 adds "format", "curve" (per-epoch validation
# loss, score and cumulative steps) and the MSE fields of regression runs. Both stay readable.
FORMAT_VERSION = 2
# Study II (--heldout): the screeners trained on the new architectures, and on the first study's
# report / selection halves the rows it lacks.
HELDOUT_TRAINED = (
    DEFAULT_SCREENER,
    BASELINE,
    "adam@1e-3+2x",
    "alrao-adam[1e-4..0.1]+curve",
    "alrao-adam[1e-4..0.1]+body[1e-3..0.1]",
    "alrao-adam[1e-4..0.1]+recentre@5",
    # chosen on the selection half among the re-centring settings (see VARIANTS)
    "alrao-adam[1e-4..0.1]+recentre@10",
    *CURVE_PARTS,
)
# On the first study's report half: the 2x bar, then (added in a second session) the three
# switches, so that none is reported on the new architectures alone.
HELDOUT_ON_REPORT = (
    "adam@1e-3+2x",
    "alrao-adam[1e-4..0.1]+curve",
    "alrao-adam[1e-4..0.1]+body[1e-3..0.1]",
    "alrao-adam[1e-4..0.1]+recentre@5",
    # the curve-aware part with the lowest selection-half error (the rule in VARIANTS)
    "alrao-adam[1e-4..0.1]+curve-cap1",
    "alrao-adam[1e-4..0.1]+recentre@10",
)
# The default label pins (1e-4, 0.1) on every task; the product's regression default is (1e-5, 0.1),
# which is study I's "alrao-adam" label: run it on the regression set too.
HELDOUT_EXTRA = {"regression": ("alrao-adam",)}
HELDOUT_ON_SELECTION = (
    "alrao-adam[1e-4..0.1]+body[1e-3..0.1]",
    "alrao-adam[1e-4..0.1]+curvelog",
    "alrao-adam[1e-4..0.1]+recentre@5",
    "alrao-adam[1e-4..0.1]+recentre@10",
    "alrao-adam[1e-4..0.1]+recentre@5w2",
    "alrao-adam[1e-4..0.1]+curve",
    *CURVE_PARTS,
)
LOWER_IS_BETTER = ("chartext", "regression")  # test score: bits per character, MSE
SHORT_GRID = [3e-4, 1e-3, 3e-3]  # Adam, a third of the epochs each
SEEDED = ("alrao-sgd", "alrao-adam", "adam@1e-3", *VARIANTS)  # screeners run with --screener-seeds seeds
QUICK_TRAINED = ("alrao-sgd", "adam@1e-3", "sgd@0.1", "alrao-adam", "alrao-sgd[1e-3..1]")


def adam_lrs(dataset: str) -> list[float]:
    return ADAM_LRS_BY_DATASET.get(dataset, ADAM_LRS)


@dataclass(frozen=True)
class Run:
    dataset: str
    arch: str
    label: str
    seed: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.dataset, self.arch, self.label, self.seed)


def spec_for(name: str, body: dict[str, Any], dataset: str = "") -> dict[str, Any]:
    return {"name": name, "head": "regression" if dataset == "regression" else "classifier", **body}


def plan(
    suites: dict[str, dict[str, Any]],
    sgd_lrs: Callable[[str], list[float]],
    seeds: int,
    adam_grid: bool,
    screener_seeds: int,
    trained: tuple[str, ...],
    extras: bool,
) -> list[Run]:
    """Every run of the study, one dataset at a time (its grids, the truth, first)."""
    runs: list[Run] = []
    for ds, suite in suites.items():
        for a in suite:
            runs += [Run(ds, a, f"grid-sgd@{lr:g}", s) for lr in sgd_lrs(ds) for s in range(seeds)]
            if adam_grid:
                runs += [Run(ds, a, f"grid-adam@{lr:g}", s) for lr in adam_lrs(ds) for s in range(seeds)]
        for a in suite:
            for label in trained:
                n = screener_seeds if label in SEEDED else 1
                runs += [Run(ds, a, label, s) for s in range(n)]
            if extras:
                runs += [Run(ds, a, f"short-adam@{lr:g}", 0) for lr in SHORT_GRID]
                runs += [Run(ds, a, probe, 0) for probe in ("zero-cost", "lr-find-sgd", "lr-find-adam")]
    return runs


def curve_of(r: Any) -> dict[str, Any]:
    """The run's per-epoch validation curve, compactly: loss, score (accuracy, MSE or None) and the
    cumulative optimizer steps at each epoch's end."""
    steps, total = [], 0
    for c in r.curves:
        total += c["steps"]
        steps.append(total)
    score = "val_mse" if r.task == "regression" else "val_accuracy"
    return {
        "val_loss": [c["val_loss"] for c in r.curves],
        "val_score": [c.get(score) for c in r.curves],
        "steps": steps,
    }


def heldout_suites(only: list[str] | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Study II's suites: per dataset the first study's architectures plus the new ones (a new
    architecture the installed DSL cannot parse is left out and named in the second value)."""
    from archscreen.core.data import get_dataset
    from archscreen.core.spec import validate_spec

    suites: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    for ds in ("regression", "digits", "mnist1d", "chartext"):
        if only is not None and ds not in only:
            continue
        suite = dict(FULL_SUITES.get(ds, {}))
        for a, body in HELDOUT_SUITES.get(ds, {}).items():
            try:
                validate_spec(parse_spec(spec_for(a, body, ds)), get_dataset(ds).info())
            except Exception as exc:  # an older DSL: say so, run the rest
                dropped.append(f"{ds}/{a} ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
                continue
            suite[a] = body
        suites[ds] = suite
    return suites, dropped


def is_new(dataset: str, arch: str) -> bool:
    return arch in HELDOUT_SUITES.get(dataset, {})


def pool_of(dataset: str, arch: str) -> str:
    """``new`` (written after the defaults froze), else the first study's ``selection``/``report``."""
    return "new" if is_new(dataset, arch) else split_of(dataset, arch)


def plan_heldout(
    suites: dict[str, dict[str, Any]], sgd_lrs: Callable[[str], list[float]], seeds: int, screener_seeds: int
) -> list[Run]:
    """Study II, in the order it trains (so that a stopped study has the most useful part): the new
    architectures' two grids and screeners, dataset by dataset, the transformers (chartext) last;
    between them, the rows the first study's selection half lacks (a curve-logging rerun of the
    default, the body-range switch); at the end the 2x Adam bar on its report half."""

    def new_runs(ds: str) -> list[Run]:
        new = [a for a in suites[ds] if is_new(ds, a)]
        out: list[Run] = []
        for a in new:
            out += [Run(ds, a, f"grid-sgd@{lr:g}", s) for lr in sgd_lrs(ds) for s in range(seeds)]
            out += [Run(ds, a, f"grid-adam@{lr:g}", s) for lr in adam_lrs(ds) for s in range(seeds)]
        for label in (*HELDOUT_TRAINED, *HELDOUT_EXTRA.get(ds, ())):
            out += [Run(ds, a, label, s) for a in new for s in range(screener_seeds)]
        return out

    def old(ds: str, half: str) -> list[str]:
        return [a for a in suites[ds] if not is_new(ds, a) and split_of(ds, a) == half]

    runs: list[Run] = []
    for ds in suites:
        if ds != "chartext":
            runs += new_runs(ds)
    for label in HELDOUT_ON_SELECTION:
        n = 1 if label.endswith("+curvelog") else screener_seeds
        runs += [Run(ds, a, label, s) for ds in suites for a in old(ds, "selection") for s in range(n)]
    if "chartext" in suites:
        runs += new_runs("chartext")
    for label in HELDOUT_ON_REPORT:
        runs += [
            Run(ds, a, label, s) for ds in suites for a in old(ds, "report") for s in range(screener_seeds)
        ]
    return runs


def eta_seconds(runs: list[Run], rows: list[dict[str, Any]]) -> float:
    """A rough plan-time estimate: each run costs its architecture's mean cached run time (else its
    dataset's median), twice that for labels with a doubled epoch cap."""
    by_arch: dict[tuple[str, str], list[float]] = {}
    by_ds: dict[str, list[float]] = {}
    for r in rows:
        if r.get("seconds") and not str(r["screener"]).startswith(("zero-cost", "lr-find")):
            by_arch.setdefault((r["dataset"], r["arch"]), []).append(r["seconds"])
            by_ds.setdefault(r["dataset"], []).append(r["seconds"])
    total = 0.0
    for run in runs:
        xs = by_arch.get((run.dataset, run.arch)) or by_ds.get(run.dataset) or [3.0]
        base = _mean(xs) if (run.dataset, run.arch) in by_arch else statistics.median(xs)
        total += base * (2 if run.label.endswith(("+2x", "+curve")) else 1)
    return total


def _result_row(run: Run, r: Any) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "curve": curve_of(r),
        "val_mse": r.val_mse,
        "test_mse": r.test_mse,
        "val_loss": r.val_loss,
        "val_accuracy": r.val_accuracy,
        "test_accuracy": r.test_accuracy,
        "test_bpc": r.test_bpc,
        "steps": r.steps,
        "seconds": r.seconds,
        "epochs": r.epochs,
        "best_epoch": r.best_epoch,
        "stopped_because": r.stopped_because,
        "preferred_lr": r.preferred_lr,
    }


def run_one(run: Run, body: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Train (or probe) one run; a run that raises becomes a row with its error, never a crash."""
    torch.set_num_threads(1)
    row: dict[str, Any] = {
        "dataset": run.dataset,
        "arch": run.arch,
        "screener": run.label,
        "seed": run.seed,
        "budget": config,
    }
    t0 = time.perf_counter()
    try:
        cfg = TrainConfig(**{**config, "seed": run.seed})
        spec = spec_for(run.arch, body, run.dataset)
        label = run.label
        if label.startswith(("grid-", "short-")):
            opt = "adam" if "adam@" in label else "sgd"
            lr = float(label.split("@")[1])
            if label.startswith("short-"):
                short = max(1, math.ceil(cfg.max_epochs / 3))
                cfg = TrainConfig(**{**config, "seed": run.seed, "max_epochs": short})
            row |= _result_row(run, FixedRateScreener(lr=lr, optimizer=opt).screen(spec, run.dataset, cfg))  # type: ignore[arg-type]
        elif label == "zero-cost":
            data = load_dataset(run.dataset, seed=run.seed)
            row |= zero_cost_scores(parse_spec(spec), data, run.seed, cfg.batch_size)
            row |= {"steps": 1, "seconds": time.perf_counter() - t0}
        elif label.startswith("lr-find-"):
            data = load_dataset(run.dataset, seed=run.seed)
            found = lr_range_test(
                parse_spec(spec), data, label.removeprefix("lr-find-"), run.seed, cfg.batch_size
            )
            row |= {"preferred_lr": found["lr"], "steps": found["steps"], "seconds": time.perf_counter() - t0}
        else:
            factory = TRAINED.get(label) or VARIANTS[label]
            if label in VARIANT_BUDGET:
                cfg = TrainConfig(**{**VARIANT_BUDGET[label](config), "seed": run.seed})
            row |= _result_row(run, factory().screen(spec, run.dataset, cfg))
    except Exception as exc:
        row |= {"error": f"{type(exc).__name__}: {exc}", "val_loss": math.inf, "steps": 0}
        row["seconds"] = time.perf_counter() - t0
    return row


def execute(
    todo: list[Run],
    bodies: dict[tuple[str, str], dict[str, Any]],
    configs: dict[str, dict[str, Any]],
    cache: Path,
    jobs: int,
    deadline_s: float | None,
) -> list[dict[str, Any]]:
    """Run ``todo`` in ``jobs`` processes, appending each finished row to ``cache`` at once."""
    out: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=jobs) as pool, cache.open("a") as fh:
        futures: list[Future[dict[str, Any]]] = [
            pool.submit(run_one, r, bodies[(r.dataset, r.arch)], configs[r.dataset]) for r in todo
        ]
        bar = tqdm(total=len(todo), unit="run", file=sys.stderr, dynamic_ncols=True, mininterval=2)
        for fut in as_completed(futures):
            row = fut.result()
            out.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            bar.set_postfix_str(f"{row['dataset']} {row['arch']} {row['screener']}", refresh=False)
            bar.update()
            if deadline_s is not None and time.monotonic() - t0 > deadline_s:
                for f in futures:
                    f.cancel()
                break
        bar.close()
    return out


# ---------------------------------------------------------------- analysis


def finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else math.inf


def test_score(row: dict[str, Any], dataset: str) -> float:
    """Test score in its reporting units: accuracy points (higher better), or bits per char (lower)."""
    if dataset == "chartext":
        return finite(row.get("test_bpc"))
    if dataset == "regression":
        return finite(row.get("test_mse"))
    acc = row.get("test_accuracy")
    return 100 * acc if acc is not None else 0.0


def better(dataset: str) -> Callable[[float, float], float]:
    """How much ``a`` beats ``b`` in test-score units (positive = a is better)."""
    return (lambda a, b: b - a) if dataset in LOWER_IS_BETTER else (lambda a, b: a - b)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _empty_truth() -> dict[str, Any]:
    """Per-architecture best-rate scores and the architectures whose best run hit the cap or edge."""
    return {"val": {}, "test": {}, "lr": {}, "steps": {}, "seconds": {}, "capped": [], "edge": []}


def truth_for(
    rows: dict[tuple[str, str, str, int], dict[str, Any]],
    dataset: str,
    archs: list[str],
    grid: str,
    lrs: list[float],
    seeds: int,
) -> dict[str, Any]:
    """Best rate per architecture by mean validation loss, its scores, and the epoch-cap check."""
    t = _empty_truth()
    per_seed: dict[int, dict[str, float]] = {s: {} for s in range(seeds)}
    for a in archs:
        runs = {(lr, s): rows[(dataset, a, f"{grid}@{lr:g}", s)] for lr in lrs for s in range(seeds)}
        means = {lr: _mean([finite(runs[(lr, s)]["val_loss"]) for s in range(seeds)]) for lr in lrs}
        best = min(lrs, key=lambda lr: means[lr])
        t["val"][a], t["lr"][a] = means[best], best
        t["test"][a] = _mean([test_score(runs[(best, s)], dataset) for s in range(seeds)])
        t["steps"][a] = sum(r["steps"] for r in runs.values())
        t["seconds"][a] = sum(r["seconds"] for r in runs.values())
        if any(runs[(best, s)]["stopped_because"] == "max_epochs" for s in range(seeds)):
            t["capped"].append(a)
        if best in (lrs[0], lrs[-1]):
            t["edge"].append(a)
        for s in range(seeds):
            per_seed[s][a] = min(finite(runs[(lr, s)]["val_loss"]) for lr in lrs)
    if seeds >= 2:
        t["noise_ceiling"] = stats.spearmanr(
            [per_seed[0][a] for a in archs], [per_seed[1][a] for a in archs]
        ).statistic
    return t


def screener_scores(
    rows: dict[tuple[str, str, str, int], dict[str, Any]],
    dataset: str,
    archs: list[str],
    label: str,
    seed: int,
) -> dict[str, Any] | None:
    """Per-architecture ranking score (lower is better), test score, steps, seconds and rate hint."""
    if label == "short-grid-3":
        keys = [(dataset, a, f"short-adam@{lr:g}", seed) for a in archs for lr in SHORT_GRID]
        if any(k not in rows for k in keys):
            return None
        out: dict[str, Any] = {"score": {}, "test": {}, "steps": 0, "seconds": 0.0, "hint": {}}
        for a in archs:
            cands = [rows[(dataset, a, f"short-adam@{lr:g}", seed)] for lr in SHORT_GRID]
            best = min(cands, key=lambda r: finite(r["val_loss"]))
            out["score"][a], out["test"][a] = finite(best["val_loss"]), test_score(best, dataset)
            out["steps"] += sum(r["steps"] for r in cands)
            out["seconds"] += sum(r["seconds"] for r in cands)
        return out
    if label in ("synflow", "grad-norm"):
        keys = [(dataset, a, "zero-cost", seed) for a in archs]
        if any(k not in rows or "error" in rows[k] for k in keys):
            return None
        field = "synflow" if label == "synflow" else "grad_norm"
        return {
            "score": {a: -rows[(dataset, a, "zero-cost", seed)][field] for a in archs},
            "test": None,
            "steps": sum(rows[k]["steps"] for k in keys),
            "seconds": sum(rows[k]["seconds"] for k in keys),
        }
    keys = [(dataset, a, label, seed) for a in archs]
    if any(k not in rows for k in keys):
        return None
    return {
        "score": {a: finite(rows[(dataset, a, label, seed)]["val_loss"]) for a in archs},
        "test": {a: test_score(rows[(dataset, a, label, seed)], dataset) for a in archs},
        "steps": sum(rows[k]["steps"] for k in keys),
        "seconds": sum(rows[k]["seconds"] for k in keys),
        "hint": {a: rows[(dataset, a, label, seed)].get("preferred_lr") for a in archs},
    }


def metrics(truth: dict[str, Any], sc: dict[str, Any], archs: list[str], dataset: str) -> dict[str, Any]:
    gain = better(dataset)
    score = [sc["score"][a] for a in archs]
    true_val = [truth["val"][a] for a in archs]
    true_test = {a: truth["test"][a] for a in archs}
    best_true = max(archs, key=lambda a: gain(true_test[a], 0.0))
    order = sorted(archs, key=lambda a: sc["score"][a])
    top3_best = max(order[:3], key=lambda a: gain(true_test[a], 0.0))
    m: dict[str, Any] = {
        "spearman": stats.spearmanr(score, true_val).statistic,
        "kendall": stats.kendalltau(score, true_val).statistic,
        "top1_regret": gain(true_test[best_true], true_test[order[0]]),
        "top3_regret": gain(true_test[best_true], true_test[top3_best]),
        "picked": order[0],
        "compute_ratio": sum(truth["steps"].values()) / max(sc["steps"], 1),
        "time_ratio": sum(truth["seconds"].values()) / max(sc["seconds"], 1e-9),
    }
    if sc.get("test") is not None:
        est = [sc["test"][a] for a in archs]
        m["spearman_test"] = stats.spearmanr(est, [true_test[a] for a in archs]).statistic
        m["estimate_error"] = _mean([abs(sc["test"][a] - true_test[a]) for a in archs])
        m["estimate_rel"] = _mean(
            [100 * abs(sc["test"][a] - true_test[a]) / abs(true_test[a]) for a in archs]
        )
    return m


HINTS = {
    "grid-sgd": ("alrao-sgd", "lr-find-sgd"),
    "grid-adam": ("alrao-adam", "alrao-adam[1e-4..0.1]", "lr-find-adam"),
}
# A third truth: per architecture the better of the two searches (its best-rate score, any optimizer).
BEST_OF_BOTH = "best-of-both"


def analyse(
    rows_list: list[dict[str, Any]],
    suites: dict[str, dict[str, Any]],
    sgd_lrs: Callable[[str], list[float]],
    seeds: int,
    grids: list[str],
    screener_labels: list[str],
    screener_seeds: int,
    adam_lrs_for: Callable[[str], list[float]] = adam_lrs,
) -> dict[str, Any]:
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in rows_list}
    result: dict[str, Any] = {}
    for ds, suite in suites.items():
        archs = list(suite)
        truths: dict[str, dict[str, Any]] = {}
        for grid in grids:
            lrs = sgd_lrs(ds) if grid == "grid-sgd" else adam_lrs_for(ds)
            if all((ds, a, f"{grid}@{lr:g}", s) in rows for a in archs for lr in lrs for s in range(seeds)):
                truths[grid] = truth_for(rows, ds, archs, grid, lrs, seeds)
        if {"grid-sgd", "grid-adam"} <= set(truths):
            truths[BEST_OF_BOTH] = best_of_both(truths["grid-sgd"], truths["grid-adam"], archs)
        for grid, truth in truths.items():
            table: dict[str, Any] = {}
            for label in screener_labels:
                per_seed = []
                for s in range(screener_seeds if label in SEEDED else 1):
                    sc = screener_scores(rows, ds, archs, label, s)
                    if sc is not None:
                        per_seed.append(metrics(truth, sc, archs, ds))
                if not per_seed:
                    continue
                agg: dict[str, Any] = {
                    k: _mean([m[k] for m in per_seed])
                    for k in per_seed[0]
                    if isinstance(per_seed[0][k], float | int)
                }
                agg["picked"] = per_seed[0]["picked"]
                agg["seeds"] = len(per_seed)
                agg["spearman_seeds"] = [m["spearman"] for m in per_seed]
                table[label] = agg
            hints: dict[str, float] = {}
            for label in HINTS.get(grid, ()):
                errs = [
                    abs(math.log10(rows[(ds, a, label, 0)]["preferred_lr"] / truth["lr"][a]))
                    for a in archs
                    if (ds, a, label, 0) in rows and rows[(ds, a, label, 0)].get("preferred_lr")
                ]
                if len(errs) == len(archs):
                    hints[label] = statistics.median(errs)
            result[f"{ds}/{grid}"] = {
                "archs": archs,
                "truth": truth,
                "screeners": table,
                "hint_decades": hints,
            }
    return result


def best_of_both(sgd: dict[str, Any], adam: dict[str, Any], archs: list[str]) -> dict[str, Any]:
    """Per architecture, the better of the two searches (by mean validation loss): its best-rate score
    with either optimizer. Its compute is both grids'; its rate is not comparable across optimizers."""
    t = _empty_truth()
    for a in archs:
        win = sgd if sgd["val"][a] <= adam["val"][a] else adam
        for k in ("val", "test", "lr"):
            t[k][a] = win[k][a]
        for k in ("steps", "seconds"):
            t[k][a] = sgd[k][a] + adam[k][a]
        for k in ("capped", "edge"):
            if a in win[k]:
                t[k].append(a)
    t["winner"] = {a: "sgd" if sgd["val"][a] <= adam["val"][a] else "adam" for a in archs}
    return t


def headline(result: dict[str, Any], label: str, truth: str = BEST_OF_BOTH) -> float | None:
    """Mean Spearman over the datasets against one truth (default: each architecture's best rate
    with either optimizer, the score the product promises to estimate)."""
    vals = [
        cell["screeners"][label]["spearman"]
        for key, cell in result.items()
        if label in cell["screeners"] and key.endswith(f"/{truth}")
    ]
    return _mean(vals) if vals else None


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    """1 = lowest score (best)."""
    return {a: i + 1 for i, a in enumerate(sorted(scores, key=lambda k: scores[k]))}


def report(result: dict[str, Any], rows_list: list[dict[str, Any]]) -> list[str]:
    """Print the tables; return them as Markdown lines too."""
    md: list[str] = []
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in rows_list}
    for key, cell in result.items():
        ds, grid = key.split("/")
        unit = "bpc" if ds == "chartext" else "pp"
        truth = cell["truth"]
        print(f"\n## {ds}, ground truth {grid} (best rate by mean validation loss)")
        md += [f"\n### {ds}, ground truth {grid}\n"]
        shown = [lab for lab in (DEFAULT_SCREENER, "alrao-adam", BASELINE) if lab in cell["screeners"]]
        md += [
            f"| arch | best rate | truth val loss (rank) | truth test ({unit}) | "
            + " | ".join(f"{lab} val loss (rank)" for lab in shown)
            + " | alrao-sgd hint | alrao-adam hint |",
            "|---|---|---|---|" + "---|" * (len(shown) + 2),
        ]
        ranks = {"truth": _ranks(truth["val"])}
        for lab in shown:
            ranks[lab] = _ranks({a: finite(rows[(ds, a, lab, 0)]["val_loss"]) for a in cell["archs"]})
        for a in cell["archs"]:
            h = [rows.get((ds, a, lab, 0), {}).get("preferred_lr") for lab in ("alrao-sgd", "alrao-adam")]
            cols = [
                f"{truth['lr'][a]:g}",
                f"{truth['val'][a]:.4f} ({ranks['truth'][a]})",
                f"{truth['test'][a]:.2f}",
            ]
            cols += [f"{finite(rows[(ds, a, lab, 0)]['val_loss']):.4f} ({ranks[lab][a]})" for lab in shown]
            cols += [f"{x:.3g}" if x else "-" for x in h]
            md.append(f"| {a} | " + " | ".join(cols) + " |")
        notes = []
        if truth["capped"]:
            notes.append(f"best rate reached the epoch cap in a seed: {', '.join(truth['capped'])}")
        if truth["edge"]:
            notes.append(f"best rate at the grid's edge: {', '.join(truth['edge'])}")
        if "noise_ceiling" in truth:
            notes.append(f"noise ceiling (grid seed 0 vs seed 1): Spearman {truth['noise_ceiling']:.3f}")
        for n in notes:
            print(f"# {n}")
            md.append(f"\n{n}.")
        head = (
            f"| screener | Spearman | Kendall | Spearman (test) | top-1 regret ({unit}) "
            f"| top-3 regret ({unit}) | estimate error ({unit}) | grid/own steps | grid/own time |"
        )
        md += ["", head, "|---|---|---|---|---|---|---|---|---|"]
        print(
            f"{'screener':<20} {'spearman':>8} {'kendall':>8} {'sp test':>8} {'top1':>7} {'top3':>7} "
            f"{'est err':>8} {'steps×':>7} {'time×':>7}"
        )
        for label, m in cell["screeners"].items():
            sp = f"{m['spearman']:.3f}" + (
                f" (±{statistics.stdev(m['spearman_seeds']):.3f}, {m['seeds']} seeds)"
                if m["seeds"] > 1
                else ""
            )
            est = f"{m['estimate_error']:.2f}" if "estimate_error" in m else "-"
            spt = f"{m['spearman_test']:.3f}" if "spearman_test" in m else "-"
            print(
                f"{label:<20} {m['spearman']:>8.3f} {m['kendall']:>8.3f} {spt:>8} {m['top1_regret']:>7.2f} "
                f"{m['top3_regret']:>7.2f} {est:>8} {m['compute_ratio']:>7.1f} {m['time_ratio']:>7.1f}"
            )
            md.append(
                f"| {label} | {sp} | {m['kendall']:.3f} | {spt} | {m['top1_regret']:.2f} "
                f"| {m['top3_regret']:.2f} | {est} | {m['compute_ratio']:.1f} | {m['time_ratio']:.1f} |"
            )
        for label, dec in cell["hint_decades"].items():
            print(f"learning-rate hint {label}: median error {dec:.2f} decades")
            md.append(
                f"\nLearning-rate hint of {label}: median error **{dec:.2f} decades** from the best rate."
            )
    return md


def plots(
    result: dict[str, Any], rows_list: list[dict[str, Any]], out: Path, labels: list[str]
) -> list[Path]:
    """Spearman per screener and cell; Alrao's estimate vs the truth; its rate hint vs the best rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in rows_list}
    cells = list(result)
    datasets = list(dict.fromkeys(k.split("/")[0] for k in cells))
    truths = list(dict.fromkeys(k.split("/")[1] for k in cells))
    fig, grid_axes = plt.subplots(
        len(datasets),
        len(truths),
        figsize=(3.4 * len(truths), 3.6 * len(datasets)),
        sharey=True,
        squeeze=False,
    )
    for i, ds in enumerate(datasets):
        for j, tr in enumerate(truths):
            if f"{ds}/{tr}" not in result:
                grid_axes[i][j].axis("off")
    for key in cells:
        ds, tr = key.split("/")
        ax = grid_axes[datasets.index(ds)][truths.index(tr)]
        cell = result[key]
        # One row order in every panel (the panels share their y axis); a screener not run in a cell
        # gets no bar.
        shown = [lab for lab in labels if any(lab in result[k]["screeners"] for k in cells)]
        vals = [cell["screeners"][lab]["spearman"] if lab in cell["screeners"] else math.nan for lab in shown]
        colors = [
            "navy"
            if lab == DEFAULT_SCREENER
            else "tab:blue"
            if lab.startswith("alrao")
            else "tab:orange"
            if lab == BASELINE
            else "0.6"
            for lab in shown
        ]
        ax.barh(range(len(shown)), vals, color=colors)
        ax.set_yticks(range(len(shown)), shown, fontsize=8)
        ax.invert_yaxis()
        if "noise_ceiling" in cell["truth"]:
            ax.axvline(cell["truth"]["noise_ceiling"], color="k", ls="--", lw=1, label="noise ceiling")
        ax.set_xlim(-0.5, 1.0)
        ax.set_title(f"{ds} vs {tr.removeprefix('grid-')}", fontsize=9)
        ax.set_xlabel("Spearman")
    grid_axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    p = out / "fidelity-spearman.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    # Estimate of the best-rate score: screener's test score vs the truth's, per architecture.
    est_cells = [k for k in cells if k.endswith(BEST_OF_BOTH)] or cells
    fig, axes = plt.subplots(1, len(est_cells), figsize=(3.6 * len(est_cells), 3.6), squeeze=False)
    for ax, key in zip(axes[0], est_cells, strict=True):
        ds = key.split("/")[0]
        cell = result[key]
        for lab, color in (
            (DEFAULT_SCREENER, "tab:blue"),
            ("alrao-sgd", "tab:green"),
            (BASELINE, "tab:orange"),
        ):
            pts = [
                (cell["truth"]["test"][a], test_score(rows[(ds, a, lab, 0)], ds))
                for a in cell["archs"]
                if (ds, a, lab, 0) in rows
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color, label=lab)
        lo = min(cell["truth"]["test"].values())
        hi = max(cell["truth"]["test"].values())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(key.replace("/", " vs "), fontsize=9)
        ax.set_xlabel("best-rate test " + ("bpc" if ds == "chartext" else "accuracy %"))
    axes[0][0].set_ylabel("screener's estimate")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    p = out / "fidelity-estimate.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    # Learning-rate hint vs the grid's best rate.
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, grid in zip(axes, ("grid-sgd", "grid-adam"), strict=True):
        for lab, marker in zip(HINTS[grid], ("o", "s", "x"), strict=False):
            pts = [
                (result[k]["truth"]["lr"][a], rows[(k.split("/")[0], a, lab, 0)]["preferred_lr"])
                for k in result
                if k.endswith(grid)
                for a in result[k]["archs"]
                if rows.get((k.split("/")[0], a, lab, 0), {}).get("preferred_lr")
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=marker, s=18, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.plot([1e-5, 100], [1e-5, 100], "k--", lw=1)
        ax.set_xlabel(f"best rate of {grid}")
        ax.set_ylabel("hinted rate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p = out / "fidelity-lr-hint.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="ten MNIST-1D architectures, SGD grid (default)")
    mode.add_argument(
        "--full", action="store_true", help="the full study: three datasets, both grids, every yardstick"
    )
    mode.add_argument(
        "--heldout",
        action="store_true",
        help="study II: new architectures (held out), the split of the first study's, curves, switches",
    )
    parser.add_argument("--dataset", default="mnist1d", help="--quick only")
    parser.add_argument("--jobs", type=int, default=2, help="trainings run at once (one thread each)")
    parser.add_argument("--seeds", type=int, default=2, help="grid seeds")
    parser.add_argument(
        "--screener-seeds", type=int, default=None, help="seeds of Alrao and default Adam (full: 2)"
    )
    parser.add_argument("--adam-grid", action="store_true", help="--quick: also the Adam-grid truth")
    parser.add_argument("--max-epochs", type=int, default=40, help="--quick only (--full: per dataset)")
    parser.add_argument("--patience", type=int, default=6, help="--quick only")
    parser.add_argument("--batch-size", type=int, default=32, help="--quick only")
    parser.add_argument("--out", type=Path, default=None, help="the JSON-lines cache")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img", help="--full: where the PNGs go")
    parser.add_argument("--markdown", type=Path, default=None, help="--full: write the tables here")
    parser.add_argument(
        "--deadline-s", type=float, default=None, help="stop after this long; run again to resume"
    )
    parser.add_argument("--only", default=None, help="--full: comma-separated datasets")
    parser.add_argument(
        "--variants",
        nargs="?",
        const=",".join(VARIANTS),
        default="",
        help=f"--full: also these Alrao variants (comma-separated; alone: all of {', '.join(VARIANTS)})",
    )
    parser.add_argument("--labels", default=None, help="train only runs with these labels (comma-separated)")
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="DATASET:KEY=N,...",
        help="--full: override a dataset's budget, e.g. chartext:max_epochs=50,patience=5",
    )
    parser.add_argument("--report-only", action="store_true", help="analyse the cache; train nothing")
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="--heldout: read-only caches to take runs from (default: the first study's committed cache)",
    )
    args = parser.parse_args()
    if args.heldout:
        main_heldout(args, parser)
        return

    if args.full:
        suites = {k: v for k, v in FULL_SUITES.items() if args.only is None or k in args.only.split(",")}

        def sgd_lrs(ds: str) -> list[float]:
            return SGD_LRS.get(ds, SGD_LRS["default"])

        configs = {ds: dict(BUDGETS[ds]) for ds in suites}
        for override in args.budget:
            ds, _, pairs = override.partition(":")
            if ds not in configs or not pairs:
                parser.error(
                    f"--budget {override}: expected DATASET:KEY=N,... for one of {', '.join(configs)}"
                )
            for pair in pairs.split(","):
                key, _, value = pair.partition("=")
                if key not in configs[ds] or not value.isdigit() or int(value) < 1:
                    parser.error(f"--budget {override}: {pair!r}: keys {', '.join(configs[ds])}, values >= 1")
                configs[ds][key] = int(value)
        adam_grid, extras = True, True
        unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
        trained = (*TRAINED, *(v for v in VARIANTS if v in args.variants.split(",")))
        screener_seeds = args.screener_seeds or 2
        cache = args.out or RESULTS / "fidelity-full.jsonl"
    else:
        suites = {args.dataset: QUICK_SUITE}

        def sgd_lrs(ds: str) -> list[float]:
            return QUICK_SGD_LRS

        configs = {
            args.dataset: {
                "max_epochs": args.max_epochs,
                "patience": args.patience,
                "batch_size": args.batch_size,
            }
        }
        adam_grid, trained, extras = args.adam_grid, QUICK_TRAINED, False
        screener_seeds = args.screener_seeds or 1
        cache = args.out or RESULTS / f"fidelity-quick-{args.dataset}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in cache.read_text().splitlines()] if cache.exists() else []
    for r in rows:  # caches written before the dataset was part of the key
        r.setdefault("dataset", args.dataset)
    # A run trained under another budget than the dataset's current one is stale: train it again.
    stale = [
        r
        for r in rows
        if r["dataset"] in configs and r.get("budget", configs[r["dataset"]]) != configs[r["dataset"]]
    ]
    if stale:
        print(f"# {len(stale)} cached runs were trained under another budget; they are ignored")
        stale_ids = {id(r) for r in stale}
        rows = [r for r in rows if id(r) not in stale_ids]
    done = {(r["dataset"], r["arch"], r["screener"], r["seed"]) for r in rows}
    runs = plan(suites, sgd_lrs, args.seeds, adam_grid, screener_seeds, trained, extras)
    todo = [r for r in runs if r.key not in done]
    cached = len(runs) - len(todo)
    if args.labels:
        todo = [r for r in todo if r.label in args.labels.split(",")]
    bodies = {(ds, a): body for ds, suite in suites.items() for a, body in suite.items()}
    print(f"# {machine_line()}; {cached} cached runs, {len(todo)} to go ({cache})", flush=True)
    if todo and not args.report_only:
        rows += execute(todo, bodies, configs, cache, args.jobs, args.deadline_s)
    left = len(
        [r for r in runs if r.key not in {(x["dataset"], x["arch"], x["screener"], x["seed"]) for x in rows}]
    )
    if left:
        print(f"# stopped with {left} runs left; run the same command again to resume from {cache}")
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"# error: {r['dataset']} {r['arch']} {r['screener']} seed {r['seed']}: {r['error']}")

    grids = ["grid-sgd", "grid-adam"] if adam_grid else ["grid-sgd"]
    labels = [*trained, *(["short-grid-3", "synflow", "grad-norm"] if extras else [])]
    result = analyse(rows, suites, sgd_lrs, args.seeds, grids, labels, screener_seeds)
    md = report(result, rows)
    if args.full and result:
        for p in plots(result, rows, args.plots, labels):
            print(f"# wrote {p}")
        summary = summarise(result, labels)
        md += summary
        if args.markdown:
            args.markdown.write_text("\n".join(md) + "\n")
            print(f"# wrote {args.markdown}")
    if not args.full:
        quick = headline(result, "alrao-sgd", "grid-sgd")
        print(f"fidelity_spearman: {quick:.3f}" if quick is not None else "fidelity_spearman: unavailable")
        return
    for truth in ("grid-sgd", "grid-adam"):
        ours_t, adam_t = headline(result, DEFAULT_SCREENER, truth), headline(result, BASELINE, truth)
        if ours_t is not None and adam_t is not None:
            print(f"# {DEFAULT_SCREENER} vs the {truth} truth: {ours_t:.3f} ({BASELINE}: {adam_t:.3f})")
    ours, adam = headline(result, DEFAULT_SCREENER), headline(result, BASELINE)
    if ours is None or adam is None:
        print("fidelity_spearman: unavailable (runs left)")
        return
    print(f"fidelity_vs_adam: {ours - adam:+.3f}")
    print(f"fidelity_spearman: {ours:.3f}")


def main_heldout(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Study II: plan (printing the run count and an ETA first), train what is missing, report."""
    only = args.only.split(",") if args.only else None
    suites, dropped = heldout_suites(only)
    for d in dropped:
        print(f"# left out (the installed DSL does not parse it): {d}")

    def sgd_lrs(ds: str) -> list[float]:
        return SGD_LRS.get(ds, SGD_LRS["default"])

    configs = {ds: dict(BUDGETS[ds]) for ds in suites}
    cache = args.out or RESULTS / "fidelity-ii.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    also = args.also or [ROOT / "docs" / "data" / "fidelity-full.jsonl"]
    for p in also:
        if not p.exists():
            parser.error(f"--also {p}: no such file")
    rows = load_rows([cache, *also], configs)
    screener_seeds = args.screener_seeds or 2
    runs = plan_heldout(suites, sgd_lrs, args.seeds, screener_seeds)
    done = {(r["dataset"], r["arch"], r["screener"], r["seed"]) for r in rows}
    todo = [r for r in runs if r.key not in done]
    if args.labels:
        todo = [r for r in todo if r.label in args.labels.split(",")]
    bodies = {(ds, a): body for ds, suite in suites.items() for a, body in suite.items()}
    eta = eta_seconds(todo, rows) / max(args.jobs, 1)
    print(
        f"# {machine_line()}; planned {len(runs)} runs, {len(runs) - len(todo)} cached, {len(todo)} to go"
        f" ({cache}); ETA ~{eta / 60:.0f} min with --jobs {args.jobs}",
        flush=True,
    )
    if todo and not args.report_only:
        rows += execute(todo, bodies, configs, cache, args.jobs, args.deadline_s)
    left = len(
        [r for r in runs if r.key not in {(x["dataset"], x["arch"], x["screener"], x["seed"]) for x in rows}]
    )
    if left:
        print(f"# {left} planned runs are not in the caches; run the same command again to resume")
    for r in rows:
        if "error" in r:
            print(f"# error: {r['dataset']} {r['arch']} {r['screener']} seed {r['seed']}: {r['error']}")
    heldout_report(rows, suites, sgd_lrs, args)


def load_rows(caches: list[Path], configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cache lines of every format (1: no curve; 2: with curve), first cache first; a line trained
    under another budget than its dataset's current one is dropped, as in the first study."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str, int]] = set()
    for path in caches:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            r.setdefault("format", 1)
            key = (r["dataset"], r["arch"], r["screener"], r["seed"])
            if r["dataset"] in configs and r.get("budget", configs[r["dataset"]]) != configs[r["dataset"]]:
                continue
            if key not in seen:
                seen.add(key)
                rows.append(r)
    return rows


POOLS = {
    "new": ("new",),
    "report": ("report",),
    "report+new": ("report", "new"),
    "selection": ("selection",),
}
POOL_TITLES = {
    "new": "new architectures (truly held out)",
    "report": "the first study's report half (not truly held out: study I chose defaults on all 32)",
    "report+new": "report half and new architectures together",
    "selection": "the first study's selection half (where switches may be chosen)",
}
HELDOUT_SHOWN = (DEFAULT_SCREENER, BASELINE, "adam@1e-3+2x", *HELDOUT_TRAINED[3:], "alrao-adam")
HELDOUT_NAMES = {
    BASELINE: "adam@1e-3 (same budget)",
    "adam@1e-3+2x": "adam@1e-3 2x (twice epochs and patience)",
    "alrao-adam": "alrao-adam (1e-5, 0.1): regression's product range",
}
# The extrapolation settings compared (method, horizon in multiples of the run's own budget cap;
# None = the fitted asymptote). The one the screener uses is chosen on the selection half.
EXTRAPOLATIONS: list[tuple[str, float | None]] = [
    ("best-observed", None),
    ("power-law", 1.0),
    ("power-law", None),
    ("exp-saturation", 1.0),
    ("exp-saturation", None),
    ("auto", 1.0),
    ("auto", None),
]


def _pool_suites(suites: dict[str, dict[str, Any]], pool: str) -> dict[str, dict[str, Any]]:
    """The pool's architectures per dataset (datasets with fewer than two left out)."""
    out = {
        ds: {a: b for a, b in suite.items() if pool_of(ds, a) in POOLS[pool]} for ds, suite in suites.items()
    }
    return {ds: suite for ds, suite in out.items() if len(suite) >= 2}


def _unit(ds: str) -> str:
    return {"chartext": "bpc", "regression": "MSE"}.get(ds, "pp")


def extrapolated_test(
    row: dict[str, Any], dataset: str, method: str, horizon_caps: float | None, cap_steps: float
) -> tuple[float, float, float] | None:
    """The run's extrapolated test score (value, low, high) in test-score units: the validation
    curve's extrapolation minus its best observed point, added to the test score at the best epoch
    (the validation-to-test gap is taken as the one observed). None for a line without a curve."""
    from archscreen.core.estimate import extrapolate

    curve = row.get("curve")
    if not curve or not curve.get("steps"):
        return None
    if dataset == "chartext":
        vals, higher, bound = [v / math.log(2) for v in curve["val_loss"]], False, 0.0
    elif dataset == "regression":
        vals, higher, bound = curve["val_score"], False, 0.0
    else:
        vals, higher, bound = [100 * v if v is not None else None for v in curve["val_score"]], True, 100.0
    finite_vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not finite_vals:
        return None
    best = max(finite_vals) if higher else min(finite_vals)
    horizon = None if horizon_caps is None else horizon_caps * cap_steps
    if horizon is not None:
        horizon = max(horizon, float(curve["steps"][-1]))
    est = extrapolate(
        curve["steps"], vals, higher_is_better=higher, horizon=horizon, method=method, best_possible=bound
    )
    shift = test_score(row, dataset) - best
    return est.value + shift, est.low + shift, est.high + shift


def _cap_steps(row: dict[str, Any]) -> float:
    """Steps the run's own budget allows: its epoch cap times its steps per epoch."""
    curve = row["curve"]
    per_epoch = curve["steps"][0]
    return float(row["budget"]["max_epochs"] * per_epoch)


def _setting(key: str) -> tuple[str, float | None]:
    """An EXTRAPOLATIONS entry from its table key (``auto @ 1x cap``, ``power-law @ asymptote``)."""
    for method, hz in EXTRAPOLATIONS:
        if key == _setting_key(method, hz):
            return method, hz
    raise KeyError(key)


def _setting_key(method: str, hz: float | None) -> str:
    if method == "best-observed":
        return method
    return f"{method} @ {'asymptote' if hz is None else f'{hz:g}x cap'}"


def heldout_plot(
    rows: dict[tuple[str, str, str, int], dict[str, Any]],
    truths: dict[str, dict[str, Any]],
    archs_by_ds: dict[str, list[str]],
    setting: str,
    out: Path,
) -> Path:
    """Per new architecture (seed 0 of the default): the best observed and the extrapolated test
    score (with its interval) against the best-rate truth, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method, hz = _setting(setting)
    dss = [ds for ds in archs_by_ds if ds in truths and archs_by_ds[ds]]
    fig, axes = plt.subplots(1, len(dss), figsize=(3.6 * len(dss), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], dss, strict=True):
        for a in archs_by_ds[ds]:
            row = rows.get((ds, a, DEFAULT_SCREENER, 0))
            if row is None or "error" in row:
                continue
            truth = truths[ds]["test"][a]
            est = extrapolated_test(row, ds, method, hz, _cap_steps(row))
            ax.scatter([truth], [test_score(row, ds)], color="tab:orange", s=16)
            if est is not None:
                err = [[est[0] - est[1]], [est[2] - est[0]]]
                ax.errorbar([truth], [est[0]], yerr=err, fmt="o", color="tab:blue", ms=4)
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel(f"best-rate test ({_unit(ds)})")
    axes[0][0].set_ylabel("screener's estimate")
    axes[0][0].scatter([], [], color="tab:orange", label="best observed")
    axes[0][0].errorbar([], [], fmt="o", color="tab:blue", label=f"extrapolated ({setting})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _estimate_table(
    rows: dict[tuple[str, str, str, int], dict[str, Any]],
    truths: dict[str, dict[str, Any]],
    archs_by_ds: dict[str, list[str]],
    label: str,
    seeds: int,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per extrapolation setting and dataset: MAE against the best-of-both test score (in the
    dataset's units and relative, %), interval coverage, and how many runs it covers."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, hz in EXTRAPOLATIONS:
        key = _setting_key(method, hz)
        per_ds: dict[str, dict[str, float]] = {}
        for ds, archs in archs_by_ds.items():
            if ds not in truths or not archs:
                continue
            errs, rels, cover = [], [], []
            for a in archs:
                for s in range(seeds):
                    row = rows.get((ds, a, label, s))
                    if row is None or "error" in row:
                        continue
                    est = extrapolated_test(row, ds, method, hz, _cap_steps(row))
                    if est is None:
                        continue
                    truth = truths[ds]["test"][a]
                    errs.append(abs(est[0] - truth))
                    rels.append(100 * abs(est[0] - truth) / abs(truth))
                    cover.append(1.0 if est[1] <= truth <= est[2] else 0.0)
            if errs:
                per_ds[ds] = {
                    "mae": _mean(errs),
                    "rel": _mean(rels),
                    "coverage": _mean(cover),
                    "n": len(errs),
                }
        out[key] = per_ds
    return out


def _loss_like(ds: str, score: float) -> float:
    """The test score as a positive quantity where lower is better: error rate (points), bits per
    character or MSE, so one multiplicative correction fits every task."""
    return 100.0 - score if ds not in LOWER_IS_BETTER else score


def _from_loss_like(ds: str, value: float) -> float:
    return 100.0 - value if ds not in LOWER_IS_BETTER else value


def _family(ds: str) -> str:
    return {"chartext": "language model", "regression": "regression"}.get(ds, "classification")


def calibration_table(
    rows: dict[tuple[str, str, str, int], dict[str, Any]],
    truths_sel: dict[str, dict[str, Any]],
    truths_eval: dict[str, dict[str, Any]],
    archs_sel: dict[str, list[str]],
    archs_eval: dict[str, list[str]],
    label: str,
    seeds: int,
    level: float = 0.9,
) -> dict[str, Any]:
    """A bias correction and a split-conformal interval for the best observed score, fitted on the
    selection half and measured on ``archs_eval``.

    Per task family, the residual of a run is ``log(truth / observed)`` of the loss-like score
    (error rate, bpc, MSE). The corrected estimate multiplies the observed loss-like score by
    ``exp(median residual)``; the interval by ``exp`` of the residuals' ``(1-level)/2`` and
    ``(1+level)/2`` order statistics (split conformal, Vovk et al. 2005; the finite-sample rank
    ``ceil((n+1) q)``). A family without selection-half runs (regression) gets none.
    """
    resid: dict[str, list[float]] = {}
    for ds, archs in archs_sel.items():
        if ds not in truths_sel:
            continue
        for a in archs:
            for s in range(seeds):
                row = rows.get((ds, a, label, s))
                if row is None or "error" in row:
                    continue
                obs, truth = _loss_like(ds, test_score(row, ds)), _loss_like(ds, truths_sel[ds]["test"][a])
                if obs > 0 and truth > 0 and math.isfinite(obs):
                    resid.setdefault(_family(ds), []).append(math.log(truth / obs))
    fits: dict[str, dict[str, float]] = {}
    for fam, rs in resid.items():
        rs = sorted(rs)
        n = len(rs)

        def order_stat(q: float, rs: list[float] = rs, n: int = n) -> float:
            k = min(max(math.ceil((n + 1) * q), 1), n)
            return rs[k - 1]

        fits[fam] = {
            "n": n,
            "median": rs[n // 2] if n % 2 else 0.5 * (rs[n // 2 - 1] + rs[n // 2]),
            "low": order_stat((1 - level) / 2),
            "high": order_stat((1 + level) / 2),
        }
    per_ds: dict[str, dict[str, float]] = {}
    for ds, archs in archs_eval.items():
        fit = fits.get(_family(ds))
        if ds not in truths_eval or fit is None:
            continue
        raw, corrected, cover, width = [], [], [], []
        for a in archs:
            truth = truths_eval[ds]["test"][a]
            for s in range(seeds):
                row = rows.get((ds, a, label, s))
                if row is None or "error" in row:
                    continue
                obs = test_score(row, ds)
                ll = _loss_like(ds, obs)
                est = _from_loss_like(ds, ll * math.exp(fit["median"]))
                ends = sorted(_from_loss_like(ds, ll * math.exp(fit[k])) for k in ("low", "high"))
                raw.append(abs(obs - truth))
                corrected.append(abs(est - truth))
                cover.append(1.0 if ends[0] <= truth <= ends[1] else 0.0)
                width.append(ends[1] - ends[0])
        if raw:
            per_ds[ds] = {
                "raw": _mean(raw),
                "corrected": _mean(corrected),
                "coverage": _mean(cover),
                "width": _mean(width),
                "n": len(raw),
            }
    return {"fits": fits, "datasets": per_ds, "level": level}


def heldout_report(
    rows_list: list[dict[str, Any]],
    suites: dict[str, dict[str, Any]],
    sgd_lrs: Callable[[str], list[float]],
    args: argparse.Namespace,
) -> None:
    """Study II's tables (printed, and written as Markdown with ``--markdown``)."""
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in rows_list}
    seeds = args.seeds
    screener_seeds = args.screener_seeds or 2
    grids = ["grid-sgd", "grid-adam"]
    md: list[str] = [
        "# Fidelity study II: tables",
        "",
        f"Generated by `bench/fidelity.py --heldout` ({machine_line()}).",
        "",
    ]

    def emit(line: str = "") -> None:
        md.append(line)
        print(line)

    emit("## The split")
    emit("")
    emit("| dataset | selection half | report half | new (held out) |")
    emit("|---|---|---|---|")
    for ds, suite in suites.items():
        cols = [
            ", ".join(a for a in suite if pool_of(ds, a) == p) or "-" for p in ("selection", "report", "new")
        ]
        emit(f"| {ds} | " + " | ".join(cols) + " |")

    labels = [
        *list(HELDOUT_SHOWN),
        "alrao-adam[1e-4..0.1]+curvelog",
        "alrao-adam[1e-4..0.1]+recentre@5w2",
    ]
    results = {
        pool: analyse(rows_list, _pool_suites(suites, pool), sgd_lrs, seeds, grids, labels, screener_seeds)
        for pool in POOLS
    }
    headline_pools = ("new", "report+new", "report", "selection")
    for pool in headline_pools:
        result = results[pool]
        emit(f"\n## {POOL_TITLES[pool]}\n")
        emit(
            "| dataset (archs) | truth | screener | Spearman val loss | Spearman test | top-1 regret "
            "| estimate error (best observed) | relative % | grid/own steps |"
        )
        emit("|---|---|---|---|---|---|---|---|---|")
        for key, cell in result.items():
            ds, truth = key.split("/")
            ranked = len(cell["archs"]) >= 3  # a rank correlation over two is only +-1: shown as "-"
            for lab, m in cell["screeners"].items():
                name = HELDOUT_NAMES.get(lab, lab)
                sp = f"{m['spearman']:.3f}" if ranked else "-"
                sp_test = f"{m.get('spearman_test', math.nan):.3f}" if ranked else "-"
                est = m.get("estimate_error", math.nan)
                emit(
                    f"| {ds} ({len(cell['archs'])}) | {truth.removeprefix('grid-')} | {name} "
                    f"| {sp} | {sp_test} | {m['top1_regret']:.3g} "
                    f"| {est:.3g} {_unit(ds)} | {m.get('estimate_rel', math.nan):.2f} "
                    f"| {m['compute_ratio']:.1f} |"
                )
        hints = [(key, lab, dec) for key, cell in result.items() for lab, dec in cell["hint_decades"].items()]
        if hints:
            emit("")
            emit("| cell | hint | median error (decades) |")
            emit("|---|---|---|")
            for key, lab, dec in hints:
                emit(f"| {key} | {lab} | {dec:.2f} |")
        capped = [
            f"{key}: {', '.join(cell['truth']['capped'])}"
            for key, cell in result.items()
            if key.endswith(BEST_OF_BOTH) and cell["truth"]["capped"]
        ]
        edge = [
            f"{key}: {', '.join(cell['truth']['edge'])}"
            for key, cell in result.items()
            if not key.endswith(BEST_OF_BOTH) and cell["truth"]["edge"]
        ]
        if capped:
            emit("\nBest rate at the epoch cap in a seed (best-of-both): " + "; ".join(capped) + ".")
        if edge:
            emit("\nBest rate at the grid's edge: " + "; ".join(edge) + ".")

    # Extrapolated estimate: the setting is chosen on the selection half (the curve-logging rerun
    # of the default), then reported on the new architectures.
    sel = results["selection"]
    new = results["new"]
    truths_sel = {k.split("/")[0]: c["truth"] for k, c in sel.items() if k.endswith(BEST_OF_BOTH)}
    truths_new = {k.split("/")[0]: c["truth"] for k, c in new.items() if k.endswith(BEST_OF_BOTH)}
    archs_sel = {ds: [a for a in suite if pool_of(ds, a) == "selection"] for ds, suite in suites.items()}
    archs_new = {ds: [a for a in suite if pool_of(ds, a) == "new"] for ds, suite in suites.items()}
    tables = {
        "selection half, default rerun with curves": _estimate_table(
            rows, truths_sel, archs_sel, "alrao-adam[1e-4..0.1]+curvelog", 1
        ),
        "new architectures, default": _estimate_table(
            rows, truths_new, archs_new, DEFAULT_SCREENER, screener_seeds
        ),
        "new architectures, default under the curve-aware budget": _estimate_table(
            rows, truths_new, archs_new, "alrao-adam[1e-4..0.1]+curve", screener_seeds
        ),
    }
    sel_table = tables["selection half, default rerun with curves"]
    scored = {k: _mean([v["rel"] for v in per.values()]) for k, per in sel_table.items() if per}
    if scored:
        chosen = min(scored, key=lambda k: scored[k])
        print(f"# extrapolation setting with the lowest mean relative MAE on the selection half: {chosen}")
        if args.markdown:
            path = heldout_plot(rows, truths_new, archs_new, chosen, args.plots / "fidelity-ii-estimate.png")
            print(f"# wrote {path}")
    for title, table in tables.items():
        dss = list(dict.fromkeys(ds for per in table.values() for ds in per))
        emit(f"\n## Estimate of the best-rate test score: {title}\n")
        emit(
            "MAE against the best-of-both truth (pp; chartext bpc; regression MSE), its relative size "
            "(% of the truth) and the 90% interval's coverage, per run (n runs).\n"
        )
        emit(
            "| setting | " + " | ".join(f"{ds} MAE / rel % / coverage (n)" for ds in dss) + " | mean rel % |"
        )
        emit("|---|" + "---|" * (len(dss) + 1))
        for key, per in table.items():
            cols = [
                "-"
                if ds not in per
                else f"{per[ds]['mae']:.3g} / {per[ds]['rel']:.2f} / "
                f"{per[ds]['coverage']:.2f} ({per[ds]['n']:.0f})"
                for ds in dss
            ]
            mean_rel = _mean([per[ds]["rel"] for ds in dss if ds in per]) if per else math.nan
            emit(f"| {key} | " + " | ".join(cols) + f" | {mean_rel:.2f} |")

    # A bias correction and a conformal interval, fitted on the selection half (study I's default
    # runs, both seeds), measured on the new architectures and on the report half.
    cal_rows = [("new architectures", truths_new, archs_new)]
    truths_rep = {
        k.split("/")[0]: c["truth"] for k, c in results["report"].items() if k.endswith(BEST_OF_BOTH)
    }
    archs_rep = {ds: [a for a in suite if pool_of(ds, a) == "report"] for ds, suite in suites.items()}
    cal_rows.append(("report half", truths_rep, archs_rep))
    emit("\n## Estimate calibrated on the selection half (bias correction, split-conformal 90% interval)\n")
    first = calibration_table(
        rows, truths_sel, truths_new, archs_sel, archs_new, DEFAULT_SCREENER, screener_seeds
    )
    fits = ", ".join(
        f"{fam}: n {f['n']:.0f}, median {f['median']:+.3f}, interval [{f['low']:+.3f}, {f['high']:+.3f}]"
        for fam, f in first["fits"].items()
    )
    emit(f"Residuals log(truth / observed) of the loss-like score on the selection half: {fits}.\n")
    emit("| pool | dataset | runs | MAE best observed | MAE corrected | interval coverage | mean width |")
    emit("|---|---|---|---|---|---|---|")
    for pool_name, truths_p, archs_p in cal_rows:
        cal = calibration_table(
            rows, truths_sel, truths_p, archs_sel, archs_p, DEFAULT_SCREENER, screener_seeds
        )
        for ds, m in cal["datasets"].items():
            emit(
                f"| {pool_name} | {ds} | {m['n']:.0f} | {m['raw']:.3g} {_unit(ds)} | {m['corrected']:.3g} "
                f"| {m['coverage']:.2f} | {m['width']:.3g} |"
            )

    # The curve-aware budget against the fixed one, on the new architectures: compute and outcome.
    # Each part of it alone too (CURVE_PARTS): steps against the fixed budget, and the estimate.
    emit("\n## Curve-aware budget against the fixed budget (new architectures)\n")
    emit(
        "| rule | dataset | runs | steps, rule / fixed | stopped by plateau / at the cap | epochs, mean "
        "| estimate error, fixed → rule |"
    )
    emit("|---|---|---|---|---|---|---|")
    for rule in ("alrao-adam[1e-4..0.1]+curve", *CURVE_PARTS):
        for ds, archs in archs_new.items():
            pairs = [
                (a, rows[(ds, a, rule, s)], rows[(ds, a, DEFAULT_SCREENER, s)])
                for a in archs
                for s in range(screener_seeds)
                if (ds, a, rule, s) in rows and (ds, a, DEFAULT_SCREENER, s) in rows
            ]
            if not pairs or ds not in truths_new:
                continue
            ratio = sum(c["steps"] for _, c, _ in pairs) / max(sum(f["steps"] for _, _, f in pairs), 1)
            plateau = sum(1 for _, c, _ in pairs if c["stopped_because"] == "plateau")
            at_cap = sum(1 for _, c, _ in pairs if c["stopped_because"] == "max_epochs")
            ep_c = _mean([c["epochs"] for _, c, _ in pairs])
            ep_f = _mean([f["epochs"] for _, _, f in pairs])
            truth = truths_new[ds]["test"]
            err_c = _mean([abs(test_score(c, ds) - truth[a]) for a, c, _ in pairs])
            err_f = _mean([abs(test_score(f, ds) - truth[a]) for a, _, f in pairs])
            emit(
                f"| {rule.removeprefix('alrao-adam[1e-4..0.1]')} | {ds} | {len(pairs)} | {ratio:.2f} "
                f"| {plateau} / {at_cap} | {ep_c:.1f} vs {ep_f:.1f} | {err_f:.3g} → {err_c:.3g} {_unit(ds)} |"
            )

    # Item 5: the body-range switch on the deep sigmoid nets and on the selection half.
    emit(
        "\n## Body rate range (1e-3, 0.1) and re-centring after 5 or 10 epochs against the default "
        "(1e-4, 0.1): saturating nets\n"
    )
    emit(
        "| dataset | arch | pool | truth test | default (seeds) | body range (seeds) "
        "| re-centred after 5 (seeds) | after 10 (seeds) |"
    )
    emit("|---|---|---|---|---|---|---|---|")
    body = "alrao-adam[1e-4..0.1]+body[1e-3..0.1]"
    recentre = "alrao-adam[1e-4..0.1]+recentre@5"
    recentre10 = "alrao-adam[1e-4..0.1]+recentre@10"
    for ds, suite in suites.items():
        for a in suite:
            if not any(k in a for k in ("sigmoid", "tanh")):
                continue
            tr = results["selection" if pool_of(ds, a) == "selection" else "report+new"].get(
                f"{ds}/{BEST_OF_BOTH}"
            )
            if tr is None or a not in tr["truth"]["test"]:
                continue
            cols = []
            for lab in (DEFAULT_SCREENER, body, recentre, recentre10):
                xs = [
                    test_score(rows[(ds, a, lab, s)], ds)
                    for s in range(screener_seeds)
                    if (ds, a, lab, s) in rows
                ]
                cols.append(", ".join(f"{x:.3g}" for x in xs) or "-")
            emit(
                f"| {ds} | {a} | {pool_of(ds, a)} | {tr['truth']['test'][a]:.3g} | " + " | ".join(cols) + " |"
            )

    if args.markdown:
        args.markdown.write_text("\n".join(md) + "\n")
        print(f"# wrote {args.markdown}")
    # Last lines: the default against the same-budget Adam bar, mean Spearman over the datasets
    # (best-of-both), on the new architectures and on report half + new.
    for pool in ("new", "report+new"):
        res = {k: c for k, c in results[pool].items() if len(c["archs"]) >= 3}
        ours, adam = headline(res, DEFAULT_SCREENER), headline(res, BASELINE)
        if ours is not None and adam is not None:
            print(f"fidelity_ii_{pool.replace('+', '_')}_spearman: {ours:.3f} (adam@1e-3: {adam:.3f})")


def summarise(result: dict[str, Any], labels: list[str]) -> list[str]:
    """Screener × cell matrices: Spearman in every cell, then against the best-of-both truth the
    top-1 regret and the estimate error per dataset, with means over the datasets."""
    cells = list(result)
    datasets = list(dict.fromkeys(k.split("/")[0] for k in cells))
    short = {"grid-sgd": "SGD", "grid-adam": "Adam", BEST_OF_BOTH: "both"}
    md = [
        "\n### Spearman against each truth\n",
        "| screener | "
        + " | ".join(f"{k.split('/')[0]} {short[k.split('/')[1]]}" for k in cells)
        + " | mean (both) |",
        "|---|" + "---|" * (len(cells) + 1),
    ]
    print("\n## Spearman per cell (mean over the datasets against best-of-both last)")
    for lab in labels:
        vals = [result[k]["screeners"].get(lab, {}).get("spearman") for k in cells]
        if all(v is None for v in vals):
            continue
        mean = headline(result, lab)
        n_both = sum(1 for k in cells if k.endswith(BEST_OF_BOTH) and lab in result[k]["screeners"])
        complete = n_both == len(datasets)
        mean_s = f"{mean:.3f}" if mean is not None and complete else "-"
        md.append(
            f"| {lab} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + f" | {mean_s} |"
        )
        print(f"{lab:<22} " + " ".join("   -  " if v is None else f"{v:6.3f}" for v in vals) + f"  {mean_s}")
    both = [k for k in cells if k.endswith(BEST_OF_BOTH)]
    for metric, title in (("top1_regret", "top-1 regret"), ("estimate_error", "estimate error")):
        md += [
            f"\n### {title.capitalize()} against the best-of-both truth (accuracy points; chartext: bits per"
            " character)\n",
            "| screener | " + " | ".join(k.split("/")[0] for k in both) + " | mean of classification |",
            "|---|" + "---|" * (len(both) + 1),
        ]
        for lab in labels:
            vals = [result[k]["screeners"].get(lab, {}).get(metric) for k in both]
            if all(v is None for v in vals):
                continue
            cls = [
                v for k, v in zip(both, vals, strict=True) if v is not None and not k.startswith("chartext")
            ]
            n_cls = sum(1 for k in both if not k.startswith("chartext"))
            mean_s = f"{_mean(cls):.2f}" if len(cls) == n_cls and cls else "-"
            md.append(
                f"| {lab} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals) + f" | {mean_s} |"
            )
    md += [
        "\n### Learning-rate hint: median error in decades from the grid's best rate\n",
        "| hint | " + " | ".join(k for k in cells if not k.endswith(BEST_OF_BOTH)) + " |",
        "|---|" + "---|" * sum(1 for k in cells if not k.endswith(BEST_OF_BOTH)),
    ]
    for lab in dict.fromkeys(x for v in HINTS.values() for x in v):
        vals = [result[k]["hint_decades"].get(lab) for k in cells if not k.endswith(BEST_OF_BOTH)]
        if any(v is not None for v in vals):
            md.append(f"| {lab} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals) + " |")
    return md


if __name__ == "__main__":
    main()
