"""ASHA in a search study's step (issue 29, item 3): successive halving across the trials.

:func:`asha_step` is the part of :func:`archscreen.worker.search.search_step` that runs when the
study's ``search.asha`` is on (the default). It runs under the study's step lock, and the
scheduler (:class:`archscreen.core.asha.AshaScheduler`) lives in the database
(``studies.asha``), never in a process's memory: each pass loads it, changes it, and saves it in
the same transaction as the job changes it decided. One ASHA run is one candidate (its screening
jobs, one per seed, move together); its key is the candidate id.

One pass:

1. **arrivals**: every run the scheduler has out whose jobs have all stopped (paused at the rung,
   or ended) reports its rung value: the mean over its seeds of ``result["asha"]["value"]``
   (:func:`archscreen.core.asha.rung_value` with the default key, computed by the job process,
   ``worker/runner.py``). Each of its trials is told ``trial.report(value, step=epochs)`` first
   (idempotent), then the scheduler state is saved;
2. **jobs**, while fewer than ``parallel`` runs are out: :meth:`~AshaScheduler.get_job`. A
   promotion puts the run's paused jobs back in the queue with the next rung's epochs as their
   ``target_epochs`` (they continue from their checkpoints: ``TrainConfig.pause_at``), in one
   transaction with the state, and sends them after the commit (a lost send is re-sent by the
   maintenance sweep: they are queued with no ``enqueued_at``). A run whose jobs had already ended
   (its trainer stopped on its own) reports the same value at once: the promotion trains nothing.
   With nothing to promote, a new Optuna trial is asked (``ask``): its candidate, jobs and its
   start at rung 0 are one transaction (``on_new_run``, called by ``_link``). Once ``trials``
   were asked the scheduler is closed;
3. **the end**: when the closed scheduler has nothing out and nothing to promote,
   :meth:`~AshaScheduler.finish` names the runs never promoted: their paused jobs become
   ``stopped`` (final);
4. **tells**: a trial whose run reached the top rung is told COMPLETE with its value as without
   ASHA (the mean best ``val_loss`` of its succeeded runs), or FAIL without one; a trial whose run
   was stopped is told PRUNED (its intermediate values stay, so TPE learns from it).

A kill -9 at any point loses and doubles nothing: every change of the state is committed with the
job rows it describes; Optuna's report and tell are repeated safely (a report of a step already
reported is ignored; a trial is told only while Optuna has it running).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from archscreen.core.asha import AshaScheduler, Job
from archscreen.core.names import ACTIVE_STATES
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.records import JobRecord, StudyRecord

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("archscreen.worker")


def scheduler_of(s: Session, study: StudyRecord) -> AshaScheduler:
    """The study's scheduler: its stored state, or a new one from ``search.asha`` and the
    screening's ``max_epochs`` (the top rung) before the first run."""
    assert study.search is not None
    state = search_store.asha_state(s, study.id)
    if state is not None:
        return AshaScheduler.from_state(state)
    cfg = study.search.asha
    cap = study.screening.epoch_cap  # a stored study's: resolved when it was created
    return AshaScheduler(cap, min_epochs=min(cfg.min_epochs, cap), reduction_factor=cfg.reduction_factor)


def on_new_run(s: Session, study: StudyRecord, candidate_id: int, job_ids: list[int]) -> None:
    """In the transaction that creates a trial's candidate and jobs: add the run and start it at
    rung 0 (its jobs train to the first rung's epochs)."""
    asha = scheduler_of(s, study)
    # a trial asked by a step that died before linking it is linked by the next step, even if the
    # scheduler was closed meanwhile: it exists, so it is scheduled
    asha.closed = False
    asha.add_runs([str(candidate_id)])
    job = asha.start(str(candidate_id))
    job_store.set_target(s, job_ids, job.epochs)
    search_store.save_asha_state(s, study.id, asha.state_dict())


