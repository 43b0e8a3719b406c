"""Ranking, promotion to tuning jobs, tuning jobs and the leaderboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.orm import Session

from archscreen.api.deps import MAX_INT, DatabaseDep, IdPath, PageDep, SessionDep, SettingsDep, TenantDep
from archscreen.api.errors import ApiValidationError, item
from archscreen.api.etag import make_etag, not_modified, require
from archscreen.api.limits import check_new_jobs
from archscreen.api.routes.studies import NOT_FOUND, NOT_MODIFIED, load_study
from archscreen.api.schemas import (
    CancelOut,
    ErrorResponse,
    JobOut,
    LeaderboardOut,
    LeaderboardRow,
    LimitResponse,
    Page,
    PromoteIn,
    RankingOut,
)
from archscreen.api.views import job_out, rank_row_out
from archscreen.core.names import RankMetric, TunerName
from archscreen.settings import Settings
from archscreen.store import Database, Tenant, quotas
from archscreen.store import jobs as job_store
from archscreen.store import ranking as ranking_store
from archscreen.store import studies as study_store
from archscreen.store.blobs import model_store
from archscreen.store.records import JobRecord, StudyRecord
from archscreen.worker import promotion
from archscreen.worker.queue import enqueue

router = APIRouter(tags=["ranking and tuning"])


@router.get("/studies/{study_id}/ranking", response_model=RankingOut, responses=NOT_FOUND)
def get_ranking(
    study_id: IdPath,
    session: SessionDep,
    tenant: TenantDep,
    metric: Annotated[
        RankMetric,
        Query(
            description="A stored metric, or `estimate`: the score extrapolated from the screening curve "
            "(best first by the study's task; overlapping estimate intervals are ties)."
        ),
    ] = "val_loss",
    k: Annotated[int | None, Query(ge=1, le=MAX_INT, description="Only the top k.")] = None,
) -> RankingOut:
    """Candidates ordered by their Alrao score (mean over seeds, with the spread); ties marked.

    Every row carries its ``estimate`` (the extrapolated best-rate score and interval, or null)."""
    study = load_study(session, tenant.id, study_id)
    cands, jobs = study_store.study_rows(session, study.id)
    ranked, unranked = ranking_store.rank(cands, jobs, metric)
    total = len(ranked)
    rows = ranked[:k] if k else ranked
    return RankingOut(
        study_id=study.id,
        metric=metric,
        higher_is_better=ranking_store.metric_higher_is_better(metric, jobs),
        data=[rank_row_out(r) for r in rows],
        count=total,
        unranked=[rank_row_out(r) for r in unranked],
    )


def _promote(
    session: Session,
    db: Database,
    settings: Settings,
    tenant: Tenant,
    study: StudyRecord,
    candidate_ids: list[int],
    tuner: TunerName,
    starts: int | None,
) -> tuple[list[JobRecord], list[JobRecord]]:
    # the active-job limit is read and the jobs inserted in one transaction, one writer per tenant
    quotas.lock_tenant(session, tenant.id)
    try:
        jobs, new = promotion.promote(
            session, study, candidate_ids, tuner=tuner, max_attempts=settings.max_attempts, starts=starts
        )
    except ValueError as exc:
        raise ApiValidationError([item(["body", "candidate_ids"], str(exc))]) from None
    check_new_jobs(session, settings, tenant, len(new), flushed=True)  # a refusal rolls back
    session.commit()  # enqueue only committed jobs
    enqueue(db, settings, [(j.id, j.kind) for j in new])
    return jobs, new


@router.post(
    "/studies/{study_id}/promote",
    response_model=Page[JobOut],
    status_code=status.HTTP_201_CREATED,
    responses={
        **NOT_FOUND,
        200: {"model": Page[JobOut], "description": "Nothing new: every candidate already had a tuning job."},
        429: {"model": LimitResponse, "description": "The tenant is at its active-job limit."},
        422: {"model": ErrorResponse},
    },
)
def promote(
    study_id: IdPath,
    body: PromoteIn,
    session: SessionDep,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: TenantDep,
) -> Any:
    """Create tuning jobs: ``starts`` per candidate (default: the policy's, 3), each a job of its own
    from a rate on the Alrao Switch posterior (median, 25th, 75th percentile; ``starts=1``: the
    posterior's weighted geometric mean). The leaderboard answers with each candidate's best start
    by validation.

    Promoting a candidate again returns its existing jobs (200 when nothing new was created).
    """
    study = load_study(session, tenant.id, study_id)
    if body.candidate_ids is not None:
        ids = list(dict.fromkeys(body.candidate_ids))
        known = set(study_store.candidate_ids(session, study.id))
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ApiValidationError(
                [item(["body", "candidate_ids"], f"not candidates of this study: {unknown}")]
            )
    else:
        ranked, _ = ranking_store.rank_study(session, study.id, study.policy.metric)
        if not ranked:
            raise ApiValidationError([item(["body", "top_k"], "no candidate has finished screening yet")])
        assert body.top_k is not None
        ids = [r.candidate_id for r in ranked[: body.top_k]]
    jobs, new = _promote(
        session, db, settings, tenant, study, ids, promotion.choose_tuner(study, body.tuner), body.starts
    )
    page = Page[JobOut](data=[job_out(j, [], with_result=False) for j in jobs], count=len(jobs))
    return JSONResponse(page.model_dump(mode="json"), status_code=201 if new else 200)


@router.get("/studies/{study_id}/tuning-jobs", response_model=Page[JobOut], responses=NOT_FOUND)
def list_tuning_jobs(study_id: IdPath, session: SessionDep, tenant: TenantDep, page: PageDep) -> Page[JobOut]:
    study = load_study(session, tenant.id, study_id)
    jobs = [
        j
        for js in study_store.jobs_of(
            session, study_store.candidate_ids(session, study.id), kind="tune"
        ).values()
        for j in js
    ]
    jobs.sort(key=lambda j: j.id)
    limit, offset = page
    return Page(
        data=[job_out(j, [], with_result=True) for j in jobs[offset : offset + limit]], count=len(jobs)
    )


def _load_tuning_job(session: Session, tenant_id: int, job_id: int) -> JobRecord:
    job = study_store.get_job(session, tenant_id, job_id, kind="tune")
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tuning job {job_id} not found")
    return job


@router.get(
    "/tuning-jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorResponse}, **NOT_MODIFIED}
)
def get_tuning_job(
    job_id: IdPath,
    request: Request,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    since: Annotated[int, Query(ge=0, le=MAX_INT, description="Only curve points after this epoch.")] = 0,
) -> Any:
    """Status, progress, the learning-rate trajectory (``result.trajectory``), curves, ``recommended_lr``."""
    _, version = require(study_store.version_of(session, tenant.id, job_id=job_id), "tuning job", job_id)
    etag = make_etag("j", job_id, version, since)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    job = _load_tuning_job(session, tenant.id, job_id)
    response.headers["ETag"] = etag
    return job_out(job, study_store.metrics_of(session, [job.id], since)[job.id])


@router.post(
    "/tuning-jobs/{job_id}/cancel",
    response_model=CancelOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorResponse}},
)
def cancel_tuning_job(job_id: IdPath, session: SessionDep, tenant: TenantDep) -> CancelOut:
    job = _load_tuning_job(session, tenant.id, job_id)
    return CancelOut(id=job.id, states={job.id: job_store.request_cancel(session, job.id)})


MODEL_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The model file: ``torch.save({format, state_dict, spec, lr, tuner, metrics, "
        "dataset, seed, job_id})``; load it with ``torch.load(path, weights_only=True)``.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Content-Disposition": {"schema": {"type": "string"}, "description": "attachment; filename=…"},
            "X-Content-SHA256": {"schema": {"type": "string"}, "description": "The file's sha256 (hex)."},
        },
    },
    404: {"model": ErrorResponse, "description": "No such tuning job (or another tenant's)."},
    409: {
        "model": ErrorResponse,
        "description": "The job has not succeeded, or it has no model file (the detail says which).",
    },
}


@router.get(
    "/tuning-jobs/{job_id}/model",
    response_class=FileResponse,
    responses=MODEL_FILE_RESPONSES,
)
def get_tuning_model(job_id: IdPath, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> Any:
    """The tuned model of a succeeded tuning job: its best epoch's weights with the spec and rate."""
    job = _load_tuning_job(session, tenant.id, job_id)
    if job.state != "succeeded":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"tuning job {job_id} is {job.state}: a model is handed over once the job has succeeded",
        )
    if job.model_sha256 is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"tuning job {job_id} succeeded without a model file (it finished before the service "
            "kept tuned models)",
        )
    store = model_store(settings.dataset_store_url, settings.resolved_artifacts_dir)
    try:
        path = store.local_path(job.model_sha256, settings.resolved_artifacts_dir / "model-cache")
    except FileNotFoundError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"tuning job {job_id}'s model file is missing from the blob store"
        ) from None
    study = study_store.get_study(session, tenant.id, job.study_id)
    stem = f"{study.name}-tuning-job-{job_id}" if study is not None else f"tuning-job-{job_id}"
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{_safe_filename(stem)}.pt",
        headers={"X-Content-SHA256": job.model_sha256},
    )


