"""What dashboards poll: one summary per study (ETag'd) and a Server-Sent Events stream of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.orm import Session

from archscreen.api.deps import DatabaseDep, IdPath, ReadTenantDep, StreamTenantDep
from archscreen.api.etag import full_read, make_etag, not_modified, require
from archscreen.api.routes.studies import NOT_FOUND, NOT_MODIFIED
from archscreen.api.schemas import CandidateRow, RankingOut, StudySummary
from archscreen.api.views import estimate_out, job_out, progress, rank_row_out, study_out
from archscreen.store import Database
from archscreen.store import ranking as ranking_store
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.records import JobRecord, StudyRecord

router = APIRouter(tags=["polling"])
EVENT_POLL_S = 1.0  # how often a stream checks the study's version (one indexed read)


def build_summary(s: Session, study: StudyRecord) -> StudySummary:
    """The study's summary from one read of its candidates and jobs (ranked and shown from the same rows)."""
    metric = study.policy.metric
    cands, jobs = study_store.study_rows(s, study.id)
    ranked, unranked = ranking_store.rank(cands, jobs, metric)
    rows = {r.candidate_id: r for r in [*ranked, *unranked]}
    screens: dict[int, list[JobRecord]] = {c.id: [] for c in cands}
    tunes: list[JobRecord] = []
    for j in jobs:
        (screens.setdefault(j.candidate_id, []) if j.kind == "screen" else tunes).append(j)
    states: dict[str, int] = {}
    out_rows = []
    for c in cands:
        r = rows[c.id]
        states[r.state] = states.get(r.state, 0) + 1
        errors = [j.error for j in screens[c.id] if j.error]
        out_rows.append(
            CandidateRow.model_construct(  # from stored rows: not validated again (see views.progress)
                id=c.id,
                name=c.name,
                state=r.state,
                num_params=c.num_params,
                progress=progress(screens[c.id]),
                score=r.score,
                score_std=r.score_std,
                rank=r.rank,
                preferred_lr=r.preferred_lr,
                estimate=estimate_out(r.estimate),
                error=errors[0] if errors else None,
                rung_epochs=r.rung_epochs,
                cpu_seconds=sum(j.cpu_seconds for j in screens[c.id]),
            )
        )
    ranking = RankingOut(
        study_id=study.id,
        metric=metric,
        higher_is_better=ranking_store.METRICS[metric],
        data=[rank_row_out(r) for r in ranked],
        count=len(ranked),
        unranked=[rank_row_out(r) for r in unranked],
    )
    by_state: dict[str, int] = {}
    for j in jobs:
        by_state[j.state] = by_state.get(j.state, 0) + 1
    search = search_store.progress_of(s, [study.id]).get(study.id) if study.search is not None else None
    return StudySummary(
        # counted from the rows read
        study=study_out(study, candidates=len(cands), jobs_by_state=by_state, search=search),
        version=study.version,
        candidate_states=states,
        progress=progress([j for j in jobs if j.kind == "screen"]),
        candidates=out_rows,
        ranking=ranking,
        tuning_jobs=[job_out(j, [], with_result=True) for j in tunes],
        cpu_seconds=sum(j.cpu_seconds for j in jobs),
    )


@router.get(
    "/studies/{study_id}/summary", response_model=StudySummary, responses={**NOT_FOUND, **NOT_MODIFIED}
)
async def study_summary(study_id: IdPath, request: Request, db: DatabaseDep, tenant: ReadTenantDep) -> Any:
    """Counts by state, overall progress, each candidate's progress and score, the ranking, tuning jobs."""
    # async, with the database work in one trip to the thread pool (see candidates.get_candidate)
    return await run_in_threadpool(_read_summary, db, request, tenant.id, study_id)


def _read_summary(db: Database, request: Request, tenant_id: int, study_id: int) -> Response:
    with db.session() as session:
        _, version = require(study_store.version_of(session, tenant_id, study_id=study_id), "study", study_id)
        etag = make_etag("summary", study_id, version)
        if (cached := not_modified(request, etag)) is not None:
            return cached
        return full_read(request, tenant_id, etag, lambda: _build(session, tenant_id, study_id))


def _build(session: Session, tenant_id: int, study_id: int) -> StudySummary:
    study = study_store.get_study(session, tenant_id, study_id)
    assert study is not None  # its version was just read
    return build_summary(session, study)


def _version(db: Database, tenant_id: int, study_id: int) -> int | None:
    with db.session() as s:
        found = study_store.version_of(s, tenant_id, study_id=study_id)
    return None if found is None else found[1]


def _summary_json(db: Database, study_id: int) -> str:
    with db.session() as s:
        study = study_store.study_by_id(s, study_id)
        assert study is not None
        return build_summary(s, study).model_dump_json()


class _EventStream(EventSourceResponse):
    """FastAPI's SSE response, documented right: FastAPI states a route's other responses (404,
    401, ...) in its response class's media type, but ours are JSON like every other error."""

    # the stream itself is still sent as text/event-stream (by FastAPI's SSE path, not this class)
    media_type = None  # type: ignore[assignment]


def _streamed_study(study_id: IdPath, tenant: StreamTenantDep, db: DatabaseDep) -> int:
    """The study's id, or a 404 before the stream starts (a generator's own errors come too late)."""
    require(None if (v := _version(db, tenant.id, study_id)) is None else (study_id, v), "study", study_id)
    return study_id


@router.get(
    "/studies/{study_id}/events",
    response_class=_EventStream,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`summary` events."}, **NOT_FOUND},
)
async def study_events(
    study_id: Annotated[int, Depends(_streamed_study)],
    request: Request,
    tenant: StreamTenantDep,
    db: DatabaseDep,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: a ``summary`` event (the body of ``/summary``) whenever the study changes.

    The event id is the study version; a ``gone`` event ends the stream when the study is deleted.
    FastAPI sends a ``: ping`` comment after 15 s without an event, which keeps idle connections
    open through proxies. Browsers whose EventSource cannot send the Authorization header read it
    with ``fetch`` (as the dashboard does).
    """
    yield ServerSentEvent(retry=2000)
    last: int | None = None
    while not await request.is_disconnected():  # a closed stream stops polling within EVENT_POLL_S
        current = await run_in_threadpool(_version, db, tenant.id, study_id)
        if current is None:
            yield ServerSentEvent(event="gone", raw_data="{}")
            return
        if current != last:
            body = await run_in_threadpool(_summary_json, db, study_id)
            yield ServerSentEvent(id=str(current), event="summary", raw_data=body)
            last = current
        await asyncio.sleep(EVENT_POLL_S)