def asha_step(
    db: Database,
    settings: Settings,
    study: StudyRecord,
    ostudy: optuna.Study,
    ask: Callable[[int], list[int]],
) -> list[int]:
    """One ASHA pass (the module docstring); ``ask(asked)`` asks and links one new trial and
    returns the candidate it created, if any. Returns the candidates created."""
    assert study.search is not None
    with db.session() as s:
        asha = scheduler_of(s, study)
    _arrivals(db, study, ostudy, asha)
    created: list[int] = []
    while True:
        asked = len(ostudy.get_trials(deepcopy=False))
        with db.session() as s:  # the CPU-seconds budget spent, or the search stopped: no new trial
            spent = search_store.over_budget(s, study.id, study.search)
        if (asked >= study.search.trials or spent) and not asha.closed:
            asha.close()
            with db.session() as s:
                search_store.save_asha_state(s, study.id, asha.state_dict())
        out = sum(1 for rid in _runs(asha) if asha.status(rid) == "running")
        if out >= study.search.parallel:
            break
        job = asha.get_job()
        if job is None:
            if asha.closed:
                break
            created += ask(asked)
            with db.session() as s:
                asha = scheduler_of(s, study)  # ask's transaction added and started the run
            continue
        _promote(db, settings, study, ostudy, asha, job)
    if asha.done:
        _finish(db, settings, study, asha)
    _tell(db, study, ostudy, asha)
    return created


def arrivals_pending(db: Database, study: StudyRecord) -> bool:
    """Whether a run the scheduler has out has all its jobs stopped (a report to take): a job that
    paused while a step held the lock had its own step refused, so the holder steps once more."""
    with db.session() as s:
        asha = scheduler_of(s, study)
    out = [rid for rid in _runs(asha) if asha.status(rid) == "running"]
    jobs = _screen_jobs(db, [int(r) for r in out]) if out else {}
    return any(_rung_value(jobs.get(int(r), []), asha.epochs_of(r))[0] for r in out)


def _runs(asha: AshaScheduler) -> list[str]:
    return [r["id"] for r in asha.state_dict()["runs"]]


def _screen_jobs(db: Database, candidate_ids: list[int]) -> dict[int, list[JobRecord]]:
    with db.session() as s:
        return dict(study_store.jobs_of(s, candidate_ids, kind="screen"))


def _rung_value(jobs: list[JobRecord], epochs: int) -> tuple[bool, float | None]:
    """``(arrived, value)``: whether every job of the run has stopped at the rung (paused there,
    or ended), and the mean of their finite rung values (None: none, e.g. all diverged)."""
    values: list[float] = []
    for j in jobs:
        if j.state in ACTIVE_STATES:
            return False, None
        report = (j.result or {}).get("asha") or {}
        if j.state == "paused" and report.get("epochs") != epochs:
            return False, None  # cannot happen (a promotion requeues atomically); wait, not guess
        v = report.get("value")
        if isinstance(v, int | float) and math.isfinite(v):
            values.append(float(v))
    return bool(jobs), (statistics.fmean(values) if values else None)


def _arrivals(db: Database, study: StudyRecord, ostudy: optuna.Study, asha: AshaScheduler) -> None:
    """Report every run whose jobs have all stopped at the rung it was sent to; one commit."""
    out = [rid for rid in _runs(asha) if asha.status(rid) == "running"]
    if not out:
        return
    jobs = _screen_jobs(db, [int(r) for r in out])
    reported = False
    for rid in out:
        epochs = asha.epochs_of(rid)
        arrived, value = _rung_value(jobs.get(int(rid), []), epochs)
        if arrived:
            _report(db, study, ostudy, asha, rid, value, epochs)
            reported = True
    if reported:
        with db.session() as s:
            search_store.save_asha_state(s, study.id, asha.state_dict())


def _report(
    db: Database,
    study: StudyRecord,
    ostudy: optuna.Study,
    asha: AshaScheduler,
    rid: str,
    value: float | None,
    epochs: int,
) -> None:
    """Tell Optuna (each running trial of the run's candidate) first, then the scheduler."""
    import optuna as _optuna
    from optuna.trial import TrialState

    # the run's earlier rungs too: Optuna's storage is not archscreen's transaction, so a report a
    # killed step made to one and not the other is made up here (each step at most once)
    earlier = [(asha.rungs[k], v) for k, v in enumerate(asha.values(rid)) if v is not None]
    reports = [*earlier, (epochs, value)] if value is not None else earlier
    if reports:
        with db.session() as s:
            numbers = {
                n for n, link in search_store.links_of(s, study.id).items() if link.candidate_id == int(rid)
            }
        for t in ostudy.get_trials(deepcopy=False):
            if t.number not in numbers or t.state != TrialState.RUNNING:
                continue
            for step, v in reports:
                if step not in t.intermediate_values:
                    _optuna.trial.Trial(ostudy, t._trial_id).report(v, step=step)
    asha.report(rid, value)
    log.info("study %s: run %s reported %s at %s epochs (%s)", study.id, rid, value, epochs, asha.status(rid))