def _safe_filename(stem: str) -> str:
    """A study name as a file name: letters, digits, ``-``, ``_`` and ``.`` (others become ``_``)."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in stem)[:120]


@router.get("/studies/{study_id}/leaderboard", response_model=LeaderboardOut, responses=NOT_FOUND)
def leaderboard(study_id: IdPath, session: SessionDep, tenant: TenantDep) -> LeaderboardOut:
    """The final answer per candidate: screened score, tuned score and recommended rate (of the
    candidate's best tuning job by validation, among its starts; every start stays listed at
    ``/tuning-jobs``)."""
    study = load_study(session, tenant.id, study_id)
    metric = study.policy.metric
    ranked, _ = ranking_store.rank_study(session, study.id, metric)
    rows = [
        LeaderboardRow(
            rank=r.rank or 0,
            candidate_id=r.candidate_id,
            name=r.name,
            screened_score=r.score or 0.0,
            tuned_score=r.tuned_score,
            recommended_lr=r.recommended_lr,
            preferred_lr=r.preferred_lr,
            tuning_state=r.tuning_state,
            tuning_job_id=r.tuning_job_id,
            tuning_start=r.tuning_start,
        )
        for r in ranked
    ]
    higher = ranking_store.METRICS[metric]
    tuned = [r for r in rows if r.tuned_score is not None]
    pool = tuned or rows
    best = None
    if pool:
        scores = [(r.tuned_score if tuned else r.screened_score) or 0.0 for r in pool]
        pick = scores.index(max(scores) if higher else min(scores))
        best = pool[pick]
    return LeaderboardOut(study_id=study.id, metric=metric, data=rows, count=len(rows), best=best)
