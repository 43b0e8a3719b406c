"""A search study's view (``GET /studies/{id}/search``, issue 29 "Show the search"): its Optuna
trials with what archscreen made of each, the best-so-far curve against cumulative compute,
Optuna's own fANOVA parameter importances and, for two objectives, the Pareto front.

Read from Optuna's storage (``worker/search.py``: its own schema or sibling SQLite file), never
written: the search step is the only writer. The route's ETag is the study's version, which every
link and tell bumps, so a poller gets a 304 until a trial changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from sqlalchemy.orm import Session

from archscreen.api.schemas import BestSoFarPoint, ImportancesOut, SearchTrialOut, SearchViewOut
from archscreen.settings import Settings
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.records import JobRecord, StudyRecord

if TYPE_CHECKING:
    import optuna

# fANOVA fits a random forest on the COMPLETE trials: with fewer than this many its split is noise
# and, on two or three points, it often cannot split at all.
MIN_COMPLETE_FOR_IMPORTANCES = 4
COMPUTE_MEASURE = (
    "wall-clock seconds of the trial's screening jobs (finished_at - started_at), summed over seeds"
)
FINISHED = ("COMPLETE", "PRUNED", "FAIL")

_importance_cache: LRUCache[tuple[str, int, int], tuple[list[ImportancesOut] | None, str | None]] = LRUCache(
    maxsize=256
)
_cache_lock = threading.Lock()
importance_fits = 0  # how many fANOVA evaluations this process ran (the cache's test reads it)


def _trial_compute_s(jobs: list[JobRecord]) -> float:
    """The compute one trial spent: the wall time of its candidate's ended screening jobs.

    The one place that measures a trial's cost. Wall time until ``jobs.cpu_seconds`` (branch
    ``samp``'s migration) is merged; then this sums ``cpu_seconds`` (falling back to wall time for
    jobs that ended before the column existed). A job still running counts once it ends; a retried
    job counts its last attempt (``started_at`` is reset when a worker takes it again).
    """
    return sum(
        (j.finished_at - j.started_at).total_seconds()
        for j in jobs
        if j.started_at is not None and j.finished_at is not None
    )


def load_optuna_study(settings: Settings, study: StudyRecord) -> optuna.Study | None:
    """The study's Optuna study, read only; None before its first search step created it."""
    import optuna

    from archscreen.store.optuna_storage import optuna_storage

    storage = optuna_storage(settings.resolved_database_url)
    name = f"archscreen-{study.id}"
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    # the sampler is never used here (nothing is asked); RandomSampler is the cheapest to build
    return optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())


def _utc(d: datetime | None) -> datetime | None:
    """Optuna stores naive local times; the API serves naive UTC."""
    return None if d is None else d.astimezone(UTC).replace(tzinfo=None)


def _trials(session: Session, study: StudyRecord, trials: list[Any]) -> list[SearchTrialOut]:
    """Each trial with its candidate, refusal and compute. The state is Optuna's, except for the
    moment between archscreen's link (committed, told PRUNED) and Optuna's tell: that trial reads
    as what was told, so a response cached under the study's version is never stale."""
    links = search_store.links_of(session, study.id)
    refusals = search_store.refusals_of(session, study.id)
    cand_ids = sorted({link.candidate_id for link in links.values() if link.candidate_id is not None})
    jobs = study_store.jobs_of(session, cand_ids, kind="screen")
    costed: set[int] = set()
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        link = links.get(t.number)
        state = t.state.name
        if state == "RUNNING" and link is not None and link.told is not None:
            state = link.told.upper()
        cid = link.candidate_id if link is not None else None
        compute = None
        if cid is not None:  # a repeated point reuses its candidate: only the first trial paid
            compute = 0.0 if cid in costed else _trial_compute_s(jobs.get(cid, []))
            costed.add(cid)
        elif t.number in refusals:
            compute = 0.0  # refused before it trained
        values = [float(v) for v in t.values] if t.values is not None and state == "COMPLETE" else None
        out.append(
            SearchTrialOut(
                number=t.number,
                state=state,
                values=values,
                params=dict(t.params),
                candidate_id=cid,
                refused=refusals.get(t.number),
                started_at=_utc(t.datetime_start),
                told_at=_utc(t.datetime_complete),
                compute_s=compute,
            )
        )
    return out


