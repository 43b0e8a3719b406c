"""/api/v1/studies: create, list, read."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from archscreen.api.deps import IdPath, PageDep, SessionDep, SettingsDep, TenantDep
from archscreen.api.errors import ApiValidationError, item, loc_of
from archscreen.api.etag import make_etag, not_modified, require
from archscreen.api.schemas import ErrorResponse, Page, StudyCreate, StudyOut
from archscreen.api.views import studies_out
from archscreen.store import studies as study_store
from archscreen.store.records import StudyRecord
from archscreen.worker.search import request_step

router = APIRouter(prefix="/studies", tags=["studies"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such study for this tenant."}
}


def load_study(session: SessionDep, tenant_id: int, study_id: int) -> StudyRecord:
    study = study_store.get_study(session, tenant_id, study_id)
    if study is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"study {study_id} not found")
    return study


@router.post(
    "",
    response_model=StudyOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def create_study(
    body: StudyCreate, session: SessionDep, settings: SettingsDep, tenant: TenantDep, response: Response
) -> StudyOut:
    """A study of submitted candidates, or a search study (``space`` + ``search``): Optuna then asks
    its trials, each screened as a candidate (worker/search.py)."""
    from archscreen.api.routes.datasets import dataset_info, train_rows_of

    dataset_info(session, tenant.id, body.dataset)  # a built-in name or one of this tenant's ds_<id>
    try:  # max_epochs "auto": the dataset's measured cap, or the upload's step rule (core/defaults.py)
        screening = body.screening.for_dataset(body.dataset, train_rows_of(session, tenant.id, body.dataset))
    except ValueError as exc:  # an upload with no training rows to scale by
        raise ApiValidationError([item(["body", "screening", "max_epochs"], str(exc))]) from None
    space = None if body.space is None else _checked_space(body.space, settings.max_spec_bytes)
    if space is not None and body.search is not None:
        asha = body.search.asha
        cap = screening.epoch_cap  # resolved above ("auto": the dataset's cap)
        if asha.enabled and asha.min_epochs > cap:
            raise ApiValidationError(
                [
                    item(
                        ["body", "search", "asha", "min_epochs"],
                        f"min_epochs {asha.min_epochs} exceeds screening.max_epochs "
                        f"{cap}: the first rung must fit the budget",
                    )
                ]
            )
    if space is not None and body.search is not None and body.search.sampler == "grid":
        _check_grid(space, body.search.trials)
    try:
        study = study_store.create_study(
            session,
            tenant.id,
            name=body.name,
            dataset=body.dataset,
            screening=screening,
            policy=body.policy,
            space=space,
            search=body.search if space is not None else None,
        )
    except study_store.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    response.headers["Location"] = f"/api/v1/studies/{study.id}"
    out = studies_out(session, [study])[0]
    if study.search is not None:
        session.commit()  # the step's worker must find the study
        request_step(settings, study)
    return out


def _checked_space(raw: dict[str, Any] | str, max_bytes: int) -> dict[str, Any]:
    """The space document, compiled once by ``parse_space`` (422 naming ``body.space...``)."""
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.parse import check_document
    from archscreen.core.spec.space import load_space_document, parse_space

    at: list[str | int] = ["body", "space"]
    try:
        if not isinstance(raw, str):
            check_document(raw)  # bounded depth before json.dumps
        size = len(raw.encode()) if isinstance(raw, str) else len(json.dumps(raw))
        if size > max_bytes:
            raise ApiValidationError([item(at, f"space is {size} bytes; the limit is {max_bytes}")])
        document = load_space_document(raw)
        parse_space(document)
    except SpecError as exc:
        raise ApiValidationError(
            [item([*at, *([] if i.path == "spec" else loc_of(i.path))], i.message) for i in exc.issues]
        ) from None
    return dict(document)


def _check_grid(document: dict[str, Any], trials: int) -> None:
    """A grid search needs every parameter discrete and ``trials`` equal to the grid's size: Optuna's
    GridSampler visits a random subset of a larger grid, and repeats points past its size (in
    ask-and-tell it cannot stop the study). 422 naming ``body.search.sampler`` with the reason."""
    from archscreen.config import MAX_TRIALS
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.space import grid_size, parse_space

    at: list[str | int] = ["body", "search", "sampler"]
    try:
        size = grid_size(parse_space(document))
    except SpecError as exc:
        reasons = "; ".join(f"{i.path}: {i.message}" for i in exc.issues[:5])
        raise ApiValidationError([item(at, f"grid: {reasons}")]) from None
    if size != trials:
        fix = (
            f"set trials to {size}"
            if size <= MAX_TRIALS
            else f"more than the {MAX_TRIALS} trials a study may ask: fix parameters (or use tpe or random)"
        )
        raise ApiValidationError(
            [item(at, f"grid: the space's grid has {size:,} points and trials is {trials}; {fix}")]
        )


@router.get("", response_model=Page[StudyOut])
def list_studies(
    session: SessionDep,
    tenant: TenantDep,
    page: PageDep,
    name: Annotated[str | None, Query(max_length=200, description="Only the study of this name.")] = None,
) -> Page[StudyOut]:
    if name is not None:
        found = study_store.get_study_by_name(session, tenant.id, name)
        rows = [found] if found is not None else []
        return Page(data=studies_out(session, rows), count=len(rows))
    limit, offset = page
    rows, total = study_store.list_studies(session, tenant.id, limit=limit, offset=offset)
    return Page(data=studies_out(session, rows), count=total)


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (If-None-Match)."}}


@router.get("/{study_id}", response_model=StudyOut, responses={**NOT_FOUND, **NOT_MODIFIED})
def get_study(
    study_id: IdPath, request: Request, response: Response, session: SessionDep, tenant: TenantDep
) -> Any:
    _, version = require(study_store.version_of(session, tenant.id, study_id=study_id), "study", study_id)
    etag = make_etag("s", study_id, version)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    response.headers["ETag"] = etag
    return studies_out(session, [load_study(session, tenant.id, study_id)])[0]


@router.post(
    "/{study_id}/search/stop",
    response_model=StudyOut,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "Not a search study."}},
)
def stop_search(study_id: IdPath, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> StudyOut:
    """Stop a search study's search: no trial is asked from now on. Trials already screening run on
    (cancel their candidates to end them sooner); once every asked trial is told, the study ends as
    a spent budget ends it, with the usual promotion. Idempotent."""
    from archscreen.store import search as search_store

    study = load_study(session, tenant.id, study_id)
    if study.search is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"study {study_id} is not a search study")
    search_store.stop(session, study.id)
    session.commit()
    request_step(settings, study)  # the step that finds the search over runs the promotion
    return studies_out(session, [study])[0]
