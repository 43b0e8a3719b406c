"""Run one job (screening run or tuning job) inside a worker process.

The database is the source of truth: the job is claimed by compare-and-set,
a heartbeat thread renews the lease and polls the cancel flag, every epoch is
written as it ends, and only the lease owner can write the final state. A job
resumes from its last checkpoint when the reaper requeues it after a worker died.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.jsonsafe import jsonable as _jsonable
from archscreen.store.records import StudyRecord

if TYPE_CHECKING:
    from archscreen.core.training.loop import Progress
    from archscreen.worker.gpu_share import GpuShare

log = logging.getLogger("archscreen.worker")


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired): stop without writing anything.

    Deliberately not ``TrainingCancelled``: the loop must not record a final ``cancelled``
    checkpoint that the new owner would resume from.
    """


class ShutdownRequested(Exception):
    """The worker is stopping: the job stops (its last epoch checkpointed) and is requeued."""


class Shutdown:
    """Set by a job process's SIGTERM handler (the worker is stopping).

    The running job trains on to its next epoch boundary, whose checkpoint the loop writes, and
    stops at the step after it; if no boundary comes within ``grace_s`` it stops at the next step
    (the unfinished epoch is dropped: it is retrained from the last checkpoint).
    """

    def __init__(self) -> None:
        self.requested_at: float | None = None

    def request(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def overdue(self, grace_s: float) -> bool:
        return self.requested_at is not None and time.monotonic() - self.requested_at >= grace_s


SHUTDOWN = Shutdown()

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"`,:;()\[\]{}<>\\/]+){2,}")


