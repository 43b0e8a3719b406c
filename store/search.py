"""Search studies (issue 29): the trial ↔ candidate links and the step lock.

Optuna keeps its own tables (``worker/search.py``); these rows are archscreen's side: which
candidate each trial number became, and what was told. The unique (study, number) key is the
idempotency of a search step: a repeated step finds the trial linked and makes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.config import SearchConfig
from archscreen.store.jobs import bump_study
from archscreen.store.models import Candidate, Job, SearchTrial, Study, _now
from archscreen.store.records import StudyRecord


@dataclass(frozen=True, slots=True)
class TrialLink:
    number: int
    candidate_id: int | None
    told: str | None
    value: float | None


@dataclass(frozen=True, slots=True)
class SearchProgress:
    asked: int
    told: int
    best_value: float | None
    best_params: dict[str, Any] | None
    pruned: int = 0
    failed: int = 0
    cpu_seconds: float = 0.0
    stopped: bool = False


def claim_step(s: Session, study_id: int, hold_s: float) -> bool:
    """Compare-and-set: this step may ask and tell; a step that crashed holding it is taken over
    after ``hold_s``. Commits, so the other steps see it at once."""
    now = _now()
    taken = s.execute(
        update(Study)
        .where(
            Study.id == study_id,
            or_(Study.search_step_at.is_(None), Study.search_step_at < now - timedelta(seconds=hold_s)),
        )
        .values(search_step_at=now)
    ).rowcount  # type: ignore[attr-defined]
    s.commit()
    return bool(taken)


def release_step(s: Session, study_id: int) -> None:
    s.execute(update(Study).where(Study.id == study_id).values(search_step_at=None))


def links_of(s: Session, study_id: int) -> dict[int, TrialLink]:
    rows = s.execute(
        select(SearchTrial.number, SearchTrial.candidate_id, SearchTrial.told, SearchTrial.value).where(
            SearchTrial.study_id == study_id
        )
    )
    return {r[0]: TrialLink(*r) for r in rows}


def link_trial(
    s: Session,
    study_id: int,
    number: int,
    *,
    candidate_id: int | None = None,
    told: str | None = None,
    refused: str | None = None,
) -> bool:
    """Record what trial ``number`` became; False if it was already recorded (a repeated step)."""
    try:
        with s.begin_nested():
            s.add(
                SearchTrial(
                    study_id=study_id, number=number, candidate_id=candidate_id, told=told, refused=refused
                )
            )
            s.flush()
    except IntegrityError:
        return False
    bump_study(s, study_id)
    return True


def mark_told(s: Session, study_id: int, number: int, told: str, value: float | None) -> None:
    s.execute(
        update(SearchTrial)
        .where(SearchTrial.study_id == study_id, SearchTrial.number == number)
        .values(told=told, value=value)
    )
    bump_study(s, study_id)


def num_params_of(s: Session, candidate_ids: list[int]) -> dict[int, int]:
    """Each candidate's parameter count (its spec report's): NSGA-II's second objective."""
    rows = s.execute(select(Candidate.id, Candidate.num_params).where(Candidate.id.in_(candidate_ids)))
    return {cid: int(n) for cid, n in rows}


def told_count(s: Session, study_id: int) -> int:
    q = select(func.count()).where(SearchTrial.study_id == study_id, SearchTrial.told.is_not(None))
    return int(s.scalar(q) or 0)


def cpu_spent(s: Session, study_id: int) -> float:
    """CPU-seconds the study's jobs have spent (``jobs.cpu_seconds``, as far as recorded)."""
    total = s.scalar(select(func.sum(Job.cpu_seconds)).where(Job.study_id == study_id))
    return float(total or 0.0)


def over_budget(s: Session, study_id: int, search: SearchConfig) -> bool:
    """The study has spent its ``budget_cpu_s``, or its owner stopped it: no new trial is asked."""
    if stopped(s, study_id):
        return True
    return search.budget_cpu_s is not None and cpu_spent(s, study_id) >= search.budget_cpu_s


