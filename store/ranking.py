"""Ranking a study's candidates by their screening score, and storing the tuning jobs a promotion made.

Which candidates are promoted, with which tuner and from which rate is the promotion rule's
(:mod:`archscreen.worker.promotion`); this module persists its decision.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.config import PromotionPolicy
from archscreen.core.names import (
    ESTIMATE_METRIC_BY_TASK,
    HIGHER_IS_BETTER,
    RANK_METRIC_NAMES,
    Metric,
    RankMetric,
)
from archscreen.core.names import higher_is_better as _higher_is_better
from archscreen.store.db import utcnow
from archscreen.store.jobs import bump_study
from archscreen.store.models import FINAL_STATES, Job, JobState, Study
from archscreen.store.records import CandidateBrief, CandidateRecord, JobRecord, StudyRecord

_JOBS = Job.__table__

# metric -> True when higher is better (the names are core's: archscreen.core.names.Metric)
METRICS: dict[Metric, bool] = HIGHER_IS_BETTER


@dataclass
class RankRow:
    candidate_id: int
    name: str
    state: JobState
    rank: int | None = None
    score: float | None = None
    score_std: float | None = None
    seeds: int = 0
    tied_with: list[int] = field(default_factory=list)
    preferred_lr: float | None = None
    tuning_job_id: int | None = None
    tuning_state: JobState | None = None
    tuned_score: float | None = None
    recommended_lr: float | None = None
    tuning_start: str | None = None
    tuning_jobs: int = 0
    # {value, low, high, method, metric, seeds} over the succeeded seeds (estimate_of), or None
    estimate: dict[str, Any] | None = None
    # ASHA: the epochs of the rung the candidate's runs reached (None: a full run each); ranked rows
    # are ordered by it first (rank's docstring)
    rung_epochs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: its deep copy was half of /summary's time with many ties
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tied_with"] = list(self.tied_with)
        return out


# Screening runs whose result is a score: finished ones, and those ASHA stopped at a rung (their
# result is the rung's: the best epoch so far, the weights the loop kept).
SCORED_STATES: tuple[JobState, ...] = ("succeeded", "stopped")


def candidate_state(jobs: Sequence[JobRecord]) -> JobState:
    """One state for a candidate from its screening runs (one per seed)."""
    states = {j.state for j in jobs}
    if not states:
        return "queued"
    order: tuple[JobState, ...] = (
        "running",
        "queued",
        "paused",
        "failed",
        "diverged",
        "cancelled",
        "stopped",
    )
    return next((state for state in order if state in states), "succeeded")


def rung_epochs(jobs: Sequence[JobRecord]) -> int | None:
    """The epochs of the ASHA rung a search candidate's screening runs were last sent to (the least
    over its seeds), or None: no ASHA (a full run each). A run that reached the top rung has the
    screening's ``max_epochs``."""
    targets = [j.config.get("target_epochs") for j in jobs if j.kind == "screen"]
    ints = [int(t) for t in targets if isinstance(t, int) and not isinstance(t, bool)]
    return min(ints) if ints and len(ints) == len(targets) else None


def _score(result: dict[str, Any] | None, metric: str) -> float | None:
    if not result:
        return None
    v = result.get(metric)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def selection_metric(metric: str) -> Metric:
    """The score a candidate's tuning starts are compared by: the validation side of the ranking
    ``metric`` (``val_macro_f1`` for ``test_macro_f1``, ``val_loss`` for a loss or the
    estimate), so the test split never picks the start whose test score is then reported
    (issue 16: "keep the best by validation")."""
    side = "val_" + metric.removeprefix("test_").removeprefix("val_")
    return cast(Metric, side) if side in METRICS else "val_loss"


