"""The driver of a search study (issue 29): Optuna asks, the existing screening jobs train, the
results are told back. No long-lived loop: :func:`search_step` is one idempotent pass, run by the
named Celery task :data:`STEP_TASK` (sent when the study is created and when each of its screening
jobs ends; a worker's main process runs it, no job process) and by the maintenance pass as backstop.

One pass, under the study's step lock (a compare-and-set on ``studies.search_step_at``, so two
workers never ask at once and ``trials`` is never overshot):

1. a trial Optuna holds that archscreen has no link for (a crash between ask and commit) is linked
   now, or recorded with the state Optuna has if it is no longer RUNNING. Sampling is
   define-by-run, so a step killed right after ``ask()`` leaves a trial with no params (or some):
   the trial is reopened as a live ``optuna.trial.Trial`` and the point sampled on it, where a
   param already suggested keeps its stored value and the rest are drawn by the sampler now (a
   FrozenTrial's params alone are refused as incomplete, and the trial would be told PRUNED: a
   trial spent on no point);
2. every linked trial whose candidate's screening runs have all ended is told: the mean best
   ``val_loss`` of its succeeded runs (minimised) as COMPLETE, else FAIL;
3. new trials are asked until ``parallel`` screen at once or ``trials`` were asked, and none once
   the study's jobs spent ``budget_cpu_s`` CPU-seconds (checked once per step: a trial asked just
   under the budget still runs, so the budget may be overshot by up to ``parallel`` trials); each point
   becomes a candidate (its params stored on it) with its screening jobs, or, refused before it
   trains (``PointRefused``), is told PRUNED (see ``core/spec/space.py`` for why not FAIL).

With ``search.asha`` on (the default), steps 2 and 3 are successive halving's instead
(``worker/search_asha.py``): a trial's run trains rung by rung, paused between rungs, and new
trials are asked only when the scheduler has nothing to promote.

When every trial is told (or the budget is spent and every asked trial is told), the usual
automatic promotion runs (``policy.auto``).

Optuna's storage (its tables apart from archscreen's) is :mod:`archscreen.store.optuna_storage`.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.optuna_storage import optuna_storage
from archscreen.store.records import StudyRecord
from archscreen.worker.hooks import hold_once

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("archscreen.worker")

STEP_TASK = "archscreen.search_step"
# Tests only: the process whose step creates this file first (writing the trial number there) stops
# between Optuna's ask and archscreen's link of that trial, as a process killed there would
# (tests/reliability/test_search_kill.py kills it there with SIGKILL).
PAUSE_AFTER_ASK_ENV = "ARCHSCREEN_TEST_PAUSE_AFTER_ASK"


def optuna_study(settings: Settings, study: StudyRecord, asked: int = 0) -> optuna.Study:
    """The study's Optuna study (named ``archscreen-<id>``), minimising ``search.objectives`` (two
    directions for NSGA-II). The sampler is rebuilt per step: a seeded one is seeded with
    ``seed + asked`` so that consecutive steps do not draw the same random points."""
    import optuna

    assert study.search is not None
    seed = None if study.search.seed is None else study.search.seed + asked
    return optuna.create_study(
        storage=optuna_storage(settings.resolved_database_url),
        study_name=f"archscreen-{study.id}",
        sampler=_sampler(study, seed),
        directions=["minimize"] * len(study.search.objectives),
        load_if_exists=True,
    )


def _sampler(study: StudyRecord, seed: int | None) -> optuna.samplers.BaseSampler:
    """``search.sampler`` as Optuna's sampler. Grid: ``GridSampler`` over the space's
    ``grid_search_space`` (the API checked it is discrete and that ``trials`` is its size), seeded
    with the study's own seed, never ``seed + asked``: the sampler shuffles its grid with its seed
    and a trial's stored ``grid_id`` indexes that order, so every step must rebuild the same order.
    Which grid points were visited lives in Optuna's storage, so a rebuilt sampler goes on where
    the last one stopped."""
    import optuna

    assert study.search is not None
    kind = study.search.sampler
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        from archscreen.core.spec.space import grid_search_space, parse_space

        assert study.space is not None
        grid = grid_search_space(parse_space(study.space))
        return optuna.samplers.GridSampler(grid, seed=study.search.seed or 0)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def search_step(db: Database, settings: Settings, study_id: int) -> list[int]:
    """One idempotent pass of the study's search (see the module docstring); returns the ids of
    the candidates it created. A step already running for the study makes this one a no-op."""
    with db.session() as s:
        study = study_store.study_by_id(s, study_id)
        if study is None or study.search is None or study.space is None:
            return []
        if not search_store.claim_step(s, study_id, settings.search_step_hold_s):
            return []
    try:
        created = _step(db, settings, study)
        if study.search.asha.enabled:
            from archscreen.worker.search_asha import arrivals_pending

            for _ in range(3):  # runs that paused meanwhile: their own steps found the lock taken
                if not arrivals_pending(db, study):
                    break
                created += _step(db, settings, study)
    finally:
        with db.session() as s:
            search_store.release_step(s, study_id)
    with db.session() as s:
        done = search_store.search_done(s, study_id, study.search)
    if done:
        from archscreen.worker.promotion import after_screening_finished

        after_screening_finished(db, settings, study_id)
    return created


def _step(db: Database, settings: Settings, study: StudyRecord) -> list[int]:
    import optuna
    from optuna.trial import TrialState

    from archscreen.core.spec.space import parse_space

    assert study.search is not None and study.space is not None
    space = parse_space(study.space)
    info = _dataset_info(db, study)
    ostudy = optuna_study(settings, study)
    trials = {t.number: t for t in ostudy.get_trials(deepcopy=False)}
    with db.session() as s:
        links = search_store.links_of(s, study.id)
    created: list[int] = []
    for number, trial in sorted(trials.items()):  # 1. asked, never linked
        if number in links:
            told = links[number].told
            if told is not None and trial.state == TrialState.RUNNING:  # crashed before its tell
                state = TrialState.PRUNED if told == "pruned" else None
                _tell(ostudy, number, state, _values(db, study, links[number]))
            continue
        if trial.state == TrialState.RUNNING:  # sampled now, as a live trial (see the docstring)
            live = optuna.trial.Trial(ostudy, trial._trial_id)
            created += _link(db, settings, study, ostudy, number, space, info, None, live)
        else:
            with db.session() as s:
                search_store.link_trial(s, study.id, number, told=trial.state.name.lower())

    def ask(asked: int) -> list[int]:
        """Ask one new trial (the sampler seeded for the ``asked``-th) and link it."""
        fresh = optuna_study(settings, study, asked)
        new_trial = fresh.ask()
        hold_once(PAUSE_AFTER_ASK_ENV, new_trial.number, "the step stops after asking trial %s")
        return _link(db, settings, study, fresh, new_trial.number, space, info, None, new_trial)

    if study.search.asha.enabled:  # successive halving decides which runs train on
        from archscreen.worker.search_asha import asha_step

        return created + asha_step(db, settings, study, ostudy, ask)
    _tell_finished(db, study, ostudy)
    with db.session() as s:
        links = search_store.links_of(s, study.id)
    asked = len(ostudy.get_trials(deepcopy=False))
    running = sum(1 for link in links.values() if link.told is None)
    with db.session() as s:  # budget spent: ask nothing more; the running trials finish
        spent = search_store.over_budget(s, study.id, study.search)
    while asked < study.search.trials and running < study.search.parallel and not spent:
        new = ask(asked)
        asked += 1
        created += new
        running += len(new)
    _tell_finished(db, study, ostudy)  # a repeated point whose candidate had already ended
    return created


def _link(
    db: Database,
    settings: Settings,
    study: StudyRecord,
    ostudy: optuna.Study,
    number: int,
    space: Any,
    info: Any,
    params: dict[str, Any] | None,
    trial: optuna.Trial | None = None,
) -> list[int]:
    """Make trial ``number``'s point a candidate with its screening jobs (or tell it PRUNED if the
    point is refused), linked in one transaction; returns the new candidate's id, if one was made."""
    from optuna.trial import TrialState

    from archscreen.core.spec import SpecError, spec_hash
    from archscreen.core.spec.space import PointRefused, point_from_params, sample_point
    from archscreen.worker.queue import enqueue

    try:
        point = (
            sample_point(space, trial, info)
            if trial is not None
            else point_from_params(space, params or {}, info)
        )
    except (PointRefused, SpecError) as refusal:
        with db.session() as s:
            linked = search_store.link_trial(s, study.id, number, told="pruned", refused=str(refusal))
        if linked:
            ostudy.tell(number, state=TrialState.PRUNED)
        log.info("study %s: trial %s refused before training: %s", study.id, number, refusal)
        return []
    with db.session() as s:
        cand, made, jobs = study_store.add_candidate(
            s,
            study,
            name=f"trial-{number}",
            spec=point.document,
            spec_hash=spec_hash(point.spec),
            num_params=point.report.num_params,
            summary=[r.model_dump(mode="json") for r in point.report.rows],
            max_attempts=settings.max_attempts,
            params=point.params,
        )
        if not search_store.link_trial(s, study.id, number, candidate_id=cand.id):
            s.rollback()  # another step linked this trial first: keep its candidate, not ours
            return []
        if made and study.search is not None and study.search.asha.enabled:
            from archscreen.worker.search_asha import on_new_run

            on_new_run(s, study, cand.id, [j.id for j in jobs])  # its start at rung 0, same commit
        new_jobs = [(j.id, j.kind) for j in jobs]
    enqueue(db, settings, new_jobs)
    return [cand.id] if made else []


