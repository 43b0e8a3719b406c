"""Ranking a study's candidates by their screening score, and promoting the best to tuning jobs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.core.names import HIGHER_IS_BETTER, Metric
from archscreen.store.db import utcnow
from archscreen.store.jobs import bump_study
from archscreen.store.models import FINAL_STATES, Candidate, Job, JobState, Study

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidate_state(jobs: list[Job]) -> JobState:
    """One state for a candidate from its screening runs (one per seed)."""
    states = {j.state for j in jobs}
    if not states:
        return "queued"
    order: tuple[JobState, ...] = ("running", "queued", "failed", "diverged", "cancelled")
    return next((state for state in order if state in states), "succeeded")


def _score(result: dict[str, Any] | None, metric: str) -> float | None:
    if not result:
        return None
    v = result.get(metric)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def preferred_lr(runs: Iterable[Job]) -> float | None:
    """A candidate's preferred rate: the geometric mean, over its *succeeded* screening runs (one per
    seed), of each run's Alrao ``preferred_lr``; ``None`` when no succeeded run has one.

    The one rule for every route that shows it (``/candidates/{id}``, ``/ranking``, ``/summary``,
    the leaderboard): a failed or diverged seed's rate is not a preference.
    """
    lrs = []
    for j in runs:
        v = (j.result or {}).get("preferred_lr") if j.state == "succeeded" else None
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v):
            lrs.append(float(v))
    return statistics.geometric_mean(lrs) if lrs else None


def rank(s: Session, study: Study, metric: str = "val_loss") -> tuple[list[RankRow], list[RankRow]]:
    """``(ranked, unranked)``: finished candidates by score (best first), then the rest with their state.

    With several seeds the score is the mean across seeds and ``score_std`` their spread;
    candidates whose ``mean ± std`` intervals overlap (or whose scores are equal) are marked
    as tied with each other.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    higher = METRICS[cast(Metric, metric)]
    cands = s.scalars(select(Candidate).where(Candidate.study_id == study.id).order_by(Candidate.id)).all()
    jobs = s.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.id)).all()
    screens: dict[int, list[Job]] = {c.id: [] for c in cands}
    tunes: dict[int, Job] = {}
    for j in jobs:
        if j.kind == "screen":
            screens.setdefault(j.candidate_id, []).append(j)
        else:
            tunes.setdefault(j.candidate_id, j)
    ranked: list[RankRow] = []
    unranked: list[RankRow] = []
    for c in cands:
        runs = screens.get(c.id, [])
        row = RankRow(candidate_id=c.id, name=c.name, state=candidate_state(runs))
        scores = [
            v for v in (_score(j.result, metric) for j in runs if j.state == "succeeded") if v is not None
        ]
        row.preferred_lr = preferred_lr(runs)
        t = tunes.get(c.id)
        if t is not None:
            row.tuning_job_id, row.tuning_state = t.id, t.state
            if t.state == "succeeded" and t.result:
                row.tuned_score = _score(t.result, metric)
                row.recommended_lr = t.result.get("recommended_lr")
        if row.state == "succeeded" and scores:
            row.score = statistics.fmean(scores)
            row.score_std = statistics.stdev(scores) if len(scores) > 1 else None
            row.seeds = len(scores)
            ranked.append(row)
        else:
            row.seeds = len(scores)
            unranked.append(row)
    ranked.sort(key=lambda r: (-(r.score or 0.0) if higher else (r.score or 0.0), r.candidate_id))
    for i, r in enumerate(ranked):
        r.rank = i + 1
    for a in ranked:
        for b in ranked:
            if a is b or a.score is None or b.score is None:
                continue
            spread = (a.score_std or 0.0) + (b.score_std or 0.0)
            if abs(a.score - b.score) <= max(spread, 1e-12 * max(abs(a.score), abs(b.score), 1.0)):
                a.tied_with.append(b.candidate_id)
    return ranked, unranked


def screening_done(s: Session, study_id: int) -> bool:
    states = s.scalars(select(Job.state).where(Job.study_id == study_id, Job.kind == "screen")).all()
    return bool(states) and all(st in FINAL_STATES for st in states)


def studies_awaiting_auto_promotion(s: Session) -> list[int]:
    """Studies whose policy is ``auto``, not yet promoted, with every screening run ended."""
    rows = s.execute(select(Study.id, Study.policy).where(Study.auto_promoted_at.is_(None))).all()
    return [sid for sid, policy in rows if (policy or {}).get("auto") and screening_done(s, sid)]


def promote(
    s: Session,
    study: Study,
    candidate_ids: list[int],
    *,
    tuner: str,
    max_attempts: int,
    skip_unpromotable: bool = False,
) -> tuple[list[Job], list[Job]]:
    """Tuning jobs for ``candidate_ids``: ``(all_jobs, new_jobs)``; an existing job is returned, not doubled.

    Each starts from the rate the Alrao posterior preferred (posterior-weighted geometric
    mean, clipped to the screening range; geometric mean over seeds), when the screening's base
    optimizer is the one the tuner tunes. Otherwise (say Alrao-Adam screening, then ``fd2``,
    which tunes an SGD rate) the posterior's rates are on another optimizer's scale, so the
    job starts from the tuner's default rate and its config says so
    (``init_lr_source: "tuner_default"``).
    """
    from archscreen.core.tuning import get_tuner, initial_lr_from_screen, posterior_fits_tuner

    tuner_impl = get_tuner(tuner)
    same_scale = posterior_fits_tuner(study.screening.get("base", "sgd"), tuner_impl)

    out: list[Job] = []
    new: list[Job] = []
    for cid in candidate_ids:
        existing = s.scalar(select(Job).where(Job.candidate_id == cid, Job.kind == "tune", Job.seed == 0))
        if existing is not None:
            out.append(existing)
            continue
        runs = s.scalars(
            select(Job).where(Job.candidate_id == cid, Job.kind == "screen", Job.state == "succeeded")
        ).all()
        try:
            if not runs:
                raise ValueError(f"candidate {cid} has no successful screening run to start tuning from")
            lrs = []
            for j in runs:
                assert j.result is not None
                lr_range = j.result.get("lr_range")
                lrs.append(initial_lr_from_screen(j.result, tuple(lr_range) if lr_range else None))
        except ValueError:
            if skip_unpromotable:  # automatic promotion: promote the others rather than none
                continue
            raise
        job = Job(
            kind="tune",
            study_id=study.id,
            candidate_id=cid,
            seed=0,
            max_attempts=max_attempts,
            max_epochs=int(study.screening["max_epochs"]),
            config=(
                {"tuner": tuner, "init_lr": statistics.geometric_mean(lrs)}
                if same_scale
                else {
                    "tuner": tuner,
                    "init_lr": tuner_impl.default_init_lr(),
                    "init_lr_source": "tuner_default",
                }
            ),
        )
        try:
            with s.begin_nested():
                s.add(job)
                s.flush()
        except IntegrityError:  # promoted concurrently (another request, or auto-promotion)
            existing = s.scalar(select(Job).where(Job.candidate_id == cid, Job.kind == "tune", Job.seed == 0))
            assert existing is not None
            out.append(existing)
            continue
        out.append(job)
        new.append(job)
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
