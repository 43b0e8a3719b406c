"""Candidates: submit (validated by shape inference before anything is queued), read, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from archscreen.api.deps import (
    MAX_INT,
    DatabaseDep,
    IdPath,
    PageDep,
    ReadTenantDep,
    SessionDep,
    SettingsDep,
    TenantDep,
)
from archscreen.api.errors import ApiValidationError, item, loc_of
from archscreen.api.etag import full_read, make_etag, not_modified, require
from archscreen.api.limits import check_candidates
from archscreen.api.routes.studies import NOT_FOUND, NOT_MODIFIED, load_study
from archscreen.api.schemas import (
    CancelOut,
    CandidateCreate,
    CandidateDetail,
    CandidateOut,
    CandidatesIn,
    ErrorResponse,
    LimitResponse,
    Page,
)
from archscreen.api.views import candidate_detail, candidate_out
from archscreen.store import Database, quotas
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.records import CandidateRecord
from archscreen.worker.queue import enqueue

router = APIRouter(tags=["candidates"])


def _validated(c: CandidateCreate, prefix: list[str | int], info: Any, max_bytes: int) -> dict[str, Any]:
    """Parse and shape-check one candidate; raises :class:`ApiValidationError` naming field paths."""
    from archscreen.core.spec import SpecError, parse_spec, spec_hash, validate_spec
    from archscreen.core.spec.parse import check_document, load_spec_text

    at = [*prefix, "spec"]
    raw = c.spec
    try:
        if not isinstance(raw, str):
            check_document(raw)  # bounded depth first: json.dumps of a 10^4-deep dict recurses
        size = len(raw.encode()) if isinstance(raw, str) else len(json.dumps(raw))
        if size > max_bytes:
            raise ApiValidationError([item(at, f"spec is {size} bytes; the limit is {max_bytes}")])
        if isinstance(raw, str):
            # the same bounded loader as the CLI: alias expansion, depth and node count are capped
            raw = load_spec_text(raw)
            if not isinstance(raw, dict):
                raise ApiValidationError([item(at, "expected a mapping with 'layers' and 'head'")])
        arch = parse_spec(raw)
        report = validate_spec(arch, info)
    except SpecError as exc:
        raise ApiValidationError(
            [item([*at, *([] if i.path == "spec" else loc_of(i.path))], i.message) for i in exc.issues]
        ) from None
    return {
        "name": c.name or arch.name,
        "spec": raw,
        "spec_hash": spec_hash(arch),
        "num_params": report.num_params,
        "summary": [r.model_dump(mode="json") for r in report.rows],
    }


def _validated_all(
    cands: list[CandidateCreate], is_list: bool, info: Any, max_bytes: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, c in enumerate(cands):
        try:
            rows.append(_validated(c, ["body", i] if is_list else ["body"], info, max_bytes))
        except ApiValidationError as exc:
            errors += exc.items
    return rows, errors


def _replay(session: SessionDep, tenant_id: int, key: str, request_hash: str) -> JSONResponse | None:
    """The stored response of the first request with ``key``; a 409 if that request was different."""
    prior = study_store.idempotent_response(session, tenant_id, key)
    if prior is None:
        return None
    if prior.request_hash != request_hash:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "Idempotency-Key was already used with a different request"
        )
    return JSONResponse(prior.body, status_code=prior.status)


@router.post(
    "/studies/{study_id}/candidates",
    response_model=Page[CandidateOut],
    status_code=status.HTTP_201_CREATED,
    responses={
        **NOT_FOUND,
        200: {"model": Page[CandidateOut], "description": "Nothing new was created."},
        429: {"model": LimitResponse, "description": "The tenant is at its active-job limit."},
        422: {"model": ErrorResponse},
    },
)
def add_candidates(
    study_id: IdPath,
    body: Annotated[CandidatesIn, Body()],
    session: SessionDep,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Add one candidate (an object) or several (a list); every spec is validated before any is stored.

    The same canonical spec twice in a study returns the existing candidate (``created: false``).
    With an ``Idempotency-Key`` header a retried request replays the first response.
    """
    study = load_study(session, tenant.id, study_id)
    if study.search is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "a search study's candidates are its trials (Optuna)")
    cands = body if isinstance(body, list) else [body]
    if not cands:
        raise ApiValidationError([item(["body"], "expected at least one candidate")])
    if len(cands) > settings.max_candidates_per_request:
        raise ApiValidationError(
            [
                item(
                    ["body"],
                    f"{len(cands)} candidates; at most {settings.max_candidates_per_request} per request",
                )
            ]
        )
    request_hash = hashlib.sha256(
        json.dumps([study_id, [c.model_dump() for c in cands]], sort_keys=True).encode()
    ).hexdigest()
    replay = _replay(session, tenant.id, idempotency_key, request_hash) if idempotency_key else None
    if replay is not None:
        return replay  # a retry: nothing is validated or stored again
    from archscreen.api.routes.datasets import dataset_info

    info = dataset_info(session, tenant.id, study.dataset)
    rows, errors = _validated_all(cands, isinstance(body, list), info, settings.max_spec_bytes)
    if errors:
        raise ApiValidationError(errors)
    # From here to the commit, one transaction that no other write of this tenant interleaves: the
    # key's replay, the limits and the inserts are decided together (concurrent requests queue here).
    quotas.lock_tenant(session, tenant.id)
    replay = _replay(session, tenant.id, idempotency_key, request_hash) if idempotency_key else None
    if replay is not None:
        return replay  # a concurrent request with this key committed first
    check_candidates(session, settings, tenant, study, [row["spec_hash"] for row in rows])
    out: list[CandidateOut] = []
    new_jobs: list[tuple[int, str]] = []
    for row in rows:
        cand, created, jobs = study_store.add_candidate(
            session, study, max_attempts=settings.max_attempts, **row
        )
        new_jobs += [(j.id, j.kind) for j in jobs]
        runs = jobs or study_store.jobs_of(session, [cand.id], kind="screen")[cand.id]
        out.append(candidate_out(cand, runs, created=created))
    page = Page[CandidateOut](data=out, count=len(out))
    code = status.HTTP_201_CREATED if any(c.created for c in out) else status.HTTP_200_OK
    if idempotency_key and not study_store.save_idempotent_response(
        session,
        tenant.id,
        idempotency_key,
        request_hash,
        {"status": code, "body": page.model_dump(mode="json")},
    ):
        # cannot happen under the tenant lock; if it did, this request's inserts must not stand
        raise HTTPException(status.HTTP_409_CONFLICT, "Idempotency-Key is being used by another request")
    session.commit()  # enqueue only what is committed: a worker must find the row
    enqueue(db, settings, new_jobs)
    return JSONResponse(page.model_dump(mode="json"), status_code=code)