def _tell_finished(db: Database, study: StudyRecord, ostudy: optuna.Study) -> None:
    """Tell Optuna every linked trial whose candidate's screening runs have all ended."""
    from optuna.trial import TrialState

    from archscreen.store import FINAL_STATES

    with db.session() as s:
        links = [link for link in search_store.links_of(s, study.id).values() if link.told is None]
        runs = study_store.jobs_of(
            s, [link.candidate_id for link in links if link.candidate_id], kind="screen"
        )
    by_number = {t.number: t for t in ostudy.get_trials(deepcopy=False)}
    for link in links:
        jobs = runs.get(link.candidate_id or -1, [])
        if not jobs or any(j.state not in FINAL_STATES for j in jobs):
            continue
        losses = [
            float(j.result["val_loss"])
            for j in jobs
            if j.state == "succeeded" and j.result and _finite(j.result.get("val_loss"))
        ]
        value = sum(losses) / len(losses) if losses else None
        values = _values(db, study, link, value)
        trial = by_number.get(link.number)
        if trial is not None and trial.state == TrialState.RUNNING:
            _tell(ostudy, link.number, None, values)
        with db.session() as s:
            search_store.mark_told(s, study.id, link.number, "fail" if values is None else "complete", value)


def _values(
    db: Database, study: StudyRecord, link: search_store.TrialLink, value: float | None = None
) -> list[float] | None:
    """The trial's objective values in ``search.objectives`` order: the told ``val_loss`` (``value``,
    else the link's); ``params``: its candidate's parameter count (the spec report's, stored on the
    candidate); ``latency``: the mean ``latency_ms`` its succeeded screening runs measured. None (told
    FAIL): no score, or no latency measured."""
    assert study.search is not None
    loss = link.value if value is None else value
    if loss is None:
        return None
    if study.search.objectives == ["val_loss"] or link.candidate_id is None:
        return [loss]
    cid = link.candidate_id
    with db.session() as s:
        params = search_store.num_params_of(s, [cid])
        runs = study_store.jobs_of(s, [cid], kind="screen")[cid]
    latencies = [
        float(j.result["latency_ms"])
        for j in runs
        if j.state == "succeeded" and j.result and _finite(j.result.get("latency_ms"))
    ]
    extra = {"params": float(params[cid]), "latency": sum(latencies) / len(latencies) if latencies else None}
    values = [loss if name == "val_loss" else extra[name] for name in study.search.objectives]
    return None if any(v is None for v in values) else [float(v) for v in values if v is not None]


