"""Architecture search at equal compute: archscreen's search against what users run instead (issue 29).

For each cell (a dataset and a search space from ``examples/spaces/``) and each sampler seed, four
methods get the same budgets of training CPU-seconds, ``B``, ``3B`` and ``9B``, where ``B`` is the
CPU-seconds of the first 20 trials of a one-run-each Alrao screening of the space (TPE, seed 0,
the default screening budget): the price of screening 20 hand-written candidates today.

* ``archscreen``: what the service does: Optuna TPE samples points of the space; each point is
  screened ONCE by Alrao (the default screener and budget, ``core/defaults.py``); successive
  halving across the runs (``core/asha.py``: η=3, the extrapolated key, continuing runs from
  their checkpoints); when the budget is nearly spent, the leader is trained to the full cap and
  finite-difference tuned (``fd2-adam``). Delivered: the tuned model (the best by validation loss
  when several starts ran). The pipeline's settings are a :class:`Variant`: ASHA's first rung
  ``r``, the trial limit (the service's 500, or none: a budgeted search runs until its budget),
  and the tuning start (``multi``: the Switch posterior's three quartiles from fresh weights;
  ``screen-weights``: one run from the screening run's weights at the posterior's mean rate, the
  promotion's default). The first run used ``r1-limit500-multi``; the default, ``r1-screen``, was
  chosen among r = 1, 3, 9 (no limit, screen-weights) on selection seeds 100 and 101
  (``--compare-variants``), before the report seeds ran.
* ``optuna-hyperband``: Optuna's ``TPESampler`` + ``HyperbandPruner`` (min 1, max the cap, η=3)
  over the space × Adam's learning rate (log-uniform over Alrao's own range, 1e-4..0.1): each
  trial trains with Adam at its rate under the same budget, reporting the validation loss every
  epoch. Delivered: the COMPLETE trial with the best validation loss (Optuna's ``best_trial``).
* ``random``: Optuna's ``RandomSampler`` over the space × the rate, one full run each.
* ``archscreen-adam``: the ``archscreen`` pipeline with one Adam run at 1e-3 in place of Alrao
  (the same scheduler, tuning from 1e-3): what Alrao itself buys.

The score delivered is the test accuracy of the final model, the one the user takes home, read
at each budget: for the two Optuna methods from one run to 9B (the best COMPLETE trial among
those ended within the budget); for the two archscreen pipelines, whose end (train the leader,
tune) depends on the budget, by forking the search when ``spent + the finish's estimated cost``
reaches the budget: the fork finishes (its CPU counts toward that budget) while the main search
goes on to the next budget. A fork is what a search given that budget alone would do (the
search before it is budget-agnostic: ASHA is asynchronous and the sampler sees the same
history), so each budget is run once. CPU-seconds are the bench process's CPU time (user + sys,
``time.process_time``, one torch thread) around training and evaluation; the samplers' own time
is recorded apart (``sampler_s``).

Deliberate simplifications, each named in docs/search.md beside the figures:

* the archscreen pipeline promotes the top 1 (the service's ``policy.top_k`` default) and the
  leader is trained straight to the cap (the scheduler's ``complete_leader`` goes rung by rung;
  the same epochs);
* the trials run one at a time per process (the service runs ``parallel`` at once: ASHA's
  promotions then differ; one at a time is the equal-compute comparison);
* a trial paused by ASHA is told to Optuna as PRUNED at its first pause (TPE learns from its
  intermediate values at once); a later promotion is not told again.

Resumable: every (cell, method, seed) result is a line of ``bench/results/search.jsonl``. The
report (tables in docs/search.md between markers, ``docs/img/search.png``) and the last line,
``search_vs_optuna: X``, the delivered-score difference at budget B in points (archscreen minus
Optuna + Hyperband, mean over the cells and seeds run), come from it.

    python bench/search.py --jobs 2                     # every cell, 3 seeds, B, 3B, 9B
    python bench/search.py --cells digits-mlp --seeds 3
    python bench/search.py --report-only
    python bench/search.py --quick                      # a CI check: tiny budget, one cell
    python bench/search.py --variant r3-screen --seed-list 100 101 --results sel.jsonl
    python bench/search.py --report-only --compare-variants --seed-list 100 101 --results sel.jsonl
    python bench/search.py --grid-check                 # the top 5 points per cell on a rate grid
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "search.jsonl"
METHODS = ("archscreen", "optuna-hyperband", "random", "archscreen-adam")
CALIBRATION_TRIALS = 20
ADAM_LR_RANGE = (1e-4, 0.1)  # Alrao-Adam's default range (core/screening.py): both search the same rates
ARCHSCREEN_FIXED_LR = 1e-3
ETA = 3
SERVICE_MAX_TRIALS = 500  # archscreen.config.SearchConfig.trials' limit when a study names a count


@dataclass(frozen=True)
class Variant:
    """The archscreen pipeline's settings that the bench compares (both archscreen methods use
    the same): ASHA's first rung ``r``, the trial limit (None: until the budget), the tuning start."""

    min_epochs: int
    max_trials: int | None
    tuning_start: str  # "multi" (three posterior quartiles) or "screen-weights"


