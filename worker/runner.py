"""Run one job (screening run or tuning job) inside a worker process.

The database is the source of truth: the job is claimed by compare-and-set,
a heartbeat thread renews the lease and polls the cancel flag, every epoch is
written as it ends, and only the lease owner can write the final state. A job
resumes from its last checkpoint when the reaper requeues it after a worker died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from pathlib import Path
from typing import Any

from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store.models import Candidate, Study

from archscreen.settings import Settings

log = logging.getLogger("archscreen.worker")


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired): stop without writing anything.

    Deliberately not ``TrainingCancelled``: the loop must not record a final ``cancelled``
    checkpoint that the new owner would resume from.
    """


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease(threading.Thread):
    """Renews a job's lease every ``heartbeat_s`` and mirrors the cancel flag into an Event.

    The training step checks the Events (no database round trip per step).
    """

    def __init__(self, db: Database, job_id: int, owner: str, settings: Settings) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.db, self.job_id, self.owner, self.settings = db, job_id, owner, settings
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.heartbeat_s):
            try:
                with self.db.session() as s:
                    hb = job_store.heartbeat(s, self.job_id, self.owner, self.settings.lease_s)
            except Exception:  # a database blip: try again next beat; the lease covers several beats
                log.exception("heartbeat for job %s failed", self.job_id)
                continue
            if not hb.owned:
                self.lost.set()
            if hb.cancel_requested:
                self.cancel.set()

    def stop(self) -> None:
        self._stop_event.set()


def train_config(study: Study, seed: int, device: str) -> Any:
    from archscreen.core.training.loop import TrainConfig

    sc = study.screening
    return TrainConfig(
        max_epochs=int(sc["max_epochs"]),
        patience=int(sc["patience"]),
        batch_size=int(sc["batch_size"]),
        wall_clock_s=sc.get("wall_clock_s"),
        seed=seed,
        device=device,
        max_steps_per_epoch=sc.get("max_steps_per_epoch"),
    )


def execute(db: Database, settings: Settings, job_id: int, *, owner: str | None = None) -> str:
    """Claim and run job ``job_id``; returns its final state, or ``skipped`` if it was not claimable."""
    owner = owner or new_owner()
    with db.session() as s:
        job = job_store.claim(s, job_id, owner, settings.lease_s)
        if job is None:
            log.info("job %s not claimable (already taken, finished or cancelled): skipped", job_id)
            return "skipped"
        cand = s.get(Candidate, job.candidate_id)
        study = s.get(Study, job.study_id)
        assert cand is not None and study is not None
        kind, seed, job_config = job.kind, job.seed, dict(job.config)
        spec, dataset = cand.spec, study.dataset
    lease = Lease(db, job_id, owner, settings)
    lease.start()
    try:
        state, result, error = _run(
            db, settings, job_id, owner, kind, seed, job_config, spec, dataset, study, lease
        )
    except BaseException as exc:
        from celery.exceptions import SoftTimeLimitExceeded

        lease.stop()
        if isinstance(exc, SoftTimeLimitExceeded):
            state, result, error = (
                "failed",
                None,
                f"time limit: the job ran over {settings.job_soft_time_limit_s} s",
            )
        elif isinstance(exc, Exception):
            log.exception("job %s failed", job_id)
            state, result = "failed", None
            error = f"{type(exc).__name__}: {exc}"[:2000] + "\n" + traceback.format_exc(limit=-3)[-2000:]
        else:  # KeyboardInterrupt/SystemExit: the worker is going away; the reaper requeues the job
            raise
    finally:
        lease.stop()
    if lease.lost.is_set():
        log.warning("job %s: lease lost to another worker; result discarded", job_id)
        return "lost"
    with db.session() as s:
        if not job_store.finish(s, job_id, owner, state, result=result, error=error):
            return "lost"
    if kind == "screen":
        from archscreen.worker.promotion import after_screening_finished

        try:
            after_screening_finished(db, settings, study.id)
        except Exception:  # the job's result stands; the maintenance sweep retries the promotion
            log.exception("study %s: auto-promotion failed; will retry", study.id)
    return state


def _run(
    db: Database,
    settings: Settings,
    job_id: int,
    owner: str,
    kind: str,
    seed: int,
    job_config: dict[str, Any],
    spec: dict[str, Any],
    dataset: str,
    study: Study,
    lease: Lease,
) -> tuple[str, dict[str, Any] | None, str | None]:
    import torch
    from archscreen.core.screening import AlraoScreener, resolve_device
    from archscreen.core.training.loop import Progress, TrainingCancelled

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    config = train_config(study, seed, device)
    ckpt = Path(settings.resolved_artifacts_dir) / "jobs" / str(job_id) / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)

    def step_hook(step: int, per_epoch: int) -> None:
        if lease.lost.is_set():
            raise LeaseLost
        if lease.cancel.is_set():
            raise TrainingCancelled

    def callback(p: Progress) -> None:
        r = p.record
        with db.session() as s:
            owned = job_store.record_epoch(
                s,
                job_id,
                owner,
                epoch=p.epoch,
                max_epochs=p.max_epochs,
                elapsed_s=p.elapsed_s,
                train_loss=r.train_loss,
                val_loss=r.val_loss,
                val_accuracy=r.val_accuracy,
                seconds=r.seconds,
                extra=_jsonable(p.extra),
            )
        if not owned:
            lease.lost.set()
        if lease.lost.is_set():
            raise LeaseLost
        if lease.cancel.is_set():
            raise TrainingCancelled

    if kind == "screen":
        sc = study.screening
        screener = AlraoScreener(
            lr_min=sc.get("lr_min"), lr_max=sc.get("lr_max"), num_copies=sc.get("num_copies"), base=sc["base"]
        )
        out = screener.screen(
            spec, dataset, config, callback=callback, step_hook=step_hook, checkpoint_path=ckpt
        ).to_dict()
        out["lr_range"] = list(screener.settings(out["task"])[:2])
    elif kind == "tune":
        from archscreen.core.tuning import get_tuner

        tuner = get_tuner(job_config["tuner"])
        out = tuner.tune(
            spec,
            dataset,
            job_config.get("init_lr"),
            config,
            seed,
            callback,
            step_hook=step_hook,
            checkpoint_path=ckpt,
        ).to_dict()
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    out.pop("curves", None)  # stored per epoch in epoch_metrics
    out["device"] = device if device == "cpu" else f"{device} ({torch.cuda.get_device_name(0)})"
    out = _jsonable(out)
    stopped = out.get("stopped_because")
    state = {"cancelled": "cancelled", "diverged": "diverged"}.get(str(stopped), "succeeded")
    error = "training diverged (non-finite loss)" if state == "diverged" else None
    return state, out, error


def _jsonable(x: Any) -> Any:
    """Plain JSON: NaN/inf become null (PostgreSQL's json and strict parsers reject them)."""
    if isinstance(x, float):
        return None if x != x or x in (float("inf"), float("-inf")) else x
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return _jsonable(x.item())
    return x
