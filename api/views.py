"""Store records → response models (the one place that shapes API output)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from archscreen.api.schemas import (
    CandidateDetail,
    CandidateOut,
    EpochPoint,
    EstimateOut,
    JobOut,
    LayerSummary,
    ModelFileOut,
    Progress,
    RankRowOut,
    SearchOut,
    StudyOut,
)
from archscreen.core.names import ACTIVE_STATES, FINAL_STATES, RESULT_METRIC_NAMES
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.ranking import (
    SCORED_STATES,
    RankRow,
    candidate_state,
    estimate_of,
    preferred_lr,
    rung_epochs,
)
from archscreen.store.records import CandidateRecord, EpochRecord, JobRecord, StudyRecord


def study_out(
    study: StudyRecord,
    *,
    candidates: int,
    jobs_by_state: dict[str, int],
    search: search_store.SearchProgress | None = None,
) -> StudyOut:
    return StudyOut(
        id=study.id,
        name=study.name,
        dataset=study.dataset,
        screening=study.screening,  # re-hydrated by store/ (StudyRecord)
        policy=study.policy,
        created_at=study.created_at,
        candidates=candidates,
        jobs_by_state=jobs_by_state,
        auto_promoted=study.auto_promoted_at is not None,
        search=None
        if study.search is None or search is None
        else SearchOut(
            sampler=study.search.sampler,
            trials=study.search.trials,
            parallel=study.search.parallel,
            asked=search.asked,
            told=search.told,
            best_value=search.best_value,
            best_params=search.best_params,
            asha=study.search.asha,
            objectives=list(study.search.objectives),
            running=search.asked - search.told,
            pruned=search.pruned,
            failed=search.failed,
            budget_cpu_s=study.search.budget_cpu_s,
            cpu_seconds=search.cpu_seconds,
            stopped=search.stopped,
        ),
    )


def studies_out(s: Session, studies: list[StudyRecord]) -> list[StudyOut]:
    ids = [st.id for st in studies]
    counts = study_store.job_counts(s, ids)
    ncand = study_store.candidate_counts(s, ids)
    searches = search_store.progress_of(s, [st.id for st in studies if st.search is not None])
    return [
        study_out(
            st,
            candidates=ncand.get(st.id, 0),
            jobs_by_state=counts.get(st.id, {}),
            search=searches.get(st.id),
        )
        for st in studies
    ]


def progress(jobs: Sequence[JobRecord]) -> Progress:
    done = sum(j.epoch for j in jobs)
    total = sum(j.max_epochs for j in jobs) or 1
    # a finished job counts as complete whatever epoch early stopping ended it at
    done_frac = sum(1.0 if j.state in FINAL_STATES else j.epoch / max(j.max_epochs, 1) for j in jobs)
    frac = done_frac / max(len(jobs), 1)
    elapsed = max((j.elapsed_s for j in jobs), default=0.0)
    eta: float | None = None
    running = [j for j in jobs if j.state == "running" and j.epoch > 0]
    if running:
        eta = max(j.elapsed_s / j.epoch * (j.max_epochs - j.epoch) for j in running)
    elif jobs and all(j.state not in ACTIVE_STATES for j in jobs):
        eta = 0.0
    # model_construct: computed here from stored rows, so not validated again (the read path builds
    # one per job and candidate; the response model still documents and serialises it)
    return Progress.model_construct(
        epoch=done, max_epochs=total, fraction=round(frac, 4), elapsed_s=elapsed, eta_s=eta
    )


def job_out(job: JobRecord, metrics: Sequence[EpochRecord], *, with_result: bool = True) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        candidate_id=job.candidate_id,
        study_id=job.study_id,
        seed=job.seed,
        state=job.state,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        cancel_requested=job.cancel_requested,
        error=job.error,
        progress=progress([job]),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=job.result if with_result else None,
        curves=[
            EpochPoint.model_construct(  # stored rows, as they were validated on the way in
                epoch=m.epoch,
                train_loss=m.train_loss,
                val_loss=m.val_loss,
                val_accuracy=m.val_accuracy,
                seconds=m.seconds,
                extra=m.extra or {},
            )
            for m in metrics
        ],
        model=(
            ModelFileOut(bytes=job.model_bytes, sha256=job.model_sha256)
            if job.model_sha256 is not None and job.model_bytes is not None
            else None
        ),
        start=job.config.get("start") if job.kind == "tune" else None,
        init_lr=job.config.get("init_lr") if job.kind == "tune" else None,
        target_epochs=job.config.get("target_epochs") if job.kind == "screen" else None,
        cpu_seconds=job.cpu_seconds,
    )


def candidate_out(cand: CandidateRecord, jobs: Sequence[JobRecord], *, created: bool = False) -> CandidateOut:
    return CandidateOut(
        id=cand.id,
        study_id=cand.study_id,
        name=cand.name,
        spec_hash=cand.spec_hash,
        num_params=cand.num_params,
        state=candidate_state(jobs),
        rung_epochs=rung_epochs(jobs),
        created=created,
        created_at=cand.created_at,
        cpu_seconds=sum(j.cpu_seconds for j in jobs),
    )


def estimate_out(estimate: dict[str, Any] | None) -> EstimateOut | None:
    """``store.ranking.estimate_of``'s dict as the response model (built from stored numbers it
    already checked, so not validated again)."""
    return None if estimate is None else EstimateOut.model_construct(**estimate)


def rank_row_out(row: RankRow) -> RankRowOut:
    """One ranking row (``/ranking``, ``/summary``), its estimate as :class:`EstimateOut`."""
    d = row.to_dict()
    d["estimate"] = estimate_out(d.get("estimate"))
    return RankRowOut.model_construct(**d)


def _mean(values: list[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.fmean(xs) if xs else None


def candidate_detail(s: Session, cand: CandidateRecord, since_epoch: int = 0) -> CandidateDetail:
    runs = study_store.jobs_of(s, [cand.id], kind="screen")[cand.id]
    metrics = study_store.metrics_of(s, [j.id for j in runs], since_epoch)
    ok = [j.result for j in runs if j.state in SCORED_STATES and j.result]
    first = ok[0] if ok else next((j.result for j in runs if j.result), None)
    posterior = first.get("switch_posterior") if first else None
    errors = [f"seed {j.seed}: {j.error}" for j in runs if j.error]
    base = candidate_out(cand, runs)
    return CandidateDetail(
        **base.model_dump(),
        spec=cand.spec,
        summary=[LayerSummary.model_validate(row) for row in cand.summary],
        progress=progress(runs),
        metrics={
            k: _mean([r.get(k) for r in ok])
            for k in RESULT_METRIC_NAMES
            if any(r.get(k) is not None for r in ok)
        },
        preferred_lr=preferred_lr(runs),
        switch_posterior=posterior,
        estimate=estimate_out(estimate_of(runs)),
        error="\n".join(errors) or None,
        runs=[job_out(j, metrics[j.id]) for j in runs],
    )