@router.get("/studies/{study_id}/candidates", response_model=Page[CandidateOut], responses=NOT_FOUND)
def list_candidates(
    study_id: IdPath, session: SessionDep, tenant: TenantDep, page: PageDep
) -> Page[CandidateOut]:
    study = load_study(session, tenant.id, study_id)
    limit, offset = page
    cands, total = study_store.list_candidates(session, study.id, limit=limit, offset=offset)
    jobs = study_store.jobs_of(session, [c.id for c in cands], kind="screen")
    return Page(data=[candidate_out(c, jobs[c.id]) for c in cands], count=total)


def _load_candidate(session: SessionDep, tenant_id: int, candidate_id: int) -> CandidateRecord:
    found = study_store.get_candidate(session, tenant_id, candidate_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"candidate {candidate_id} not found")
    return found


@router.get(
    "/candidates/{candidate_id}",
    response_model=CandidateDetail,
    responses={404: {"model": ErrorResponse}, **NOT_MODIFIED},
)
async def get_candidate(
    candidate_id: IdPath,
    request: Request,
    db: DatabaseDep,
    tenant: ReadTenantDep,
    since: Annotated[int, Query(ge=0, le=MAX_INT, description="Only curve points after this epoch.")] = 0,
) -> Any:
    """Status, progress (epoch / max, elapsed, ETA), metrics, curves, Switch posterior, preferred rate.

    Sends a weak ``ETag``; with ``If-None-Match`` an unchanged candidate is a ``304``.
    """
    # async, with the database work in one trip to the thread pool (a sync route with a session
    # and an authenticated tenant takes four): the polled path's cost is mostly such overhead
    return await run_in_threadpool(_read_candidate, db, request, tenant.id, candidate_id, since)


def _read_candidate(
    db: Database, request: Request, tenant_id: int, candidate_id: int, since: int
) -> Response:
    with db.session() as session:
        _, version = require(
            study_store.version_of(session, tenant_id, candidate_id=candidate_id), "candidate", candidate_id
        )
        etag = make_etag("c", candidate_id, version, since)
        if (cached := not_modified(request, etag)) is not None:
            return cached
        return full_read(
            request,
            tenant_id,
            etag,
            lambda: candidate_detail(session, _load_candidate(session, tenant_id, candidate_id), since),
        )


@router.post(
    "/candidates/{candidate_id}/cancel",
    response_model=CancelOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorResponse}},
)
def cancel_candidate(
    candidate_id: IdPath, session: SessionDep, settings: SettingsDep, tenant: TenantDep
) -> CancelOut:
    """Cancel the candidate's screening runs: queued ones at once, running ones at their next step."""
    cand = _load_candidate(session, tenant.id, candidate_id)
    runs = study_store.jobs_of(session, [cand.id], kind="screen")[cand.id]
    states = {j.id: job_store.request_cancel(session, j.id) for j in runs}
    from archscreen.worker.promotion import check_due, request_check

    # this cancel may have ended an `auto` study's screening: a worker promotes it (not this request:
    # ranking and promotion are the worker's). One message per study, only where it can promote; the
    # workers' maintenance pass runs the same check a few seconds later if the message is lost
    due = check_due(session, cand.study_id, resend_after_s=settings.lost_message_grace_s)
    session.commit()
    if due:
        request_check(settings, cand.study_id)
    return CancelOut(id=cand.id, states=states)