def _promote(
    db: Database,
    settings: Settings,
    study: StudyRecord,
    ostudy: optuna.Study,
    asha: AshaScheduler,
    job: Job,
) -> None:
    """Send the promoted run's paused jobs on to the next rung (one commit with the state); a run
    whose jobs all ended reports its value at the new rung at once."""
    from archscreen.worker.queue import enqueue

    cid = int(job.run_id)
    runs = _screen_jobs(db, [cid]).get(cid, [])
    with db.session() as s:
        queued = job_store.set_target(s, [j.id for j in runs], job.epochs)
        search_store.save_asha_state(s, study.id, asha.state_dict())
    log.info(
        "study %s: run %s promoted to %s epochs (%s jobs resumed)", study.id, cid, job.epochs, len(queued)
    )
    if queued:
        enqueue(db, settings, [(i, "screen") for i in queued])
        return
    values = asha.values(job.run_id)  # nothing to train: the run's value stands at the new rung
    _report(db, study, ostudy, asha, job.run_id, values[-1] if values else None, job.epochs)
    with db.session() as s:
        search_store.save_asha_state(s, study.id, asha.state_dict())


def _finish(db: Database, settings: Settings, study: StudyRecord, asha: AshaScheduler) -> None:
    """The search is over: the runs never promoted stop for good (their paused jobs too). Their
    checkpoints go as a succeeded run's do (``delete_checkpoint_on_success``): nothing resumes a
    stopped run; its result (the rung's best epoch) stays in the database."""
    stopped = asha.finish()
    jobs = _screen_jobs(db, [int(r) for r in stopped])
    ids = [j.id for r in stopped for j in jobs.get(int(r), []) if j.state == "paused"]
    with db.session() as s:
        job_store.stop_paused(s, ids)
        search_store.save_asha_state(s, study.id, asha.state_dict())
    if stopped:
        log.info("study %s: ASHA stopped runs %s", study.id, stopped)
    if settings.delete_checkpoint_on_success:
        from archscreen.worker.runner import job_dir

        for job_id in ids:
            try:
                (job_dir(settings, job_id) / "checkpoint.pt").unlink(missing_ok=True)
            except OSError:  # the stop stands; the file stays
                log.exception("job %s: could not delete the stopped run's checkpoint", job_id)


def _tell(db: Database, study: StudyRecord, ostudy: optuna.Study, asha: AshaScheduler) -> None:
    """Tell Optuna every linked trial whose run completed (COMPLETE/FAIL) or was stopped (PRUNED)."""
    from optuna.trial import TrialState

    with db.session() as s:
        links = [link for link in search_store.links_of(s, study.id).values() if link.told is None]
    known = set(_runs(asha))
    links = [lk for lk in links if lk.candidate_id and str(lk.candidate_id) in known]
    status = {lk.number: asha.status(str(lk.candidate_id)) for lk in links}
    links = [lk for lk in links if status[lk.number] in ("completed", "stopped")]
    if not links:
        return
    jobs = _screen_jobs(db, [lk.candidate_id for lk in links if lk.candidate_id])
    by_number = {t.number: t for t in ostudy.get_trials(deepcopy=False)}
    for lk in links:
        runs = jobs.get(lk.candidate_id or -1, [])
        losses = [
            float(j.result["val_loss"])
            for j in runs
            if j.state in ("succeeded", "stopped") and j.result and _finite(j.result.get("val_loss"))
        ]
        value = statistics.fmean(losses) if losses else None
        pruned = status[lk.number] == "stopped"
        trial = by_number.get(lk.number)
        if trial is not None and trial.state == TrialState.RUNNING:
            if pruned:
                ostudy.tell(lk.number, state=TrialState.PRUNED)
            elif value is None:
                ostudy.tell(lk.number, state=TrialState.FAIL)
            else:
                ostudy.tell(lk.number, value)
        told = "pruned" if pruned else ("fail" if value is None else "complete")
        with db.session() as s:
            search_store.mark_told(s, study.id, lk.number, told, value)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