def one_line_reason(exc: BaseException, limit: int = 300) -> str:
    """``ExcType: message`` on one line, server paths cut to their last part, at most ``limit`` chars."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = _PATH.sub(lambda m: ".../" + re.split(r"[\\/]", m.group(0))[-1], text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def job_dir(settings: Settings, job_id: int) -> Path:
    return Path(settings.resolved_artifacts_dir) / "jobs" / str(job_id)


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


class CpuClock:
    """A job's CPU-seconds (``jobs.cpu_seconds``): what its earlier attempts recorded plus this
    process's CPU time (user + system, every thread: ``time.process_time``) since the job was
    claimed. A job runs alone in a fresh process (``worker_max_tasks_per_child=1``), so the
    process's time is the job's: its data loading, training and evaluation, the lease thread's
    beats. On a GPU worker this is still CPU time (the host side), not GPU time. An attempt killed
    hard keeps what its last epoch recorded; the rest of that epoch is not counted."""

    def __init__(self, before: float) -> None:
        self.before = before
        self.start = time.process_time()

    def total(self) -> float:
        return self.before + (time.process_time() - self.start)


def screening_run(study: StudyRecord, seed: int, device: str) -> tuple[Any, Any]:
    """The study's screener and budget for the run with ``seed``: ``ScreeningConfig.run``, the one
    function the CLI and the benches call too (a tuning job trains under the same budget)."""
    return study.screening.run(seed, device)


def execute(db: Database, settings: Settings, job_id: int, *, owner: str | None = None) -> str:
    """Claim and run job ``job_id``; returns its final state, or:

    ``skipped`` (not claimable), ``lost`` (another worker owns it now), ``requeued`` (the worker is
    stopping, or the disk filled up: the job is queued again and resumes from its checkpoint),
    ``deferred`` (the disk is still full: not claimed; the sweep sends it again later).
    """
    owner = owner or new_owner()
    room = _disk_room(settings, job_id)
    if room is not None:
        with db.session() as s:
            job_store.defer(s, job_id, room)
        log.warning("job %s not started: %s; the sweep sends it again later", job_id, room)
        return "deferred"
    with db.session() as s:
        job = job_store.claim(s, job_id, owner, settings.lease_s)
        if job is None:
            log.info("job %s not claimable (already taken, finished or cancelled): skipped", job_id)
            return "skipped"
        study = study_store.study_by_id(s, job.study_id)
        spec = study_store.candidate_spec(s, job.candidate_id)
        assert study is not None and spec is not None
        kind, seed, job_config = job.kind, job.seed, dict(job.config)
        dataset = study.dataset
    cpu = CpuClock(job.cpu_seconds)  # earlier attempts' CPU time, then this process's
    from archscreen.core.training.loop import DiskFull

    lease = Lease(db, job_id, owner, settings)
    lease.start()
    model: job_store.ModelArtifact | None = None  # a tuning job's model file, in the blob store
    try:
        state, result, error, model = _run(
            db, settings, job_id, owner, kind, seed, job_config, spec, dataset, study, lease, cpu
        )
    except (ShutdownRequested, DiskFull) as exc:
        lease.stop()
        if lease.lost.is_set():
            return "lost"
        reason = None if isinstance(exc, ShutdownRequested) else f"{exc.strerror}; the job will be retried"
        return _requeue(db, settings, job_id, owner, kind, reason)
    except BaseException as exc:
        lease.stop()
        state, result, error = _failure(settings, job_id, exc)
    finally:
        lease.stop()
    if lease.lost.is_set():
        log.warning("job %s: lease lost to another worker; result discarded", job_id)
        return "lost"
    with db.session() as s:
        if state == "paused":  # an ASHA rung: the checkpoint stays, the search step decides
            paused = result and job_store.pause(s, job_id, owner, result=result, cpu_seconds=cpu.total())
            return "paused" if paused else "lost"
        done = job_store.finish(
            s, job_id, owner, state, result=result, error=error, model=model, cpu_seconds=cpu.total()
        )
        if not done:
            return "lost"
    if state == "succeeded":
        _apply_retention(settings, job_id, kind, model_stored=model is not None)
    if kind == "screen":
        from archscreen.worker.promotion import after_screening_finished

        try:
            after_screening_finished(db, settings, study.id)
        except Exception:  # the job's result stands; the maintenance sweep retries the promotion
            log.exception("study %s: auto-promotion failed; will retry", study.id)
    return state


def _failure(settings: Settings, job_id: int, exc: BaseException) -> tuple[str, None, str]:
    """The final state of a job whose run raised ``exc`` (called in its ``except`` block, so the
    traceback is the current one); re-raises KeyboardInterrupt/SystemExit: the worker is going away
    and the reaper requeues the job."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return "failed", None, f"time limit: the job ran over {settings.job_soft_time_limit_s} s"
    if _is_cuda_oom(exc):
        # expected when K jobs share a GPU (worker/gpu_share.py): the job that does not fit its
        # share fails with a reason the user can act on; its neighbours train on
        from archscreen.worker.gpu_share import oom_message

        error = oom_message(settings)
        log.warning("job %s failed: %s (%s)", job_id, error, one_line_reason(exc))
        return "failed", None, error
    if isinstance(exc, Exception):
        # the traceback (server paths) goes to the log and the job's artifacts; the API serves one line
        log.exception("job %s failed", job_id)
        _write_traceback(settings, job_id)
        return "failed", None, one_line_reason(exc)
    raise exc


def _requeue(db: Database, settings: Settings, job_id: int, owner: str, kind: str, reason: str | None) -> str:
    """Give the job back (queued, lease released, attempt not counted) and send its message again."""
    with db.session() as s:
        if not job_store.release(s, job_id, owner, reason):
            return "lost"
    log.warning("job %s requeued (%s); it resumes from its checkpoint", job_id, reason or "worker stopping")
    if reason is None:  # a stopping worker: another worker (or this one restarted) takes it at once
        from archscreen.worker.queue import enqueue

        try:
            enqueue(db, settings, [(job_id, kind)])
        except Exception:  # the maintenance sweep sends it
            log.exception("job %s: could not send its message; the sweep will", job_id)
    return "requeued"