def best_tuning_job(jobs: Sequence[JobRecord], metric: str = "val_loss") -> JobRecord | None:
    """A candidate's tuned answer among its tuning jobs (one per start): the succeeded job with the
    best :func:`selection_metric` of the study's ``metric`` (ties: the lower seed, then id);
    ``None`` while none has succeeded with a finite score."""
    key = selection_metric(metric)
    sign = -1.0 if METRICS[key] else 1.0
    scored = [
        (sign * v, j.seed, j.id, j)
        for j in jobs
        if j.state == "succeeded" and (v := _score(j.result, key)) is not None
    ]
    return min(scored, key=lambda s: s[:3])[3] if scored else None


def tuning_state(jobs: Sequence[JobRecord]) -> JobState | None:
    """One state for a candidate's tuning jobs (one per start): ``running`` or ``queued`` while any
    start is; else ``succeeded`` if any start succeeded (a start that diverged, say the upper
    quartile, does not undo the others' answer); else the first job's (lowest seed's) state."""
    states = {j.state for j in jobs}
    for state in ("running", "queued", "succeeded"):
        if state in states:
            return cast(JobState, state)
    return min(jobs, key=lambda j: (j.seed, j.id)).state if jobs else None


def preferred_lr(runs: Iterable[JobRecord]) -> float | None:
    """A candidate's preferred rate: the geometric mean, over its *succeeded* screening runs (one per
    seed), of each run's Alrao ``preferred_lr``; ``None`` when no succeeded run has one.

    The one rule for every route that shows it (``/candidates/{id}``, ``/ranking``, ``/summary``,
    the leaderboard): a failed or diverged seed's rate is not a preference.
    """
    lrs = []
    for j in runs:
        v = (j.result or {}).get("preferred_lr") if j.state in SCORED_STATES else None
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v):
            lrs.append(float(v))
    return statistics.geometric_mean(lrs) if lrs else None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _seed_estimates(runs: Iterable[JobRecord]) -> list[dict[str, Any]]:
    """The ``estimate`` of each succeeded screening run that has a usable one (results stored before
    the estimate existed, or a run without a finite curve point, have none)."""
    out = []
    for j in runs:
        e = (j.result or {}).get("estimate") if j.state in SCORED_STATES else None
        if isinstance(e, dict) and all(_finite(e.get(k)) for k in ("value", "low", "high")):
            out.append(e)
    return out


def study_task(jobs: Iterable[JobRecord]) -> str | None:
    """The task (``classification``, ``language_model``, ``regression``) a study's screening results
    name, or None before any has one: it sets the estimate's units and direction."""
    for j in jobs:
        task = (j.result or {}).get("task") if j.kind == "screen" else None
        if isinstance(task, str):
            return task
    return None


def estimate_of(runs: Sequence[JobRecord]) -> dict[str, Any] | None:
    """A candidate's extrapolated best-rate score over its *succeeded* screening runs (one per seed).

    ``value`` is the mean of the seeds' values. ``low``/``high`` are the means of the seeds' bounds,
    not their envelope: if every seed's interval holds the best-rate score, so does this one (a
    per-run coverage carries over; docs/fidelity.md measures it, and it is far under the nominal
    90 %: the interval is the fit's uncertainty about its own curve), and it does not widen as seeds
    are added (the seeds' disagreement is the row's ``score_std`` when ranking by the estimate).
    ``method`` lists the seeds' curve fits; ``metric`` names the units (``val_accuracy``, ``val_bpc``,
    ``val_mse``, by task); ``seeds`` counts the runs averaged. None when no succeeded run has one.
    """
    ests = _seed_estimates(runs)
    if not ests:
        return None
    task = study_task(runs)
    # core clips an estimate only at the metric's best possible value (accuracy 1, a loss 0); a
    # short, noisy accuracy curve can put the lower bound far below 0, which no accuracy reaches:
    # the service clips each seed's accuracy bounds to [0, 1] before averaging (a documented
    # display rule, the value is unchanged: core already keeps it in range).
    lo_cap = 0.0 if task == "classification" else -math.inf
    value = statistics.fmean(float(e["value"]) for e in ests)
    low = statistics.fmean(max(float(e["low"]), lo_cap) for e in ests)
    high = statistics.fmean(float(e["high"]) for e in ests)
    return {
        "value": value,
        "low": min(low, value),
        "high": max(high, value),
        "method": ", ".join(sorted({str(e.get("method", "")) for e in ests})),
        "metric": ESTIMATE_METRIC_BY_TASK[task][0] if task in ESTIMATE_METRIC_BY_TASK else None,
        "seeds": len(ests),
    }


