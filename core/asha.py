"""Successive halving across candidates: the asynchronous rung scheduler of ASHA.

A search screens many candidate architectures, one Alrao run each. Most of them are clearly worse
after a few epochs; ASHA stops those early and spends the epochs on the promising ones.

The rule (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
Algorithm 2, with minimum resource ``r``, reduction factor ``η`` and maximum resource ``R``):

* rungs at ``r·η^i`` epochs, ``i = 0, 1, …``, every one at most ``R`` (the screening budget's epoch
  cap); the last rung is ``R`` itself (a run promoted from the highest ``r·η^i < R`` trains to
  the end of its budget);
* a worker that frees up calls :meth:`AshaScheduler.get_job`: from the top rung down, a run that
  has reported at rung ``k``, is paused there, and is among the best ``⌊n_k/η⌋`` of the ``n_k``
  runs that have reported at rung ``k`` so far is promoted: it continues from its checkpoint to
  rung ``k + 1``. If no run can be promoted, a new run starts at rung 0;
* a run that is not promoted when it reports is *paused*, not stopped: runs that report later can
  push it into the top ``1/η`` of its rung, and the next ``get_job`` promotes it;
* lower values are better; a non-finite value (a diverged run) ranks last.

The ranking value at a rung is pluggable (:func:`rung_value`): the Alrao run's validation loss at
the rung (its best epoch so far, the weights the loop keeps), or the extrapolated estimate of
:mod:`archscreen.core.estimate` fed with the curve up to the rung. The default is the one that
ranked better on the fidelity study's selection half (``bench/asha_replay.py``, ``docs/search.md``).

Deliberate deviations from the paper, each a switch:

* ``complete_leader`` (default True): the paper's ASHA draws new configurations for as long as the
  budget lasts. A study screens a finite pool, and with ``n`` runs and ``n < η^s`` no run may ever
  reach the top rung (e.g. 13 runs, η = 3: 4 reach rung 1, 1 reaches rung 2, none rung 3). Once
  :meth:`~AshaScheduler.close` says no run will be added and nothing can be promoted or is
  running, the best run of the highest rung reached is promoted, one rung per job, up to the top
  rung, so the pick has its full budget (what the tuning stage and the user take home).
  False: the paper's rule.
* ``reduction_factor=1`` (not in the paper, whose ``η ≥ 2``): rungs ``r`` and ``R`` only and every
  run is promoted, i.e. one full run each, as a study without ASHA does.
* a run whose trainer stopped on its own before a rung (patience, divergence) still reports at
  that rung, with its final value: the caller reports what the run has, and a promotion that
  trains nothing costs nothing.

At the end of a search, :meth:`~AshaScheduler.finish` names the runs to stop for good: every run
that is paused (not promoted), queued (never started) or still running. The state is a plain,
JSON-serialisable dict (:meth:`~AshaScheduler.state_dict`, :meth:`~AshaScheduler.from_state`),
so the service can keep it in its database.

Pure Python: no torch, no service imports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STATE_VERSION = 1
DEFAULT_REDUCTION_FACTOR = 3  # η: the paper's experiments use 3 or 4
DEFAULT_MIN_EPOCHS = 1  # r
# Per-run status: queued (added, never started), running (a job is out), paused (reported at its
# rung, not promoted yet), completed (reported at the top rung), stopped (by finish()).
STATUSES = ("queued", "running", "paused", "completed", "stopped")
RANKING_KEYS = ("val-loss", "extrapolated")
# Chosen on the fidelity study's selection half by bench/asha_replay.py (docs/search.md): the
# extrapolated estimate's ASHA order had the higher mean Spearman there (0.63 vs 0.59 over the four
# eta, r settings); eta and r by the lowest selection-half regret, a tie going to the lower compute.
DEFAULT_RANKING_KEY = "extrapolated"


def rungs_for(max_epochs: int, min_epochs: int, reduction_factor: int) -> list[int]:
    """Rung epochs ``r·η^i < R``, then ``R``; with ``η = 1``: ``[r, R]`` (``[R]`` when ``r = R``)."""
    _check_rung_args(max_epochs, min_epochs, reduction_factor)
    rungs: list[int] = []
    epochs = min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        if reduction_factor == 1:
            break
        epochs *= reduction_factor
    return [*rungs, max_epochs]


def _check_rung_args(max_epochs: int, min_epochs: int, reduction_factor: int) -> None:
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
    if not isinstance(min_epochs, int) or not 1 <= min_epochs <= max_epochs:
        raise ValueError(f"min_epochs must be an integer in [1, max_epochs={max_epochs}], got {min_epochs!r}")
    if not isinstance(reduction_factor, int) or reduction_factor < 1:
        raise ValueError(f"reduction_factor must be an integer >= 1, got {reduction_factor!r}")


@dataclass(frozen=True)
class Job:
    """Train ``run_id`` until it has ``epochs`` epochs (rung ``rung``); ``promoted``: it continues
    from its checkpoint, else it is a new run."""

    run_id: str
    rung: int
    epochs: int
    promoted: bool


def _key(value: float | None) -> float:
    """Sort key of a reported value: non-finite (a diverged run) ranks last."""
    return value if value is not None and math.isfinite(value) else math.inf


class AshaScheduler:
    """Asynchronous successive halving over a pool of runs (see the module docstring).

    Args:
        max_epochs: ``R``, the screening budget's epoch cap: the top rung.
        min_epochs: ``r``, the first rung.
        reduction_factor: ``η``: a rung promotes the best ``1/η`` of the runs that reached it.
        complete_leader: a deviation (module docstring): once closed and idle, the best run of the
            highest rung reached is promoted rung by rung to the top.

    Example::

        asha = AshaScheduler(max_epochs=27, min_epochs=1, reduction_factor=3)
        asha.add_runs(["a", "b", "c"])
        job = asha.get_job()             # Job("a", rung=0, epochs=1, promoted=False)
        asha.report(job.run_id, 0.42)    # its ranking value at that rung (lower is better)
    """

    def __init__(
        self,
        max_epochs: int,
        *,
        min_epochs: int = DEFAULT_MIN_EPOCHS,
        reduction_factor: int = DEFAULT_REDUCTION_FACTOR,
        complete_leader: bool = True,
    ) -> None:
        self.rungs = rungs_for(max_epochs, min_epochs, reduction_factor)
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.reduction_factor = reduction_factor
        self.complete_leader = complete_leader
        self.closed = False
        self._order: list[str] = []  # arrival order: ties go to the earlier run
        self._status: dict[str, str] = {}
        self._rung: dict[str, int] = {}  # the rung of the run's last job (-1: never started)
        self._values: dict[str, list[float | None]] = {}  # reported value per rung, in rung order

    # ------------------------------------------------------------------ the pool

    def add_runs(self, run_ids: Iterable[str]) -> None:
        """Queue new runs (candidates to screen); they start when nothing can be promoted."""
        if self.closed:
            raise RuntimeError("the scheduler is closed: no run can be added")
        for rid in run_ids:
            if rid in self._status:
                raise ValueError(f"run {rid!r} is already in the scheduler")
            self._order.append(rid)
            self._status[rid] = "queued"
            self._rung[rid] = -1
            self._values[rid] = []

    def start(self, run_id: str) -> Job:
        """Start a queued run at rung 0 now, whatever :meth:`get_job` would pick: for a caller that
        creates a run's work in the same transaction that adds it (the service's search step), so
        no run waits queued in a stored state. Raises ValueError if the run is not queued."""
        if self._status.get(run_id) != "queued":
            raise ValueError(f"run {run_id!r} is not queued (status {self._status.get(run_id)!r})")
        self._status[run_id], self._rung[run_id] = "running", 0
        return Job(run_id, 0, self.rungs[0], promoted=False)

    def close(self) -> None:
        """No run will be added any more (the sampler's trials or the budget are spent)."""
        self.closed = True

    def status(self, run_id: str) -> str:
        return self._status[run_id]

    def values(self, run_id: str) -> list[float | None]:
        """The run's reported values, one per rung it reached."""
        return list(self._values[run_id])

    # ------------------------------------------------------------------ the rule

    def promotable(self, rung: int) -> list[str]:
        """Paused runs at ``rung`` that are among its best ``⌊n/η⌋`` reports, best first."""
        if rung >= len(self.rungs) - 1:
            return []
        reported = [r for r in self._order if len(self._values[r]) > rung]
        reported.sort(key=lambda r: _key(self._values[r][rung]))
        top = reported[: len(reported) // self.reduction_factor]
        return [r for r in top if self._status[r] == "paused" and self._rung[r] == rung]

    def _next_promotion(self) -> tuple[str, int] | None:
        """(run, rung to train to): Algorithm 2's promotion, top rung first, else the leader."""
        for rung in range(len(self.rungs) - 2, -1, -1):
            cands = self.promotable(rung)
            if cands:
                return cands[0], rung + 1
        if self.complete_leader and self.closed and not self._any("queued", "running"):
            if self._any("completed"):
                return None
            paused = [r for r in self._order if self._status[r] == "paused"]
            if paused:
                top = max(self._rung[r] for r in paused)
                at_top = [r for r in paused if self._rung[r] == top]
                leader = min(at_top, key=lambda r: _key(self._values[r][top]))
                return leader, top + 1
        return None

    def _any(self, *statuses: str) -> bool:
        return any(s in statuses for s in self._status.values())

    def get_job(self) -> Job | None:
        """The next job for a free worker: a promotion if any, else a queued run at rung 0, else
        None (wait for a report, add runs, or the search is over: see :attr:`done`)."""
        promotion = self._next_promotion()
        if promotion is not None:
            rid, rung = promotion
            self._status[rid], self._rung[rid] = "running", rung
            return Job(rid, rung, self.rungs[rung], promoted=True)
        for rid in self._order:
            if self._status[rid] == "queued":
                self._status[rid], self._rung[rid] = "running", 0
                return Job(rid, 0, self.rungs[0], promoted=False)
        return None

    def report(self, run_id: str, value: float | None) -> None:
        """The run's ranking value (lower is better) at the rung of its job. A non-finite value
        (or None) is stored as None, which ranks last (the state stays valid JSON)."""
        status = self._status.get(run_id)
        if status not in ("running", "stopped") or len(self._values[run_id]) != self._rung[run_id]:
            raise ValueError(f"run {run_id!r} has no job out (status {status!r})")
        rung = self._rung[run_id]
        finite = value is not None and math.isfinite(value)
        self._values[run_id].append(float(value) if finite else None)  # type: ignore[arg-type]
        if status == "stopped":
            return  # finish() has stopped it: the value is recorded, nothing more
        self._status[run_id] = "completed" if rung == len(self.rungs) - 1 else "paused"

    @property
    def done(self) -> bool:
        """Closed, nothing queued or running, and nothing to promote: the search is over."""
        return self.closed and not self._any("queued", "running") and self._next_promotion() is None

    def finish(self) -> list[str]:
        """End the search: every paused, queued or running run is stopped for good (the caller
        cancels the running ones); returns them in arrival order. Completed runs are kept."""
        stopped = [r for r in self._order if self._status[r] in ("paused", "queued", "running")]
        for rid in stopped:
            self._status[rid] = "stopped"
        self.closed = True
        return stopped

    def ranking(self) -> list[str]:
        """Every run that reported, best first: the highest rung reached, then its value there."""
        reported = [r for r in self._order if self._values[r]]
        return sorted(reported, key=lambda r: (-len(self._values[r]), _key(self._values[r][-1])))

    def epochs_of(self, run_id: str) -> int:
        """Epochs the run is scheduled to have trained (its last job's rung; 0 if never started)."""
        rung = self._rung[run_id]
        return 0 if rung < 0 else self.rungs[rung]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict; :meth:`from_state` rebuilds an equal scheduler."""
        return {
            "version": STATE_VERSION,
            "max_epochs": self.max_epochs,
            "min_epochs": self.min_epochs,
            "reduction_factor": self.reduction_factor,
            "complete_leader": self.complete_leader,
            "closed": self.closed,
            "runs": [
                {"id": r, "status": self._status[r], "rung": self._rung[r], "values": list(self._values[r])}
                for r in self._order
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AshaScheduler:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unknown ASHA state version {state.get('version')!r} (expected {STATE_VERSION})"
            )
        asha = cls(
            state["max_epochs"],
            min_epochs=state["min_epochs"],
            reduction_factor=state["reduction_factor"],
            complete_leader=state["complete_leader"],
        )
        for run in state["runs"]:
            if run["status"] not in STATUSES:
                raise ValueError(f"run {run['id']!r}: unknown status {run['status']!r}")
            asha.add_runs([run["id"]])
            asha._status[run["id"]] = run["status"]
            asha._rung[run["id"]] = int(run["rung"])
            asha._values[run["id"]] = list(run["values"])
        asha.closed = bool(state["closed"])
        return asha


def rung_value(
    curves: Sequence[Mapping[str, Any]],
    epochs: int,
    task: str,
    *,
    key: str = DEFAULT_RANKING_KEY,
    max_epochs: int | None = None,
) -> float:
    """A run's ranking value (lower is better) after ``epochs`` epochs of its per-epoch records.

    ``curves`` are :class:`~archscreen.core.training.loop.EpochRecord` dicts (``steps`` of the
    epoch, ``val_loss``, ``val_accuracy`` or ``val_mse``); a run that stopped before ``epochs`` is
    read at its end. ``key``:

    * ``val-loss``: the lowest validation loss so far (the best epoch, whose weights the loop
      keeps: what the run would report if stopped here);
    * ``extrapolated``: :func:`archscreen.core.estimate.estimate_for_curves` on the curve so far,
      read at the budget's cap (``max_epochs``): minus the accuracy for classification, bits per
      character for a language model, MSE for regression.

    Non-finite when the run has no finite point (it diverged at once).
    """
    if key not in RANKING_KEYS:
        raise ValueError(f"key must be one of {', '.join(RANKING_KEYS)}, got {key!r}")
    seen = [dict(r) for r in curves[: max(epochs, 0)]]
    if key == "val-loss":
        losses = [float(r["val_loss"]) for r in seen if r.get("val_loss") is not None]
        finite = [v for v in losses if math.isfinite(v)]
        return min(finite) if finite else math.inf
    from archscreen.core.estimate import estimate_for_curves  # numpy/scipy: only when asked for

    est = estimate_for_curves(seen, task, max_epochs=max_epochs) if seen else None
    if est is None or not math.isfinite(est.value):
        return math.inf
    return est.value if task in ("regression", "language_model") else -est.value