VARIANTS = {
    # the first run's settings (stop 31): the service's defaults of then
    "r1-limit500-multi": Variant(1, SERVICE_MAX_TRIALS, "multi"),
    # the next to try (docs/search.md): no trial limit, the screen-weights stage, r = 1, 3, 9
    "r1-screen": Variant(1, None, "screen-weights"),
    "r3-screen": Variant(3, None, "screen-weights"),
    "r9-screen": Variant(9, None, "screen-weights"),
}
FIRST_VARIANT = "r1-limit500-multi"  # rows written before variants existed ran these settings
# chosen on the selection seeds 100 and 101 (digits, MNIST-1D, the table; B and 3B) by the rule of
# :func:`variants_table`, before the report seeds 0-2 ran: docs/search.md has the table
DEFAULT_VARIANT = "r1-screen"


def variant_of(row: dict) -> str:
    return str(row.get("variant", FIRST_VARIANT))


@dataclass(frozen=True)
class Cell:
    name: str
    dataset: str  # a built-in name, or "breast-cancer" (converted as an upload converts it)
    space: str  # a file under examples/spaces/
    max_budget: int = 9  # the largest multiple of B run (cut where the 2-core box cannot afford 9B)


CELLS = {
    c.name: c
    for c in (
        Cell("digits-mlp", "digits", "mlp_space.yaml"),
        Cell("table-mlp", "breast-cancer", "mlp_space.yaml"),
        # up to 3B: 9B of these cells (about 3 CPU-hours) did not fit the 2-core box's session
        # (docs/search.md says so beside the table)
        Cell("mnist1d-mlp", "mnist1d", "mlp_space.yaml", max_budget=3),
        Cell("digits-cnn", "digits", "cnn_space.yaml", max_budget=3),
    )
}


# ----------------------------------------------------------------------------------------- data


def breast_cancer_npz(cache_dir: Path) -> Path:
    """scikit-learn's breast-cancer table as a team uploads it (raw Parquet, string label),
    converted by the upload's own code with its default preprocessing (issue 28)."""
    out = cache_dir / "breast-cancer.npz"
    if out.exists():
        return out
    from table_preprocessing import breast_cancer_parquet

    from archscreen.core.data.check import inspect
    from archscreen.core.table_options import TableOptions

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        table = breast_cancer_parquet(Path(tmp) / "bc.parquet")
        part = cache_dir / "breast-cancer.part.npz"
        inspect(table, "parquet", label_column="diagnosis", out=part, max_bytes=2**30, options=TableOptions())
        part.replace(out)
    return out


@dataclass
class Problem:
    """One cell's data, the dataset's facts for point validation, and the space."""

    data: Any
    info: Any
    space: Any
    task: str


def load_problem(cell: Cell) -> Problem:
    from archscreen.core.data import get_dataset, load_dataset
    from archscreen.core.spec.space import parse_space

    name = cell.dataset
    if name == "breast-cancer":
        name = str(breast_cancer_npz(ROOT / "bench" / "results" / "data"))
    dataset = get_dataset(name)
    info = dataset.info()
    return Problem(
        load_dataset(name), info, parse_space(ROOT / "examples" / "spaces" / cell.space), info.task
    )


# ------------------------------------------------------------------------------------- training


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the CPU-seconds it took in this process."""
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def budget_config(seed: int, max_epochs: int | None = None) -> Any:
    """The default screening budget (core/defaults.py), with the run's seed."""
    from archscreen.core.screening import screening_run

    _, config = screening_run({}, seed=seed)
    if max_epochs is not None:
        from dataclasses import replace

        config = replace(config, max_epochs=max_epochs)
    return config


def test_score(result: Any) -> float:
    return float(result.test_accuracy) if result.test_accuracy is not None else math.nan


def ask_point(study: Any, problem: Problem, with_lr: bool) -> tuple[Any, Any, float | None]:
    """Ask until a point fits the dataset (refused points are told PRUNED, as the service does)."""
    import optuna

    from archscreen.core.spec.space import PointRefused, sample_point

    while True:
        trial = study.ask()
        try:
            point = sample_point(problem.space, trial, problem.info)
        except PointRefused:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        lr = trial.suggest_float("lr", *ADAM_LR_RANGE, log=True) if with_lr else None
        return trial, point, lr


# ------------------------------------------------------------------------- Optuna's own methods


def optuna_search(problem: Problem, seed: int, max_cpu: float, pruned: bool, max_epochs: int | None) -> dict:
    """TPE + Hyperband (``pruned``) or random search over the space × Adam's rate, one trial at a
    time until ``max_cpu`` CPU-seconds of training are spent. The trace has one entry per trial."""
    import optuna

    from archscreen.core.screening import FixedRateScreener
    from archscreen.core.training.loop import TrainingCancelled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = budget_config(seed, max_epochs)
    if pruned:
        sampler: Any = optuna.samplers.TPESampler(seed=seed)
        pruner: Any = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=config.max_epochs, reduction_factor=ETA
        )
    else:
        sampler, pruner = optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    spent, sampler_s, trace = 0.0, 0.0, []
    while spent < max_cpu:
        (trial, point, lr), s = timed(lambda: ask_point(study, problem, with_lr=True))
        sampler_s += s

        def report(p: Any, trial: Any = trial) -> None:
            trial.report(float(p.record.val_loss), p.epoch)
            if trial.should_prune():
                raise TrainingCancelled

        screener = FixedRateScreener(lr=lr, optimizer="adam")
        result, cpu = timed(
            functools.partial(screener.screen, point.document, problem.data, config, callback=report)
        )
        spent += cpu
        complete = result.stopped_because != "cancelled" and math.isfinite(result.val_loss)
        state = optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.PRUNED
        study.tell(trial, float(result.val_loss) if complete else None, state=state)
        trace.append(
            {
                "cpu": spent,
                "complete": complete,
                "val_loss": float(result.val_loss),
                "test": test_score(result),
                "epochs": result.epochs,
                "lr": lr,
                "params": point.params,
            }
        )
    return {"trace": trace, "spent": spent, "sampler_s": sampler_s}


