"""The promotion rule, in one place: which candidates become tuning jobs, with which tuner, from
which starting rate; and the automatic promotion of an ``auto`` study when its screening ends.

``store.ranking.promote`` only persists what :func:`decide` returned. The API's ``/promote`` and
the automatic promotion both go through :func:`promote`, so a manual and an automatic promotion
of the same study make the same jobs.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from archscreen.config import default_tuner
from archscreen.core.names import TunerName
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store import ranking as ranking_store
from archscreen.store import search as search_store
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


# Where a promotion's starts go, in the order they are added: start i is the tuning job with
# seed i. The median first (the posterior's centre, the one start when the quartiles coincide),
# then the lower quartile (issue 16's order; fd2's best-epoch rule reads a climb from below the
# good range), then the upper one. With starts=2 that is median + lower quartile; note that the
# fd2-adam table in docs/tuners.md measured q50+q75 better than q50+q25 (worst gap 2.50 vs 4.86
# pp, 6 architectures, 2 seeds): the default, 3 starts, runs both.
# core's MULTI_START_QUANTILES in this order (a test checks they agree; not imported from there:
# core.tuning loads torch, which the API process does not).
START_QUANTILES: tuple[float, ...] = (0.5, 0.25, 0.75)


def start_label(q: float) -> str:
    """``0.25`` -> ``"p25"``: how a tuning job names its start (job config and API)."""
    return f"p{round(q * 100)}"


def decide(
    study: StudyRecord,
    runs: Mapping[int, Sequence[JobRecord]],
    tuner: TunerName,
    *,
    starts: int | None = None,
    skip_unpromotable: bool = False,
) -> dict[int, dict[int, dict[str, Any]]]:
    """The tuning jobs for each candidate in ``runs`` (its screening runs): ``{candidate: {seed:
    config}}``, one job config (``tuner``, ``init_lr``, ...) per start; ``seed`` is the job's
    uniqueness key (the start's index), not its training seed.

    ``starts`` (default: the study's ``policy.starts``) jobs per candidate, each a separate
    tuning job on the worker pool, so the candidate's answer can be its best start by validation
    (issue 16; ``store.ranking.rank`` picks it):

    * ``starts=1``: one job (seed 0) from the rate the Alrao posterior preferred (its weighted
      geometric mean, clipped to the screening range; geometric mean over the succeeded seeds).
      The config is ``{"tuner", "init_lr"}``, exactly the single start of studies before starts.
    * ``starts`` 2 or 3: the posterior's quantiles :data:`START_QUANTILES` (median, 25th, 75th
      percentile; ``core.tuning.posterior_starts``, each the geometric mean over the succeeded
      seeds), job ``seed`` = the start's index there. Each config names its start (``"start":
      "p25"``, ``"start_quantile": 0.25``) and carries ``"train_seed": 0``: every start trains
      with the same seed, so only the starting rate differs between them. A quantile that lands
      on an earlier start's rate (a posterior clipped at the range's end) is left out.

    When the screening's base optimizer is not the one the tuner tunes (say Alrao-Adam
    screening, then ``fd2``, which tunes an SGD rate) the posterior's rates are on another
    optimizer's scale, so the candidate gets **one** job, from the tuner's default rate, whose
    config says so (``init_lr_source: "tuner_default"``): several copies of the same default
    rate would train the same run. A candidate with no succeeded run raises ``ValueError`` (a
    manual promotion names it) or, with ``skip_unpromotable`` (automatic promotion), is left out.
    """
    from archscreen.core.tuning import get_tuner, posterior_fits_tuner

    n = study.policy.starts if starts is None else starts
    if not 1 <= n <= len(START_QUANTILES):
        raise ValueError(f"starts must be between 1 and {len(START_QUANTILES)}, got {n}")
    tuner_impl = get_tuner(tuner)
    same_scale = posterior_fits_tuner(study.screening.base, tuner_impl)
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for cid, cand_runs in runs.items():
        try:
            rates = _start_rates(cid, cand_runs, n, same_scale=same_scale)
        except ValueError:
            if skip_unpromotable:  # automatic promotion: promote the others rather than none
                continue
            raise
        if not same_scale:
            default = tuner_impl.default_init_lr()
            out[cid] = {0: {"tuner": tuner, "init_lr": default, "init_lr_source": "tuner_default"}}
        elif study.policy.tuning_start == "multi" and not study.policy.halving:
            out[cid] = (
                {0: {"tuner": tuner, "init_lr": rates[0]}} if n == 1 else _quantile_start_jobs(tuner, rates)
            )
        else:
            out[cid] = _stage_jobs(study, tuner, cid, cand_runs, n)
    return out


def _stage_jobs(
    study: StudyRecord, tuner: TunerName, cid: int, cand_runs: Sequence[JobRecord], n: int
) -> dict[int, dict[str, Any]]:
    """The jobs of the tuning stage's cheaper options (``policy.tuning_start``, ``policy.halving``;
    ``core.tuners.stage``): ``posterior-width`` keeps the first of :data:`START_QUANTILES` as many as
    the widest succeeded run's posterior asks for (``starts_for_width``, at most ``n``), each a
    quantile start (the median for one); ``screen-weights`` is one job from the best screening run
    by validation loss: its weights (``init_from_job``, ``init_copy``) at its posterior's rate.
    With ``halving`` the quantile starts become one job that spends them by successive halving
    (``halving_rates``; from the screening's weights too under ``screen-weights``)."""
    from archscreen.core.tuners.stage import chosen_copy, starts_for_width
    from archscreen.core.tuning import initial_lr_from_screen

    ok = [j for j in cand_runs if j.state == "succeeded" and j.result is not None]
    policy = study.policy
    if policy.tuning_start == "posterior-width":
        n = max(starts_for_width(j.result, n) for j in ok)
    rates = _start_rates(cid, cand_runs, max(n, 2), same_scale=True)[:n]
    jobs = _quantile_start_jobs(tuner, rates)
    if policy.tuning_start == "screen-weights":
        src = min(ok, key=lambda j: (_val_loss(j), j.id))
        assert src.result is not None
        lr_range = src.result.get("lr_range")
        lr = initial_lr_from_screen(src.result, tuple(lr_range) if lr_range else None)
        source = {"init_from_job": src.id, "init_copy": chosen_copy(src.result), "train_seed": 0}
        jobs = {0: {"tuner": tuner, "init_lr": lr, "start": "screen-weights", **source}}
        if policy.halving and len(rates) > 1:
            jobs[0].update(start="screen-weights+halving", halving_rates=list(rates))
        return jobs
    if policy.halving and len(jobs) > 1:
        kept = [c["init_lr"] for c in jobs.values()]
        return {
            0: {
                "tuner": tuner,
                "init_lr": kept[0],
                "start": "halving",
                "halving_rates": kept,
                "train_seed": 0,
            }
        }
    return jobs


def _val_loss(job: JobRecord) -> float:
    value = (job.result or {}).get("val_loss")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.inf


def _start_rates(cid: int, cand_runs: Sequence[JobRecord], n: int, *, same_scale: bool) -> list[float]:
    """The starting rates of :func:`decide` for one candidate: one (the posterior's preferred rate)
    when ``n == 1`` or the scales differ (then it only proves a start exists), else one per
    quantile of :data:`START_QUANTILES`; each the geometric mean over the succeeded runs.
    ``ValueError`` when the candidate has no succeeded run (or its posterior is unusable)."""
    from archscreen.core.tuning import initial_lr_from_screen, posterior_starts

    ok = [j for j in cand_runs if j.state == "succeeded" and j.result is not None]
    if not ok:
        raise ValueError(f"candidate {cid} has no successful screening run to start tuning from")
    results = []
    for j in ok:
        assert j.result is not None
        lr_range = j.result.get("lr_range")
        results.append((j.result, tuple(lr_range) if lr_range else None))
    if n == 1 or not same_scale:
        return [statistics.geometric_mean([initial_lr_from_screen(r, rng) for r, rng in results])]
    return [
        statistics.geometric_mean([posterior_starts(r, (q,), rng)[0] for r, rng in results])
        for q in START_QUANTILES[:n]
    ]


def _quantile_start_jobs(tuner: TunerName, rates: Sequence[float]) -> dict[int, dict[str, Any]]:
    """One job config per quantile start, keyed by the start's index; a start on an earlier
    start's rate is left out."""
    jobs: dict[int, dict[str, Any]] = {}
    for seed, (q, lr) in enumerate(zip(START_QUANTILES, rates, strict=False)):
        if any(math.isclose(lr, c["init_lr"], rel_tol=1e-9) for c in jobs.values()):
            continue
        jobs[seed] = {
            "tuner": tuner,
            "init_lr": lr,
            "start": start_label(q),
            "start_quantile": q,
            "train_seed": 0,
        }
    return jobs


def promote(
    s: Session,
    study: StudyRecord,
    candidate_ids: list[int],
    *,
    tuner: TunerName,
    max_attempts: int,
    starts: int | None = None,
    skip_unpromotable: bool = False,
) -> tuple[list[JobRecord], list[JobRecord]]:
    """Tuning jobs for ``candidate_ids``, ``starts`` per candidate (default: the policy's):
    ``(all_jobs, new_jobs)``. A candidate that already has tuning jobs keeps them and gets none
    added (promoting again, with any ``starts``, doubles nothing). The caller commits, then
    enqueues ``new_jobs``."""
    have = ranking_store.tuning_jobs_of(s, candidate_ids)
    todo = [cid for cid in candidate_ids if cid not in have]
    configs = decide(
        study,
        study_store.jobs_of(s, todo, kind="screen"),
        tuner,
        starts=starts,
        skip_unpromotable=skip_unpromotable,
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
        if not ranking_store.screening_done(s, study_id) or not search_store.search_over(s, study):
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


def check_due(s: Session, study_id: int, resend_after_s: float) -> bool:
    """Whether a cancel should send the study's promotion check: only where it can promote (policy
    ``auto``, not yet promoted, every screening run ended), and once per study (the compare-and-set
    :func:`archscreen.store.jobs.claim_promotion_check`; again only after ``resend_after_s``). The
    caller commits, then sends (:func:`request_check`). Before issue 25 every cancel that left the
    candidate with nothing running sent one, ``auto`` or not: 500 cancels held a new job 240 s."""
    study = study_store.study_by_id(s, study_id)
    if study is None or not study.policy.auto or study.auto_promoted_at is not None:
        return False
    if not ranking_store.screening_done(s, study_id):
        return False
    return job_store.claim_promotion_check(s, study_id, resend_after_s)


def request_check(settings: Settings, study_id: int) -> bool:
    """Ask a worker to run :func:`after_screening_finished` for the study (the :data:`CHECK_TASK`
    Celery task, which takes the id and is idempotent; a worker's main process runs it, no job
    process). Used where the check must not run in an HTTP request (a cancel that ended an ``auto``
    study's screening: :func:`check_due`). False if the broker refused the message: the workers'
    maintenance pass runs the check anyway, seconds later."""
    from archscreen.worker.queue import celery_for

    try:
        celery_for(settings).send_task(CHECK_TASK, args=[study_id], queue=settings.queue)
    except Exception as exc:  # broker down: the maintenance sweep promotes the study
        log.warning(
            "study %s: promotion check not sent (%s); the maintenance pass will run it", study_id, exc
        )
        return False
    return True
