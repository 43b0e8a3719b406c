"""The promotion rule, in one place: which candidates become tuning jobs, with which tuner, from
which starting rate; and the automatic promotion of an ``auto`` study when its screening ends.

``store.ranking.promote`` only persists what :func:`decide` returned. The API's ``/promote`` and
the automatic promotion both go through :func:`promote`, so a manual and an automatic promotion
of the same study make the same jobs.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from archscreen.config import default_tuner
from archscreen.core.names import TunerName
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import ranking as ranking_store
from archscreen.store import studies as study_store
from archscreen.store.records import JobRecord, StudyRecord

log = logging.getLogger("archscreen.worker")

# Celery task that runs :func:`after_screening_finished` for a study id (worker/tasks.py).
CHECK_TASK = "archscreen.promotion_check"


def choose_tuner(study: StudyRecord, requested: TunerName | None = None) -> TunerName:
    """The tuner of a promotion: the request's, else the study's policy's, else the default for
    the screening's base optimizer (:func:`archscreen.config.default_tuner`, the one place the
    default is chosen)."""
    return requested or study.policy.tuner or default_tuner(study.screening.base)


def decide(
    study: StudyRecord,
    runs: Mapping[int, Sequence[JobRecord]],
    tuner: TunerName,
    *,
    skip_unpromotable: bool = False,
) -> dict[int, dict[str, Any]]:
    """The tuning job config (``tuner``, ``init_lr``) for each candidate in ``runs`` (its screening runs).

    Each starts from the rate the Alrao posterior preferred (posterior-weighted geometric mean,
    clipped to the screening range; geometric mean over succeeded seeds), when the screening's
    base optimizer is the one the tuner tunes. Otherwise (say Alrao-Adam screening, then ``fd2``,
    which tunes an SGD rate) the posterior's rates are on another optimizer's scale, so the job
    starts from the tuner's default rate and its config says so (``init_lr_source:
    "tuner_default"``). A candidate with no succeeded run raises ``ValueError`` (a manual
    promotion names it) or, with ``skip_unpromotable`` (automatic promotion), is left out.
    """
    from archscreen.core.tuning import get_tuner, initial_lr_from_screen, posterior_fits_tuner

    tuner_impl = get_tuner(tuner)
    same_scale = posterior_fits_tuner(study.screening.base, tuner_impl)
    out: dict[int, dict[str, Any]] = {}
    for cid, cand_runs in runs.items():
        ok = [j for j in cand_runs if j.state == "succeeded" and j.result is not None]
        try:
            if not ok:
                raise ValueError(f"candidate {cid} has no successful screening run to start tuning from")
            lrs = []
            for j in ok:
                assert j.result is not None
                lr_range = j.result.get("lr_range")
                lrs.append(initial_lr_from_screen(j.result, tuple(lr_range) if lr_range else None))
        except ValueError:
            if skip_unpromotable:  # automatic promotion: promote the others rather than none
                continue
            raise
        out[cid] = (
            {"tuner": tuner, "init_lr": statistics.geometric_mean(lrs)}
            if same_scale
            else {"tuner": tuner, "init_lr": tuner_impl.default_init_lr(), "init_lr_source": "tuner_default"}
        )
    return out


def promote(
    s: Session,
    study: StudyRecord,
    candidate_ids: list[int],
    *,
    tuner: TunerName,
    max_attempts: int,
    skip_unpromotable: bool = False,
) -> tuple[list[JobRecord], list[JobRecord]]:
    """Tuning jobs for ``candidate_ids``: ``(all_jobs, new_jobs)``; an existing job is returned, not
    doubled. The caller commits, then enqueues ``new_jobs``."""
    have = ranking_store.tuning_jobs_of(s, candidate_ids)
    todo = [cid for cid in candidate_ids if cid not in have]
    configs = decide(
        study, study_store.jobs_of(s, todo, kind="screen"), tuner, skip_unpromotable=skip_unpromotable
    )
    keep = [cid for cid in candidate_ids if cid in have or cid in configs]
    return ranking_store.promote(s, study, keep, configs, max_attempts=max_attempts)


def after_screening_finished(db: Database, settings: Settings, study_id: int) -> list[int]:
    """Promote the study's top-k if its policy is ``auto`` and every screening run has ended.

    Exactly once even with several workers finishing at the same moment: the study row's
    ``auto_promoted_at`` is claimed by compare-and-set in the same transaction that creates
    the tuning jobs. Safe to call again (the Celery task :data:`CHECK_TASK` and the workers'
    maintenance pass do). Returns the new tuning job ids (already enqueued).
    """
    with db.session() as s:
        study = study_store.study_by_id(s, study_id)
        if study is None or not study.policy.auto or study.auto_promoted_at is not None:
            return []
        if not ranking_store.screening_done(s, study_id):
            return []
        if not ranking_store.claim_auto_promotion(s, study_id):
            return []
        ranked, _ = ranking_store.rank_study(s, study_id, study.policy.metric)
        top = [r.candidate_id for r in ranked[: study.policy.top_k]]
        _, new = promote(
            s,
            study,
            top,
            tuner=choose_tuner(study),
            max_attempts=settings.max_attempts,
            skip_unpromotable=True,
        )
        new_ids = [(j.id, j.kind) for j in new]
    from archscreen.worker.queue import enqueue

    enqueue(db, settings, new_ids)
    log.info("study %s: auto-promoted candidates %s", study_id, top)
    return [i for i, _ in new_ids]


def request_check(settings: Settings, study_id: int) -> bool:
    """Ask a worker to run :func:`after_screening_finished` for the study (the :data:`CHECK_TASK`
    Celery task, which takes the id and is idempotent). Used where the check must not run in an
    HTTP request (a cancel that may end a study's screening). False if the broker refused the
    message: the workers' maintenance pass runs the check anyway, seconds later."""
    from archscreen.worker.queue import celery_for

    try:
        celery_for(settings).send_task(CHECK_TASK, args=[study_id], queue=settings.queue)
    except Exception as exc:  # broker down: the maintenance sweep promotes the study
        log.warning(
            "study %s: promotion check not sent (%s); the maintenance pass will run it", study_id, exc
        )
        return False
    return True