def _disk_room(settings: Settings, job_id: int) -> str | None:
    """``disk full: ...`` when the artifacts disk cannot take this job's checkpoint, else None.

    Known only after a first save (the checkpoint's size); before that, the free margin.
    """
    folder = Path(settings.resolved_artifacts_dir)
    if not folder.exists():
        return None
    ckpt = job_dir(settings, job_id) / "checkpoint.pt"
    size = ckpt.stat().st_size if ckpt.exists() else 0
    need = size + settings.checkpoint_free_margin_bytes
    free = shutil.disk_usage(folder).free
    if free >= need:
        return None
    return f"disk full: the job's checkpoint needs {need} bytes, {free} bytes are free; it will be retried"


def _write_traceback(settings: Settings, job_id: int) -> None:
    """The failed job's traceback, for its owner and operators: ``jobs/<id>/error.txt``."""
    try:
        path = job_dir(settings, job_id) / "error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(traceback.format_exc())
    except OSError:
        log.exception("job %s: could not write error.txt", job_id)


def _apply_retention(settings: Settings, job_id: int, kind: str, *, model_stored: bool) -> None:
    """After success the run checkpoint goes, and then the job's folder if nothing else is in it. A
    tuning job's best weights live on as its model file in the model store (``worker/artifacts.py``);
    without one the checkpoint stays (nothing is lost)."""
    if not settings.delete_checkpoint_on_success:
        return
    folder = job_dir(settings, job_id)
    ckpt = folder / "checkpoint.pt"
    if kind == "tune" and not model_stored:
        return
    if kind == "tune":  # a halving job's starts: the answer is in the model store now
        shutil.rmtree(folder / HALVING_DIR, ignore_errors=True)
    try:
        ckpt.unlink(missing_ok=True)
    except OSError:  # the result stands; the checkpoint stays
        log.exception("job %s: could not delete the run checkpoint; it is kept", job_id)
        return
    with contextlib.suppress(OSError):  # rmdir takes an empty folder only: anything kept stays
        folder.rmdir()


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
    study: StudyRecord,
    lease: Lease,
    cpu: CpuClock,
) -> tuple[str, dict[str, Any] | None, str | None, job_store.ModelArtifact | None]:
    import torch

    from archscreen.core.screening import resolve_device
    from archscreen.core.training import loop
    from archscreen.worker.datasets import local_dataset

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    loop.CHECKPOINT_FREE_MARGIN_BYTES = settings.checkpoint_free_margin_bytes
    device = resolve_device(settings.device)
    from archscreen.worker.gpu_share import apply_gpu_share

    share = apply_gpu_share(settings, device)  # before the job allocates anything on the GPU
    # A tuning job's training seed is its config's train_seed: a promotion's starts share one
    # (their job seeds are only their unique keys), so only the starting rate differs between them.
    # Jobs made before starts have none: their seed is the job's.
    train_seed = int(job_config.get("train_seed", seed)) if kind == "tune" else seed
    screener, config = screening_run(study, train_seed, device)
    dataset = local_dataset(db, settings, dataset)  # ds_<id>: the uploaded file, cached locally
    ckpt = job_dir(settings, job_id) / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    step_hook, callback = _job_hooks(db, settings, job_id, owner, lease, cpu)
    model: job_store.ModelArtifact | None = None
    if kind == "screen":
        if settings.cuda_graphs:  # opt-in (core/training/graphs.py); on the CPU a logged no-op
            from archscreen.core.training.graphs import with_cuda_graphs

            screener = with_cuda_graphs(screener, device)
        target = job_config.get("target_epochs")  # a search study's ASHA rung (worker/search.py)
        if isinstance(target, int) and target < config.max_epochs:
            config = dataclasses.replace(config, pause_at=target)
        out = screener.screen(
            spec, dataset, config, callback=callback, step_hook=step_hook, checkpoint_path=ckpt
        ).to_dict()
        out["lr_range"] = list(screener.settings(out["task"])[:2])
        if isinstance(target, int):
            out["asha"] = _rung_report(out, target, config.max_epochs)
        if study.search is not None and "latency" in study.search.objectives:
            out["latency_ms"] = _latency_ms(spec, dataset, config, device, out)
        if study.policy.tuning_start == "screen-weights" and out["stopped_because"] != "cancelled":
            _keep_screen_weights(ckpt)
    elif kind == "tune":
        from archscreen.core.data import load_dataset
        from archscreen.worker.artifacts import dataset_preprocessing, export_model

        out, best_ckpt = _tune(
            settings, job_config, spec, dataset, config, train_seed, callback, step_hook, ckpt
        )
        if out["stopped_because"] not in ("cancelled", "diverged"):
            info = load_dataset(dataset, seed=config.seed).info  # memoised: the splits it trained on
            prep = dataset_preprocessing(dataset)  # a table's or images': the model takes raw input
            model = export_model(settings, best_ckpt, out, spec, study.dataset, info, job_id, prep)
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    out = _stored_result(settings, kind, out, device, share, screener)
    stopped = out.get("stopped_because")
    state = {"cancelled": "cancelled", "diverged": "diverged", "paused": "paused"}.get(
        str(stopped), "succeeded"
    )
    error = "training diverged (non-finite loss)" if state == "diverged" else None
    return state, out, error, model


