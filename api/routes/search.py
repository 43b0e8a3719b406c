"""/api/v1/studies/{id}/search: a search study's trials, best-so-far curve, importances, Pareto front."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status

from archscreen.api.deps import IdPath, SessionDep, SettingsDep, TenantDep
from archscreen.api.etag import full_read, make_etag, not_modified, require
from archscreen.api.routes.studies import NOT_FOUND, NOT_MODIFIED, load_study
from archscreen.api.schemas import ErrorResponse, SearchViewOut
from archscreen.api.search_view import build_search_view
from archscreen.store import studies as study_store

router = APIRouter(tags=["search"])


@router.get(
    "/studies/{study_id}/search",
    response_model=SearchViewOut,
    responses={
        **NOT_FOUND,
        **NOT_MODIFIED,
        409: {"model": ErrorResponse, "description": "The study is not a search study."},
    },
)
def get_search(
    study_id: IdPath, request: Request, session: SessionDep, settings: SettingsDep, tenant: TenantDep
) -> Any:
    """The search's Optuna trials (state as Optuna has it, values, params, candidate, when told,
    compute spent), the best value so far against cumulative compute, Optuna's fANOVA parameter
    importances (null with a reason below a few complete trials) and, for two objectives, the
    Pareto front (Optuna's ``best_trials``). ETag'd on the study's version like ``/summary``."""
    _, version = require(study_store.version_of(session, tenant.id, study_id=study_id), "study", study_id)
    study = load_study(session, tenant.id, study_id)
    if study.search is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"study {study_id} is not a search study (it was created without space and search), "
            "so it has no trials: see /studies/{id}/ranking for its candidates",
        )
    etag = make_etag("search", study_id, version)
    if (cached := not_modified(request, etag)) is not None:
        return cached
    return full_read(request, tenant.id, etag, lambda: build_search_view(session, settings, study))