def delivered_from_trace(trace: list[dict], budget: float) -> dict | None:
    """What the user takes home at ``budget``: the COMPLETE trial with the lowest validation loss
    among those ended within it (Optuna's ``best_trial`` at that moment)."""
    done = [t for t in trace if t["complete"] and t["cpu"] <= budget and math.isfinite(t["val_loss"])]
    if not done:
        return None
    best = min(done, key=lambda t: t["val_loss"])
    return {
        "test": best["test"],
        "val_loss": best["val_loss"],
        "lr": best["lr"],
        "params": best["params"],
        "spent": max([t["cpu"] for t in trace if t["cpu"] <= budget], default=0.0),
        "trials": sum(1 for t in trace if t["cpu"] <= budget),
    }


# ------------------------------------------------------------------- archscreen's search (ASHA)


@dataclass
class RunInfo:
    trial: Any
    point: Any
    result: Any = None
    cpu: float = 0.0
    told: bool = False


@dataclass
class Pipeline:
    """archscreen's search: TPE asks, one screening run per point, ASHA across the runs."""

    problem: Problem
    seed: int
    alrao: bool
    workdir: Path
    full_run_cpu: float  # one full screening run's CPU-seconds: B / the calibration's trials
    max_epochs: int | None = None
    variant: Variant = field(default_factory=lambda: VARIANTS[DEFAULT_VARIANT])
    runs: dict[str, RunInfo] = field(default_factory=dict)
    spent: float = 0.0
    sampler_s: float = 0.0

    def __post_init__(self) -> None:
        import optuna

        from archscreen.core.asha import AshaScheduler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.config = budget_config(self.seed, self.max_epochs)
        self.study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=self.seed)
        )
        self.asha = AshaScheduler(
            max_epochs=self.config.max_epochs,
            min_epochs=min(self.variant.min_epochs, self.config.max_epochs),
            reduction_factor=ETA,
        )

    def screener(self) -> Any:
        from archscreen.core.screening import FixedRateScreener, screening_run

        if self.alrao:
            return screening_run({}, seed=self.seed)[0]
        return FixedRateScreener(lr=ARCHSCREEN_FIXED_LR, optimizer="adam")

    def train(self, run_id: str, epochs: int, ckpt_dir: Path) -> tuple[Any, float]:
        """Continue ``run_id`` from its checkpoint to ``epochs`` epochs (the loop resumes exactly)."""
        from dataclasses import replace

        info = self.runs[run_id]
        config = replace(self.config, max_epochs=epochs)
        screener = self.screener()
        ckpt = ckpt_dir / f"{run_id}.pt"
        return timed(
            lambda: screener.screen(info.point.document, self.problem.data, config, checkpoint_path=ckpt)
        )

    def step(self) -> None:
        """One scheduler decision: a promotion, or a new trial's first rung."""
        import optuna

        from archscreen.core.asha import rung_value

        limit = self.variant.max_trials
        if limit is not None and len(self.runs) >= limit and not self.asha.closed:
            self.asha.close()  # the service's trial limit: only promotions from here on
        job = self.asha.get_job()
        if job is None:
            if self.asha.closed:
                return
            (trial, point, _), s = timed(lambda: ask_point(self.study, self.problem, with_lr=False))
            self.sampler_s += s
            self.runs[str(trial.number)] = RunInfo(trial, point)
            self.asha.add_runs([str(trial.number)])
            return
        result, cpu = self.train(job.run_id, job.epochs, self.workdir)
        info = self.runs[job.run_id]
        info.result, info.cpu = result, info.cpu + cpu
        self.spent += cpu
        value = rung_value(result.curves, job.epochs, self.problem.task, max_epochs=self.config.max_epochs)
        self.asha.report(job.run_id, value)
        if not info.told:
            status = self.asha.status(job.run_id)
            v = value if math.isfinite(value) else None
            if status == "completed" and v is not None:
                self.study.tell(info.trial, v)
                info.told = True
            elif status in ("paused", "completed"):
                if v is not None:
                    info.trial.report(v, job.epochs)
                self.study.tell(info.trial, state=optuna.trial.TrialState.PRUNED)
                info.told = True

    def leader(self) -> str | None:
        """What the service promotes (``/ranking``, ``store/ranking.py``): the highest rung
        reached, then the Switch model's validation loss there (the ranking metric's default)."""
        reported = [r for r, i in self.runs.items() if i.result is not None]
        if not reported:
            return None

        def key(r: str) -> tuple[int, float]:
            res = self.runs[r].result
            return (-self.asha.epochs_of(r), res.val_loss if math.isfinite(res.val_loss) else math.inf)

        return min(reported, key=key)

    def starts(self, result: Any) -> list[float]:
        """The tuning runs' initial rates: the posterior's quartiles (``multi``), or its weighted
        geometric mean (``screen-weights``, one run from the screening's weights); 1e-3 without Alrao."""
        from archscreen.core.tuning import initial_lr_from_screen, posterior_starts

        if not self.alrao:
            return [ARCHSCREEN_FIXED_LR]
        if self.variant.tuning_start == "screen-weights":
            return [initial_lr_from_screen(result, ADAM_LR_RANGE)]
        return posterior_starts(result)

    def init_state(self, result: Any, checkpoint: Path) -> dict | None:
        """``screen-weights``: the screening run's kept weights (an Alrao run's body and the copy
        its Switch posterior weights most, as the service's promotion does; a fixed-rate run's
        model as it is). ``multi``: None (a fresh initialisation)."""
        from archscreen.core.tuners.stage import chosen_copy, plain_state_from_alrao, screening_weights

        if self.variant.tuning_start != "screen-weights":
            return None
        state = screening_weights(checkpoint)
        return plain_state_from_alrao(state, chosen_copy(result)) if self.alrao else state

    def finish_cost(self) -> float:
        """The estimated CPU of :meth:`finish` now, in full screening runs (``full_run_cpu``, the
        calibration's mean: a run's first epochs carry its set-up and would overstate it): the rest
        of the leader's run, then one per tuning start."""
        lead = self.leader()
        if lead is None:
            return 0.0
        info = self.runs[lead]
        starts = len(self.starts(info.result))
        left = max(self.config.max_epochs - info.result.epochs, 0) / self.config.max_epochs
        return self.full_run_cpu * (left + starts)

    @property
    def exhausted(self) -> bool:
        """The trial limit is reached and nothing is left to promote: the search is over."""
        return self.asha.done

    def finish(self, budget: float) -> dict:
        """A fork: the leader trained to the cap (from a copy of the checkpoints), tuned, delivered.
        The main search is left as it was."""
        from archscreen.core.tuning import get_tuner

        lead = self.leader()
        assert lead is not None
        fork = self.workdir / "fork"
        fork.mkdir(exist_ok=True)
        if (self.workdir / f"{lead}.pt").exists():
            shutil.copy2(self.workdir / f"{lead}.pt", fork / f"{lead}.pt")
        result, cpu = self.train(lead, self.config.max_epochs, fork)
        state = self.init_state(result, fork / f"{lead}.pt")
        shutil.rmtree(fork, ignore_errors=True)
        tuner = get_tuner("fd2-adam")
        tuned = []
        for lr in self.starts(result):
            out, c = timed(
                functools.partial(
                    tuner.tune,
                    self.runs[lead].point.document,
                    self.problem.data,
                    lr,
                    self.config,
                    init_state=state,
                )
            )
            cpu += c
            tuned.append(out)
        best = min(tuned, key=lambda r: r.val_loss if math.isfinite(r.val_loss) else math.inf)
        return {
            "test": test_score(best),
            "val_loss": float(best.val_loss),
            "lr": best.recommended_lr,
            "params": self.runs[lead].point.params,
            "spent": self.spent + cpu,
            "finish_cpu": cpu,
            "trials": len(self.runs),
            "screen_test": test_score(result),
            "starts": len(tuned),
            "rungs": _rung_counts(self.asha),
        }