SCREEN_WEIGHTS = "screen_weights.pt"
HALVING_DIR = "halving"


def _keep_screen_weights(ckpt: Path) -> None:
    """A screening run of a ``screen-weights`` study keeps its weights (the best epoch's Alrao
    model, no optimizer state) beside its checkpoint, for the tuning job that starts from them:
    the checkpoint itself goes at success (retention)."""
    import torch

    from archscreen.core.tuners.stage import screening_weights

    tmp = ckpt.with_name(SCREEN_WEIGHTS + ".tmp")
    torch.save(screening_weights(ckpt), tmp)
    os.replace(tmp, ckpt.with_name(SCREEN_WEIGHTS))


def _init_state(settings: Settings, job_config: dict[str, Any]) -> dict[str, Any] | None:
    """The plain model's starting weights of a ``screen-weights`` tuning job (``init_from_job``:
    the screening run whose weights, ``init_copy``: its chosen output copy); None otherwise."""
    src = job_config.get("init_from_job")
    if src is None:
        return None
    import torch

    from archscreen.core.tuners.stage import plain_state_from_alrao

    path = job_dir(settings, int(src)) / SCREEN_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(
            f"the weights of screening run {src} are gone (tuning_start screen-weights needs them): "
            "promote with another tuning_start"
        )
    weights = torch.load(path, map_location="cpu", weights_only=True)
    return plain_state_from_alrao(weights, int(job_config["init_copy"]))


def _tune(
    settings: Settings,
    job_config: dict[str, Any],
    spec: dict[str, Any],
    dataset: Any,
    config: Any,
    train_seed: int,
    callback: Callable[[Progress], None],
    step_hook: Callable[[int, int], None],
    ckpt: Path,
) -> tuple[dict[str, Any], Path]:
    """A tuning job's run: one start, or its ``halving_rates`` through successive halving
    (``core.tuners.stage.tune_with_halving``, each start's checkpoint under ``halving/``; a
    resumed job replays the decisions from them). Returns the result and the checkpoint whose
    best weights are the answer. A halving job's epoch rows are its starts' (the later start's
    row wins an epoch number two starts trained; ``extra.start`` names it)."""
    from dataclasses import replace

    from archscreen.core.tuning import get_tuner

    tuner = get_tuner(job_config["tuner"])
    init_state = _init_state(settings, job_config)
    rates = job_config.get("halving_rates")
    if not rates:
        out = tuner.tune(
            spec,
            dataset,
            job_config.get("init_lr"),
            config,
            train_seed,
            callback,
            step_hook=step_hook,
            checkpoint_path=ckpt,
            init_state=init_state,
        ).to_dict()
        return out, ckpt
    from archscreen.core.tuners.stage import tune_with_halving

    def start_callback(i: int) -> Callable[[Progress], None]:
        return lambda p: callback(replace(p, extra={**p.extra, "start": i}))

    work = ckpt.parent / HALVING_DIR
    stage = tune_with_halving(
        tuner,
        spec,
        dataset,
        [float(r) for r in rates],
        replace(config, seed=train_seed),
        work,
        init_state=init_state,
        callback=start_callback,
        step_hook=step_hook,
    )
    leader = stage.chosen
    out = stage.best.to_dict()
    out["halving"] = {"rates": rates, "rungs": stage.rungs, "values": stage.values, "chosen": leader}
    return out, work / f"start-{leader}.pt"