def _tell(ostudy: optuna.Study, number: int, state: Any, values: list[float] | None) -> None:
    """Tell a trial: ``state`` PRUNED, else its values (COMPLETE) or, without them, FAIL."""
    from optuna.trial import TrialState

    if state is not None:
        ostudy.tell(number, state=state)
    elif values is None:
        ostudy.tell(number, state=TrialState.FAIL)
    else:
        ostudy.tell(number, values)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _dataset_info(db: Database, study: StudyRecord) -> Any:
    """The study's DatasetInfo, as the API found it when the study was created."""
    from archscreen.store.datasets import dataset_info

    with db.session() as s:
        return dataset_info(s, study.tenant_id, study.dataset)


def request_step(settings: Settings, study: StudyRecord) -> bool:
    """Send the study's :data:`STEP_TASK` if it is a search study (after its creation, after each
    of its screening jobs). False if not sent; the maintenance pass steps it anyway."""
    if study.search is None:
        return False
    from archscreen.worker.queue import celery_for

    try:
        celery_for(settings).send_task(STEP_TASK, args=[study.id], queue=settings.queue)
    except Exception as exc:  # broker down: the maintenance pass steps every unfinished search
        log.warning("study %s: search step not sent (%s); the maintenance pass will run it", study.id, exc)
        return False
    return True


def step_after_job(db: Database, settings: Settings, job_id: int) -> bool:
    """After a screening job's process is done with it: send its study's step if it is a search
    study (a requeued or lost job sends one too; the step is idempotent)."""
    from archscreen.store.models import Job

    try:
        with db.session() as s:
            job = s.get(Job, job_id)
            study = None if job is None else study_store.study_by_id(s, job.study_id)
    except Exception:  # the maintenance pass steps every unfinished search
        log.exception("job %s: could not read its study; the maintenance pass steps it", job_id)
        return False
    return study is not None and request_step(settings, study)