def metric_higher_is_better(metric: str, jobs: Iterable[JobRecord]) -> bool:
    """The ranking direction: a metric's own, the estimate's by the study's task (:func:`study_task`)."""
    if metric not in RANK_METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(RANK_METRIC_NAMES)}")
    return _higher_is_better(cast(RankMetric, metric), study_task(jobs))


def rank(
    cands: Sequence[CandidateRecord | CandidateBrief], jobs: Sequence[JobRecord], metric: str = "val_loss"
) -> tuple[list[RankRow], list[RankRow]]:
    """``(ranked, unranked)``: finished candidates by score (best first), then the rest with their state.

    Over rows already read (:func:`rank_study` reads them), so ``/summary`` ranks and shows the same
    rows from one read. With several seeds the score is the mean across seeds and ``score_std``
    their spread; candidates whose ``mean ± std`` intervals overlap (or whose scores are equal) are
    marked as tied with each other.

    ``metric="estimate"`` ranks by the extrapolated best-rate score (:func:`estimate_of`; its
    direction by the study's task) and ties candidates whose estimate intervals ``[low, high]``
    overlap; ``score_std`` is then the spread of the seeds' estimates. Every row carries its
    ``estimate`` whatever the metric.

    A search study under ASHA (``worker/search.py``) has runs of different lengths: those that
    reached the top rung (``succeeded``) and those stopped at a lower rung (``stopped``, scored by
    their result at that rung). A run stopped after 1 epoch is not comparable with a full run, so
    ranked rows are ordered by the rung's epochs they reached (more first), then by score: every
    completed run ranks above every stopped one, and stopped runs rank among their rung. Without
    ASHA every row has ``rung_epochs`` None and the order is the score's alone. Paused runs (the
    search is still going) are unranked, like running ones.
    """
    higher = metric_higher_is_better(metric, jobs)
    by_estimate = metric == "estimate"
    screens: dict[int, list[JobRecord]] = {c.id: [] for c in cands}
    tunes: dict[int, list[JobRecord]] = {}
    for j in jobs:
        if j.kind == "screen":
            screens.setdefault(j.candidate_id, []).append(j)
        else:
            tunes.setdefault(j.candidate_id, []).append(j)
    ranked: list[RankRow] = []
    unranked: list[RankRow] = []
    for c in cands:
        runs = screens.get(c.id, [])
        row = RankRow(candidate_id=c.id, name=c.name, state=candidate_state(runs))
        if by_estimate:
            scores = [float(e["value"]) for e in _seed_estimates(runs)]
        else:
            scores = [
                v
                for v in (_score(j.result, metric) for j in runs if j.state in SCORED_STATES)
                if v is not None
            ]
        row.estimate = estimate_of(runs)
        row.preferred_lr = preferred_lr(runs)
        starts = tunes.get(c.id)
        if starts:
            # the candidate's answer: its best start by validation; until one has succeeded, the
            # first start's job (seed 0) is the one shown
            best = best_tuning_job(starts, metric)
            t = best or min(starts, key=lambda j: (j.seed, j.id))
            row.tuning_job_id, row.tuning_state = t.id, tuning_state(starts)
            row.tuning_start, row.tuning_jobs = t.config.get("start"), len(starts)
            if best is not None and best.result:
                row.tuned_score = _score(best.result, metric)
                row.recommended_lr = best.result.get("recommended_lr")
        row.rung_epochs = rung_epochs(runs)
        if row.state in SCORED_STATES and scores:
            row.score = statistics.fmean(scores)
            row.score_std = statistics.stdev(scores) if len(scores) > 1 else None
            row.seeds = len(scores)
            ranked.append(row)
        else:
            row.seeds = len(scores)
            unranked.append(row)
    ranked.sort(
        key=lambda r: (
            -(r.rung_epochs if r.rung_epochs is not None else math.inf),
            -(r.score or 0.0) if higher else (r.score or 0.0),
            r.candidate_id,
        )
    )
    for i, r in enumerate(ranked):
        r.rank = i + 1
    _mark_ties(ranked, by_estimate=by_estimate)
    return ranked, unranked