def _rung_counts(asha: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in asha.state_dict()["runs"]:
        e = str(asha.epochs_of(run["id"]))
        counts[e] = counts.get(e, 0) + 1
    return counts


def archscreen_search(
    problem: Problem,
    seed: int,
    budgets: list[float],
    alrao: bool,
    max_epochs: int | None,
    full_run_cpu: float,
    variant: Variant,
) -> dict:
    """Run the pipeline to the largest budget, forking a finish at each budget on the way (once the
    search is over, at the trial limit, every larger budget gets that one finish)."""
    out: dict[str, Any] = {"delivered": {}}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(problem, seed, alrao, Path(tmp), full_run_cpu, max_epochs, variant)
        pending = sorted(budgets)
        while pending:
            if pipe.exhausted:
                last = pipe.finish(pending[0])
                for b in pending:
                    out["delivered"][f"{b:.3f}"] = last
                break
            if pipe.leader() is not None and pipe.spent + pipe.finish_cost() >= pending[0]:
                b = pending.pop(0)
                out["delivered"][f"{b:.3f}"] = pipe.finish(b)
                continue
            pipe.step()
        out["spent"], out["sampler_s"] = pipe.spent, pipe.sampler_s
    return out


# ------------------------------------------------------------------------------ orchestration


def calibrate(cell: Cell, max_epochs: int | None, trials: int) -> dict:
    """``B``: CPU-seconds of the first ``trials`` points of TPE (seed 0), one full Alrao screening
    each (the default budget): today's one-run-each screening of the space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = load_problem(cell)
    config = budget_config(0, max_epochs)
    from archscreen.core.screening import screening_run

    screener = screening_run({}, seed=0)[0]
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    spent, tests = 0.0, []
    for _ in range(trials):
        trial, point, _ = ask_point(study, problem, with_lr=False)
        result, cpu = timed(functools.partial(screener.screen, point.document, problem.data, config))
        spent += cpu
        tests.append(test_score(result))
        study.tell(trial, float(result.val_loss) if math.isfinite(result.val_loss) else math.inf)
    return {"B": spent, "trials": trials, "best_test": max(tests)}


def run_task(
    cell_name: str,
    method: str,
    seed: int,
    budget_b: float,
    mults: list[int],
    max_epochs: int | None,
    calibration_trials: int = CALIBRATION_TRIALS,
    variant: str = DEFAULT_VARIANT,
) -> dict:
    import torch

    torch.set_num_threads(1)
    problem = load_problem(CELLS[cell_name])
    budgets = [budget_b * m for m in mults]
    t0 = time.perf_counter()
    if method in ("optuna-hyperband", "random"):
        raw = optuna_search(
            problem, seed, max(budgets), pruned=method == "optuna-hyperband", max_epochs=max_epochs
        )
        delivered = {f"{b:.3f}": delivered_from_trace(raw["trace"], b) for b in budgets}
        extra = {"trace": raw["trace"], "spent": raw["spent"], "sampler_s": raw["sampler_s"]}
    else:
        raw = archscreen_search(
            problem,
            seed,
            budgets,
            method == "archscreen",
            max_epochs,
            budget_b / calibration_trials,
            VARIANTS[variant],
        )
        delivered, extra = raw["delivered"], {"spent": raw["spent"], "sampler_s": raw["sampler_s"]}
    rows = {str(m): delivered[f"{b:.3f}"] for m, b in zip(mults, budgets, strict=True)}
    return {
        "kind": "run",
        "cell": cell_name,
        "method": method,
        "seed": seed,
        "B": budget_b,
        "mults": mults,
        # the archscreen pipeline's settings; the Optuna methods do not depend on them
        **({"variant": variant} if method.startswith("archscreen") else {}),
        "delivered": rows,
        "wall_s": time.perf_counter() - t0,
        **extra,
    }


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: the task runs again
            continue
    return rows


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def calibrate_task(cell_name: str, max_epochs: int | None, trials: int) -> dict:
    import torch

    torch.set_num_threads(1)
    return {"kind": "calibration", "cell": cell_name, **calibrate(CELLS[cell_name], max_epochs, trials)}


def plan(
    cells: list[Cell],
    methods: list[str],
    seeds: list[int],
    rows: list[dict],
    variant: str = DEFAULT_VARIANT,
    mults: list[int] | None = None,
) -> list[tuple[str, str, int]]:
    """Tasks not yet in the results (an archscreen method's row counts for its variant only; a row
    whose largest budget is below what is asked now runs again). The headline pair (archscreen,
    Optuna + Hyperband) of every cell comes first, then the other methods cell by cell: a run cut
    by time has the comparison the issue asks for on every cell before the ablations."""

    def wanted(c: Cell) -> int:
        return max([m for m in (mults or [1]) if m <= c.max_budget] or [1])

    done = {
        (r["cell"], r["method"], r["seed"])
        for r in rows
        if r.get("kind") == "run"
        and (not r["method"].startswith("archscreen") or variant_of(r) == variant)
        and r["cell"] in CELLS
        and max(r["mults"]) >= wanted(CELLS[r["cell"]])
    }
    first = [m for m in methods if m in ("archscreen", "optuna-hyperband")]
    rest = [m for m in methods if m not in first]
    order = [(c, s, m) for c in cells for s in seeds for m in first]
    order += [(c, s, m) for c in cells for s in seeds for m in rest]
    return [(c.name, m, s) for c, s, m in order if (c.name, m, s) not in done]


def _report_row(row: dict) -> None:
    if row["kind"] == "calibration":
        print(f"[{row['cell']}] B = {row['B']:.1f} CPU-s ({row['trials']} trials)", flush=True)
        return
    shown = " ".join(f"{m}B={(d or {}).get('test', math.nan):.4f}" for m, d in row["delivered"].items())
    print(
        f"[{row['cell']}] {row['method']} seed {row['seed']}: {shown} ({row['wall_s']:.0f} s wall)",
        flush=True,
    )


def _needed_before(tasks: list[tuple[str, str, int]], ready: tuple[str, str, int], cell: str) -> bool:
    """Whether a task of ``cell`` (waiting for its calibration) comes before ``ready`` in the plan."""
    return next((i for i, t in enumerate(tasks) if t[0] == cell), len(tasks)) < tasks.index(ready)


def run_all(args: argparse.Namespace) -> None:
    """Calibrations and tasks on ``--jobs`` processes, in the order of :func:`plan`; a cell's tasks
    wait for its ``B``, while the other cells' work goes on."""
    path = Path(args.results)
    rows = load_rows(path)
    cells = [CELLS[c] for c in args.cells]
    budgets = {r["cell"]: float(r["B"]) for r in rows if r.get("kind") == "calibration"}
    to_calibrate = [c.name for c in cells if c.name not in budgets]
    tasks = plan(cells, list(args.methods), seed_list(args), rows, args.variant, args.mults)
    print(f"{len(to_calibrate)} calibrations, {len(tasks)} tasks to run", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        running: dict[Any, Any] = {}
        while tasks or to_calibrate or running:
            while len(running) < args.jobs:
                ready = [t for t in tasks if t[0] in budgets]
                if ready and (
                    not to_calibrate or args.cells.index(ready[0][0]) <= args.cells.index(to_calibrate[0])
                ):
                    cell, method, seed = ready[0]
                    tasks.remove(ready[0])
                    mults = [m for m in args.mults if m <= CELLS[cell].max_budget] or [1]
                    fut = pool.submit(
                        run_task,
                        cell,
                        method,
                        seed,
                        budgets[cell],
                        mults,
                        args.max_epochs,
                        args.calibration_trials,
                        args.variant,
                    )
                    running[fut] = (cell, method, seed)
                elif to_calibrate:
                    cell = to_calibrate.pop(0)
                    running[pool.submit(calibrate_task, cell, args.max_epochs, args.calibration_trials)] = (
                        cell,
                    )
                else:
                    break
            if not running:  # a cell whose calibration failed: its tasks cannot run
                print(f"not run (no B): {tasks}", flush=True)
                break
            fut = next(as_completed(running))
            what = running.pop(fut)
            try:
                row = fut.result()
            except Exception as exc:  # a task's failure is reported and the others go on
                print(f"{what}: FAILED {exc!r}", flush=True)
                continue
            append(path, row)
            if row["kind"] == "calibration":
                budgets[row["cell"]] = float(row["B"])
            _report_row(row)


# ---------------------------------------------------------------- the learning-rate grid check

GRID_RATES = tuple(10 ** (e / 2) for e in range(-8, -1))  # 1e-4 .. 1e-1, half a decade apart
GRID_POINTS = 5


def top_points(rows: list[dict], cell: str, k: int = GRID_POINTS) -> list[dict]:
    """The ``k`` best distinct points any method delivered on ``cell`` (any seed, any budget), by
    delivered test score, each with the methods that delivered it."""
    best: dict[str, dict] = {}
    for r in rows:
        if r.get("kind") != "run" or r["cell"] != cell:
            continue
        for d in r["delivered"].values():
            if not d or not math.isfinite(d["test"]):
                continue
            key = json.dumps(d["params"], sort_keys=True)
            entry = best.setdefault(key, {"params": d["params"], "test": d["test"], "found_by": []})
            entry["test"] = max(entry["test"], d["test"])
            if r["method"] not in entry["found_by"]:
                entry["found_by"].append(r["method"])
    return sorted(best.values(), key=lambda e: -e["test"])[:k]


def grid_check_task(cell_name: str, point: dict, max_epochs: int | None) -> dict:
    """One point of the space trained with Adam at every rate of :data:`GRID_RATES` (the screening
    budget, seed 0): the score the point reaches at its best rate by validation loss."""
    import optuna
    import torch

    from archscreen.core.screening import FixedRateScreener
    from archscreen.core.spec.space import sample_point

    torch.set_num_threads(1)
    problem = load_problem(CELLS[cell_name])
    spec = sample_point(problem.space, optuna.trial.FixedTrial(point["params"]), problem.info)
    config = budget_config(0, max_epochs)
    runs = []
    for lr in GRID_RATES:
        screener = FixedRateScreener(lr=lr, optimizer="adam")
        res, cpu = timed(functools.partial(screener.screen, spec.document, problem.data, config))
        runs.append({"lr": lr, "val_loss": float(res.val_loss), "test": test_score(res), "cpu": cpu})
    finite = [r for r in runs if math.isfinite(r["val_loss"])]
    best = min(finite, key=lambda r: r["val_loss"]) if finite else {"lr": math.nan, "test": math.nan}
    return {
        "kind": "grid",
        "cell": cell_name,
        "params": point["params"],
        "found_by": point["found_by"],
        "delivered_test": point["test"],
        "best_lr": best["lr"],
        "test": best["test"],
        "val_loss": best.get("val_loss", math.nan),
        "runs": runs,
    }


def run_grid_check(args: argparse.Namespace) -> None:
    """The grid check of every cell's top points (resumable: a point already checked is skipped)."""
    path = Path(args.grid_results)
    done = {(r["cell"], json.dumps(r["params"], sort_keys=True)) for r in load_rows(path)}
    rows = reported(load_rows(Path(args.results)), args.variant)
    todo = [
        (c, p)
        for c in args.cells
        for p in top_points(rows, c)
        if (c, json.dumps(p["params"], sort_keys=True)) not in done
    ]
    print(f"grid check: {len(todo)} points x {len(GRID_RATES)} rates", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futs = {pool.submit(grid_check_task, c, p, args.max_epochs): c for c, p in todo}
        for fut in as_completed(futs):
            row = fut.result()
            append(path, row)
            print(
                f"[{row['cell']}] {'+'.join(row['found_by'])}: delivered {100 * row['delivered_test']:.2f}, "
                f"best rate {row['best_lr']:.2g} -> {100 * row['test']:.2f}",
                flush=True,
            )


def grid_markdown(grid_rows: list[dict]) -> str:
    """Per cell: each top point's delivered score and its grid-checked score, and the best score
    any method found (the point whose best-rate run has the lowest validation loss)."""
    lines = [
        "| cell | found by | delivered | grid: best rate (by validation) | grid: its test |",
        "|---|---|---|---|---|",
    ]
    for cell in CELLS:
        pts = [r for r in grid_rows if r["cell"] == cell]
        for r in sorted(pts, key=lambda r: -r["delivered_test"]):
            lines.append(
                f"| {cell} | {', '.join(r['found_by'])} | {100 * r['delivered_test']:.2f} | "
                f"{r['best_lr']:.2g} | {100 * r['test']:.2f} |"
            )
        finite = [r for r in pts if math.isfinite(r["val_loss"])]
        if finite:
            top = min(finite, key=lambda r: r["val_loss"])
            lines.append(
                f"| **{cell}: best found** | {', '.join(top['found_by'])} | | {top['best_lr']:.2g} | "
                f"**{100 * top['test']:.2f}** |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- report


def seed_list(args: argparse.Namespace) -> list[int]:
    return list(args.seed_list) if args.seed_list else list(range(args.seeds))


def reported(rows: list[dict], variant: str = DEFAULT_VARIANT, seeds: list[int] | None = None) -> list[dict]:
    """The runs a report reads: the archscreen methods' rows of ``variant`` only, and of each
    (cell, method, seed) the last row written (a rerun to a larger budget replaces the first)."""
    last: dict[tuple[str, str, int], dict] = {}
    for r in rows:
        if r.get("kind") != "run" or r["cell"] not in CELLS:
            continue
        if r["method"].startswith("archscreen") and variant_of(r) != variant:
            continue
        if seeds is not None and r["seed"] not in seeds:
            continue
        last[(r["cell"], r["method"], r["seed"])] = r
    return list(last.values())


def summarise(rows: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(cell, method, budget multiple) → delivered test mean, spread (sd), CPU spent, seeds, over
    the run rows given (:func:`reported` picks them)."""
    acc: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        if r.get("kind") != "run":
            continue
        for mult, d in r["delivered"].items():
            acc.setdefault((r["cell"], r["method"], mult), []).append(
                d or {"test": math.nan, "spent": math.nan}
            )
    out = {}
    for key, ds in acc.items():
        tests = [d["test"] for d in ds]
        finite = [t for t in tests if math.isfinite(t)]
        out[key] = {
            "mean": statistics.fmean(finite) if finite else math.nan,
            "sd": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "spent": statistics.fmean([d["spent"] for d in ds]),
            "n": len(ds),
            "missing": len(ds) - len(finite),
        }
    return out


def markdown(rows: list[dict], variant: str = DEFAULT_VARIANT) -> str:
    cal = {r["cell"]: r for r in rows if r.get("kind") == "calibration"}
    summ = summarise(reported(rows, variant))
    lines = [
        "| cell | B (CPU-s) | budget | "
        + " | ".join(METHODS)
        + " | archscreen − Optuna+HB (pp, paired by seed) |",
        "|---|---|---|" + "---|" * len(METHODS) + "---|",
    ]
    for cell in CELLS:
        mults = sorted({k[2] for k in summ if k[0] == cell}, key=int)
        for mult in mults:
            cells = []
            for m in METHODS:
                s = summ.get((cell, m, mult))
                cells.append(
                    "—"
                    if s is None
                    else f"{100 * s['mean']:.2f} ± {100 * s['sd']:.2f} ({s['spent']:.0f} s, n={s['n']})"
                )
            diff = _spread(paired_diffs(rows, variant, mult, cell))
            lines.append(f"| {cell} | {cal[cell]['B']:.0f} | {mult}B | " + " | ".join(cells) + f" | {diff} |")
    return "\n".join(lines)


def reach_lines(rows: list[dict], variant: str = DEFAULT_VARIANT) -> list[str]:
    """The goal "archscreen reaches the score Optuna + Hyperband reaches at 9B with at most 3B",
    per cell where both ran: archscreen's mean at 3B against Optuna + Hyperband's at 9B."""
    summ = summarise(reported(rows, variant))
    out = []
    for cell in CELLS:
        a, o = summ.get((cell, "archscreen", "3")), summ.get((cell, "optuna-hyperband", "9"))
        if a is None or o is None:
            out.append(f"- {cell}: not run to 9B")
            continue
        met = "met" if a["mean"] >= o["mean"] else "missed"
        out.append(
            f"- {cell}: archscreen at 3B {100 * a['mean']:.2f} ± {100 * a['sd']:.2f} against Optuna + "
            f"Hyperband at 9B {100 * o['mean']:.2f} ± {100 * o['sd']:.2f}: **{met}**"
        )
    return out


def paired_diffs(rows: list[dict], variant: str, mult: str = "1", cell: str | None = None) -> list[float]:
    """archscreen minus Optuna + Hyperband at budget ``mult``·B, in points, one per (cell, seed)
    pair both ran (of ``cell`` only, if given): same sampler seed, same budget."""
    by = {(r["cell"], r["method"], r["seed"]): r for r in reported(rows, variant)}
    diffs = []
    for (c, method, seed), r in sorted(by.items()):
        other = by.get((c, "optuna-hyperband", seed))
        if method != "archscreen" or other is None or (cell is not None and c != cell):
            continue
        a, b = r["delivered"].get(mult), other["delivered"].get(mult)
        if a and b and math.isfinite(a["test"]) and math.isfinite(b["test"]):
            diffs.append(100 * (a["test"] - b["test"]))
    return diffs


def _spread(diffs: list[float]) -> str:
    """The mean difference ± the standard deviation of the paired differences."""
    if not diffs:
        return "—"
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{statistics.fmean(diffs):+.2f} ± {sd:.2f}"


def headline(rows: list[dict], variant: str = DEFAULT_VARIANT) -> float:
    """archscreen minus Optuna + Hyperband at budget B, in points, over the (cell, seed) pairs run by both."""
    diffs = paired_diffs(rows, variant)
    return statistics.fmean(diffs) if diffs else math.nan


def plot(rows: list[dict], out: Path, variant: str = DEFAULT_VARIANT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    summ = summarise(reported(rows, variant))
    cells = [c for c in CELLS if any(k[0] == c for k in summ)]
    if not cells:
        return
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.6), squeeze=False)
    for ax, cell in zip(axes[0], cells, strict=True):
        for m in METHODS:
            pts = sorted((int(k[2]), v) for k, v in summ.items() if k[0] == cell and k[1] == m)
            if pts:
                xs = [v["spent"] for _, v in pts]
                ax.errorbar(
                    xs,
                    [100 * v["mean"] for _, v in pts],
                    yerr=[100 * v["sd"] for _, v in pts],
                    marker="o",
                    capsize=3,
                    label=m,
                )
        spent = [v["spent"] for k, v in summ.items() if k[0] == cell and v["spent"] > 0]
        if spent and max(spent) / min(spent) > 5:  # several budgets: a log axis; one budget: linear
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.0f"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # minor log labels overlap
        ax.set_title(cell)
        ax.set_xlabel("training CPU-seconds (mean spent)")
        ax.set_ylabel("delivered test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


START, END = "<!-- bench/search.py:start -->", "<!-- bench/search.py:end -->"


def write_docs(rows: list[dict], doc: Path, image: Path, variant: str = DEFAULT_VARIANT) -> None:
    at_b = paired_diffs(rows, variant)
    table = (
        markdown(rows, variant)
        + "\n\n"
        + "\n".join(reach_lines(rows, variant))
        + f"\n\narchscreen − Optuna + Hyperband at B: **{_spread(at_b)} points** over {len(at_b)} "
        + f"(cell, seed) pairs (`search_vs_optuna: {headline(rows, variant):+.2f}`)"
    )
    block = f"{START}\n\n{table}\n\n![delivered test accuracy against CPU-seconds](img/{image.name})\n\n{END}"
    text = doc.read_text() if doc.exists() else ""
    if START in text and END in text:
        text = text.split(START)[0] + block + text.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
    plot(rows, image, variant)


def variants_table(rows: list[dict], seeds: list[int] | None) -> tuple[str, str | None]:
    """The archscreen pipeline's variants side by side on ``seeds`` (the selection seeds): the
    delivered test per cell and budget, and the pooled mean over every (cell, seed, budget) that
    every variant ran. The rule, written before the selection runs: the highest pooled mean wins;
    a variant within 0.1 points of it with a lower first rung (less compute per trial) wins the tie."""
    by_variant: dict[str, dict[tuple[str, int, str], float]] = {}
    for r in rows:
        if r.get("kind") != "run" or r["method"] != "archscreen" or r["cell"] not in CELLS:
            continue
        if seeds is not None and r["seed"] not in seeds:
            continue
        for mult, d in r["delivered"].items():
            if d and math.isfinite(d["test"]):
                by_variant.setdefault(variant_of(r), {})[(r["cell"], r["seed"], mult)] = d["test"]
    if not by_variant:
        return "no archscreen rows for these seeds", None
    common = set.intersection(*(set(v) for v in by_variant.values()))
    lines = ["| variant | " + " | ".join(f"{c} s{sd} {m}B" for c, sd, m in sorted(common)) + " | pooled |",
             "|---|" + "---|" * (len(common) + 1)]  # fmt: skip
    pooled = {}
    for name, vals in sorted(by_variant.items()):
        pooled[name] = statistics.fmean([vals[k] for k in common]) if common else math.nan
        cells = " | ".join(f"{100 * vals[k]:.2f}" for k in sorted(common))
        lines.append(f"| {name} | {cells} | {100 * pooled[name]:.2f} |")
    finite = {k: v for k, v in pooled.items() if math.isfinite(v)}
    if not finite:
        return "\n".join(lines), None
    top = max(finite.values())
    near = [k for k, v in finite.items() if v >= top - 0.001]
    chosen = min(near, key=lambda k: (VARIANTS[k].min_epochs if k in VARIANTS else 99, -finite[k]))
    return "\n".join(lines), chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds 0..N-1 (default 3)")
    p.add_argument("--seed-list", type=int, nargs="+", help="these sampler seeds instead of 0..N-1")
    p.add_argument(
        "--variant",
        default=DEFAULT_VARIANT,
        choices=list(VARIANTS),
        help=f"the archscreen pipeline's settings run and reported (default {DEFAULT_VARIANT})",
    )
    p.add_argument(
        "--compare-variants",
        action="store_true",
        help="print the archscreen variants on --seed-list side by side and the one the rule picks",
    )
    p.add_argument("--mults", type=int, nargs="+", default=[1, 3, 9], help="budgets as multiples of B")
    p.add_argument("--jobs", type=int, default=2, help="processes (one torch thread each)")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--max-epochs", type=int, default=None, help="override the screening cap (--quick only)")
    p.add_argument("--calibration-trials", type=int, default=CALIBRATION_TRIALS)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--grid-check",
        action="store_true",
        help=f"train the top {GRID_POINTS} points any method delivered per cell with Adam at every rate "
        "of a half-decade grid (1e-4..0.1) and report the best score found",
    )
    p.add_argument("--grid-results", default=str(RESULTS.with_name("search-grid.jsonl")))
    p.add_argument("--docs", action="store_true", help="write the tables into docs/search.md and the plot")
    p.add_argument(
        "--quick", action="store_true", help="CI check: digits-mlp, 3-epoch cap, B of 3 trials, 1 seed"
    )
    args = p.parse_args()
    if args.quick:
        args.cells, args.seeds, args.mults, args.max_epochs, args.calibration_trials = (
            ["digits-mlp"],
            1,
            [1, 3],
            3,
            3,
        )
        if args.results == str(RESULTS):
            args.results = str(Path(tempfile.mkdtemp()) / "search-quick.jsonl")
    if args.grid_check:
        if not args.report_only:
            run_grid_check(args)
        print(grid_markdown(load_rows(Path(args.grid_results))))
        return
    if not args.report_only:
        run_all(args)
    rows = load_rows(Path(args.results))
    if args.compare_variants:
        table, chosen = variants_table(rows, args.seed_list)
        print(table)
        print(f"chosen by the rule: {chosen}")
    print(markdown(rows, args.variant))
    print("\n".join(reach_lines(rows, args.variant)))
    at_b = paired_diffs(rows, args.variant)
    print(f"archscreen - Optuna + Hyperband at B: {_spread(at_b)} points over {len(at_b)} (cell, seed) pairs")
    if args.docs:
        write_docs(rows, ROOT / "docs" / "search.md", ROOT / "docs" / "img" / "search.png", args.variant)
    print(f"search_vs_optuna: {headline(rows, args.variant):+.2f}")


if __name__ == "__main__":
    main()