def _rung_report(out: dict[str, Any], target: int, max_epochs: int) -> dict[str, Any]:
    """What the search step reports to ASHA for this run (``result["asha"]``): the rung's epochs and
    the run's ranking value there (:func:`archscreen.core.asha.rung_value`, the scheduler's default
    key), computed here, where the run's full curve is at hand (the stored result drops it). A run
    that stopped before the rung (patience, divergence) is read at its end."""
    from archscreen.core.asha import DEFAULT_RANKING_KEY, rung_value

    value = rung_value(out["curves"], target, out["task"], key=DEFAULT_RANKING_KEY, max_epochs=max_epochs)
    return {"epochs": target, "key": DEFAULT_RANKING_KEY, "value": value if math.isfinite(value) else None}


def _latency_ms(
    spec: dict[str, Any], dataset: Any, config: Any, device: str, out: dict[str, Any]
) -> float | None:
    """A search trial's measured forward latency (NSGA-II's ``latency`` objective,
    ``core/latency.py``), on this job's device after its training; None for a cancelled or
    diverged run. Its CPU time counts in the job's ``cpu_seconds`` (the study's compute)."""
    if out.get("stopped_because") in ("cancelled", "diverged"):
        return None
    from archscreen.core.data import load_dataset
    from archscreen.core.latency import forward_latency_ms

    info = load_dataset(dataset, seed=config.seed).info  # memoised: the splits it trained on
    return forward_latency_ms(spec, info, device=device)


def _job_hooks(
    db: Database, settings: Settings, job_id: int, owner: str, lease: Lease, cpu: CpuClock
) -> tuple[Callable[[int, int], None], Callable[[Progress], None]]:
    """The training loop's ``step_hook`` (stops for a lost lease, a cancel or a shutdown) and
    epoch ``callback`` (writes the epoch, as the lease owner only)."""
    from archscreen.core.training.loop import TrainingCancelled

    # set when an epoch ended after a shutdown request: its checkpoint is written after the
    # callback, so the job stops at the next step
    boundary = threading.Event()

    def step_hook(step: int, per_epoch: int) -> None:
        if lease.lost.is_set():
            raise LeaseLost
        if lease.cancel.is_set():
            raise TrainingCancelled
        if SHUTDOWN.requested and (boundary.is_set() or SHUTDOWN.overdue(settings.shutdown_grace_s)):
            where = "after its epoch" if boundary.is_set() else "mid-epoch (grace over)"
            log.info("job %s: stopping for shutdown %s", job_id, where)
            raise ShutdownRequested

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
                cpu_seconds=cpu.total(),
            )
        if not owned:
            lease.lost.set()
        if lease.lost.is_set():
            raise LeaseLost
        if lease.cancel.is_set():
            raise TrainingCancelled
        if SHUTDOWN.requested:
            boundary.set()

    return step_hook, callback


def _stored_result(
    settings: Settings, kind: str, out: dict[str, Any], device: str, share: GpuShare | None, screener: Any
) -> dict[str, Any]:
    """The run's result as the job stores it: curves dropped (stored per epoch), where it ran."""
    import torch

    out.pop("curves", None)  # stored per epoch in epoch_metrics
    out["device"] = device if device == "cpu" else f"{device} ({torch.cuda.get_device_name(0)})"
    if share is not None:
        out["gpu_share"] = share.as_dict()
    if settings.cuda_graphs and kind == "screen":
        out["cuda_graphs"] = getattr(screener, "cuda_graphs", None)
    stored: dict[str, Any] = _jsonable(out)
    return stored