def _bounds(r: RankRow, by_estimate: bool) -> tuple[float, float]:
    """The interval a tie is judged on: ``mean ± std`` across seeds, or the estimate's ``[low, high]``."""
    assert r.score is not None
    if by_estimate and r.estimate is not None:
        return float(r.estimate["low"]), float(r.estimate["high"])
    std = r.score_std or 0.0
    return r.score - std, r.score + std


def _tied(a: RankRow, b: RankRow, by_estimate: bool = False) -> bool:
    assert a.score is not None and b.score is not None
    if by_estimate:
        (alo, ahi), (blo, bhi) = _bounds(a, True), _bounds(b, True)
        if alo <= bhi and blo <= ahi:  # the intervals overlap
            return True
        return abs(a.score - b.score) <= 1e-12 * max(abs(a.score), abs(b.score), 1.0)
    spread = (a.score_std or 0.0) + (b.score_std or 0.0)
    return abs(a.score - b.score) <= max(spread, 1e-12 * max(abs(a.score), abs(b.score), 1.0))


def _mark_ties(ranked: list[RankRow], *, by_estimate: bool = False) -> None:
    """``tied_with`` of each row (sorted by score): the rows whose interval (``mean ± std``, or the
    estimate's ``[low, high]`` when ``by_estimate``) overlaps its own.

    Scans outwards from each row only as far as its interval plus the widest one can reach, so
    a large study costs about n log n, not n² (each pair is still decided by :func:`_tied`).
    """
    by_score = sorted(ranked, key=lambda r: (r.score or 0.0, r.candidate_id))
    # how far each row's interval reaches below (down) and above (up) its score
    reaches = {id(r): _reach(r, by_estimate) for r in by_score}
    widest_down = max((d for d, _ in reaches.values()), default=0.0)
    widest_up = max((u for _, u in reaches.values()), default=0.0)
    for i, a in enumerate(by_score):
        assert a.score is not None
        down, up = reaches[id(a)]
        near: list[RankRow] = []
        for step in (-1, 1):
            # below a: b's interval must reach up to a's low end; above: down to a's high end
            reach = down + widest_up if step < 0 else up + widest_down
            reach += 1e-9 * max(abs(reach), 1.0)  # only prunes the scan: never skip a boundary pair
            j = i + step
            while 0 <= j < len(by_score):
                b = by_score[j]
                assert b.score is not None
                gap = abs(a.score - b.score)
                if gap > reach and gap > 1e-12 * max(abs(a.score), abs(b.score), 1.0):
                    break
                if a.rung_epochs == b.rung_epochs and _tied(a, b, by_estimate):  # same rung only
                    near.append(b)
                j += step
        # in ranking order, as before
        a.tied_with.extend(b.candidate_id for b in sorted(near, key=lambda r: r.rank or 0))


def _reach(r: RankRow, by_estimate: bool) -> tuple[float, float]:
    assert r.score is not None
    lo, hi = _bounds(r, by_estimate)
    return max(r.score - lo, 0.0), max(hi - r.score, 0.0)