def _best_so_far(rows: list[SearchTrialOut], direction: str) -> tuple[list[BestSoFarPoint], float]:
    """Told trials by told time: cumulative compute (pruned and failed trials cost too) against the
    best first-objective value so far. Returns the curve and the total compute of all trials."""
    finished = sorted(
        (r for r in rows if r.state in FINISHED), key=lambda r: (r.told_at or datetime.max, r.number)
    )
    better: Callable[[float, float], bool] = (
        (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
    )
    spent, best, curve = 0.0, None, []
    for r in finished:
        spent += r.compute_s or 0.0
        if r.values and (best is None or better(r.values[0], best)):
            best = r.values[0]
        if best is not None:
            curve.append(BestSoFarPoint(number=r.number, compute_s=spent, value=best))
    total = sum(r.compute_s or 0.0 for r in rows)
    return curve, total


def _importances(
    settings: Settings, study_id: int, ostudy: Any, n_complete: int
) -> tuple[list[ImportancesOut] | None, str | None]:
    """Optuna's fANOVA importances (``FanovaImportanceEvaluator(seed=0)``), one per objective,
    cached per count of COMPLETE trials: a dashboard polling every 2 s refits no forest until a
    new trial completes."""
    if n_complete < MIN_COMPLETE_FOR_IMPORTANCES:
        return None, (
            f"importances need >= {MIN_COMPLETE_FOR_IMPORTANCES} complete trials ({n_complete} so far)"
        )
    key = (settings.resolved_database_url, study_id, n_complete)
    with _cache_lock:
        hit = _importance_cache.get(key)
    if hit is not None:
        return hit
    result = _fit_importances(ostudy)
    with _cache_lock:
        _importance_cache[key] = result
    return result


def _fit_importances(ostudy: Any) -> tuple[list[ImportancesOut] | None, str | None]:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    global importance_fits
    importance_fits += 1
    out = []
    try:
        for i in range(len(ostudy.directions)):
            target = None if len(ostudy.directions) == 1 else (lambda t, i=i: t.values[i])
            values = get_param_importances(ostudy, evaluator=FanovaImportanceEvaluator(seed=0), target=target)
            out.append(ImportancesOut(objective=i, values={k: float(v) for k, v in values.items()}))
    except (ValueError, RuntimeError) as exc:  # e.g. every complete trial at the same point
        return None, f"fANOVA could not evaluate this study: {exc}"
    if not any(imp.values for imp in out):
        return None, "no parameter is present in every complete trial (fANOVA reads only those)"
    return out, None


def build_search_view(session: Session, settings: Settings, study: StudyRecord) -> SearchViewOut:
    """The whole view of a search study (see the module docstring)."""
    assert study.search is not None
    ostudy = load_optuna_study(settings, study)
    trials = ostudy.get_trials(deepcopy=False) if ostudy is not None else []
    directions = [d.name.lower() for d in ostudy.directions] if ostudy is not None else ["minimize"]
    names = list(ostudy.metric_names or []) if ostudy is not None else []
    if len(names) != len(directions):
        names = ["val_loss", *(f"objective {i}" for i in range(1, len(directions)))]
    rows = _trials(session, study, trials)
    curve, total = _best_so_far(rows, directions[0])
    n_complete = sum(1 for r in rows if r.state == "COMPLETE")
    importances, reason = (
        _importances(settings, study.id, ostudy, n_complete)
        if ostudy is not None
        else (None, f"importances need >= {MIN_COMPLETE_FOR_IMPORTANCES} complete trials (0 so far)")
    )
    pareto = None
    if ostudy is not None and len(directions) > 1:
        pareto = sorted(t.number for t in ostudy.best_trials)
    return SearchViewOut(
        study_id=study.id,
        sampler=study.search.sampler,
        planned_trials=study.search.trials,
        directions=directions,  # type: ignore[arg-type]
        objectives=names,
        compute_measure=COMPUTE_MEASURE,
        trials=rows,
        count=len(rows),
        compute_total_s=total,
        best_so_far=curve,
        importances=importances,
        importances_reason=reason,
        min_complete_for_importances=MIN_COMPLETE_FOR_IMPORTANCES,
        pareto_front=pareto,
    )