def stopped(s: Session, study_id: int) -> bool:
    return s.scalar(select(Study.search_stopped_at).where(Study.id == study_id)) is not None


def stop(s: Session, study_id: int) -> None:
    """Stop the search: no trial is asked from now on; the running ones finish (a client cancels
    them if it wants), then the study ends as a spent budget ends it. Idempotent."""
    s.execute(
        update(Study)
        .where(Study.id == study_id, Study.search_stopped_at.is_(None))
        .values(search_stopped_at=_now())
    )
    bump_study(s, study_id)


def search_done(s: Session, study_id: int, search: SearchConfig) -> bool:
    """Every trial of the search was asked and told, or the budget is spent (or the search was
    stopped) and every trial asked was told (the running ones finished): the study may promote."""
    told = told_count(s, study_id)
    if told >= search.trials:
        return True
    if not over_budget(s, study_id, search):
        return False
    asked = int(s.scalar(select(func.count()).where(SearchTrial.study_id == study_id)) or 0)
    return told >= asked


def studies_searching(s: Session) -> list[int]:
    """Search studies with trials left to ask or tell: the maintenance pass steps each."""
    rows = s.execute(select(Study.id, Study.search).where(Study.search.is_not(None))).all()
    # search is JSON(none_as_null=True): a plain study's is SQL NULL; the guard covers rows written
    # as JSON null before that
    return [
        sid
        for sid, search in rows
        if search is not None and not search_done(s, sid, SearchConfig.model_validate(search))
    ]


def progress_of(s: Session, study_ids: list[int]) -> Mapping[int, SearchProgress]:
    """``asked``, ``told`` (``pruned``, ``failed`` among them), the best told value (minimised
    val_loss; with NSGA-II the least val_loss, not the Pareto front) with its candidate's params,
    and the CPU-seconds spent."""
    out: dict[int, SearchProgress] = {}
    for sid in study_ids:
        rows = s.execute(
            select(SearchTrial.told, SearchTrial.value, Candidate.params)
            .outerjoin(Candidate, Candidate.id == SearchTrial.candidate_id)
            .where(SearchTrial.study_id == sid)
        ).all()
        scored = [(v, p) for told, v, p in rows if told == "complete" and v is not None]
        best = min(scored, key=lambda vp: vp[0]) if scored else (None, None)
        out[sid] = SearchProgress(
            asked=len(rows),
            told=sum(1 for told, _, _ in rows if told is not None),
            best_value=best[0],
            best_params=best[1],
            pruned=sum(1 for told, _, _ in rows if told == "pruned"),
            failed=sum(1 for told, _, _ in rows if told == "fail"),
            cpu_seconds=cpu_spent(s, sid),
            stopped=stopped(s, sid),
        )
    return out


def search_over(s: Session, study: StudyRecord) -> bool:
    """Not a search study, or every trial told: what the automatic promotion waits for."""
    return study.search is None or search_done(s, study.id, study.search)


def refusals_of(s: Session, study_id: int) -> dict[int, str]:
    """Trial number -> why its point was refused before it trained (the search view shows it)."""
    rows = s.execute(
        select(SearchTrial.number, SearchTrial.refused).where(
            SearchTrial.study_id == study_id, SearchTrial.refused.is_not(None)
        )
    )
    return {r[0]: str(r[1]) for r in rows}


def asha_state(s: Session, study_id: int) -> dict[str, Any] | None:
    """The study's ASHA scheduler state (``core/asha.py``'s ``state_dict``), or None before its
    first search step. Read under the step lock: the step is its only writer."""
    return s.scalar(select(Study.asha).where(Study.id == study_id))


def save_asha_state(s: Session, study_id: int, state: Mapping[str, Any]) -> None:
    """Write the scheduler state in the caller's transaction (with the job changes it decided)."""
    s.execute(update(Study).where(Study.id == study_id).values(asha=dict(state)))
    bump_study(s, study_id)