def rank_study(s: Session, study_id: int, metric: str = "val_loss") -> tuple[list[RankRow], list[RankRow]]:
    """:func:`rank` over the study's rows, read here."""
    from archscreen.store.studies import study_rows

    return rank(*study_rows(s, study_id), metric)


def screening_done(s: Session, study_id: int) -> bool:
    states = s.scalars(select(Job.state).where(Job.study_id == study_id, Job.kind == "screen")).all()
    return bool(states) and all(st in FINAL_STATES for st in states)


def studies_awaiting_auto_promotion(s: Session) -> list[int]:
    """Studies whose policy is ``auto``, not yet promoted, with every screening run ended."""
    rows = s.execute(select(Study.id, Study.policy).where(Study.auto_promoted_at.is_(None))).all()
    return [
        sid for sid, policy in rows if PromotionPolicy.model_validate(policy).auto and screening_done(s, sid)
    ]


def tuning_jobs_of(s: Session, candidate_ids: list[int]) -> dict[int, list[JobRecord]]:
    """The tuning jobs (one per start, by seed) of each of ``candidate_ids`` that has any."""
    if not candidate_ids:
        return {}
    rows = s.execute(
        select(_JOBS)
        .where(_JOBS.c.candidate_id.in_(candidate_ids), _JOBS.c.kind == "tune")
        .order_by(_JOBS.c.seed, _JOBS.c.id)
    )
    out: dict[int, list[JobRecord]] = {}
    for r in rows:
        out.setdefault(r.candidate_id, []).append(JobRecord.of(r))
    return out


def promote(
    s: Session,
    study: StudyRecord,
    candidate_ids: list[int],
    configs: dict[int, dict[int, dict[str, Any]]],
    *,
    max_attempts: int,
) -> tuple[list[JobRecord], list[JobRecord]]:
    """Persist what the promotion rule (:mod:`archscreen.worker.promotion`) decided.

    For each of ``candidate_ids``, one tuning job per ``(seed, config)`` in ``configs[cid]`` (one
    per start: tuner and starting rate, chosen by the rule; the seed is the start's index, the
    jobs' unique key). A candidate that already has tuning jobs keeps them and gets none added;
    when two promotions race, the unique key on (candidate, kind, seed) decides and the loser
    returns the winner's job. Returns ``(all_jobs, new_jobs)``, in the order of
    ``candidate_ids``, each candidate's jobs by seed.
    """
    existing = tuning_jobs_of(s, candidate_ids)
    out: list[JobRecord] = []
    new: list[JobRecord] = []
    for cid in candidate_ids:
        if cid in existing:
            out.extend(existing[cid])
            continue
        jobs = [
            Job(
                kind="tune",
                study_id=study.id,
                candidate_id=cid,
                seed=seed,
                max_attempts=max_attempts,
                max_epochs=study.screening.epoch_cap,
                config=config,
            )
            for seed, config in sorted(configs[cid].items())
        ]
        # A candidate's starts are inserted together, in one savepoint, so a racing promotion sees
        # all of them or none (on SQLite, releasing the outermost savepoint commits: inserting them
        # one savepoint each let a racer read a partial set and return it).
        try:
            with s.begin_nested():
                s.add_all(jobs)
                s.flush()
        except IntegrityError:  # promoted concurrently (another request, or auto-promotion)
            out.extend(tuning_jobs_of(s, [cid]).get(cid, []))
            continue
        made = [JobRecord.of(j) for j in jobs]
        out.extend(made)
        new.extend(made)
    if new:
        bump_study(s, study.id)
    return out, new


def claim_auto_promotion(s: Session, study_id: int) -> bool:
    """Compare-and-set the study's one auto-promotion; True for exactly one caller."""
    res = s.execute(
        update(Study)
        .where(Study.id == study_id, Study.auto_promoted_at.is_(None))
        .values(auto_promoted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    bump_study(s, study_id)
    return True
