"""What a job leaves on disk and in its row: checkpoint retention, a full disk, a failure's reason
(issue 18, items 5 and 9). ``worker.runner.execute`` in-process on a real SQLite file and disk."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from archscreen.core.training import loop
from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import studies as study_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.store.models import EpochMetric, Study
from archscreen.worker import promotion
from archscreen.worker.runner import execute, one_line_reason

LOGREG = {"name": "logreg", "layers": ["flatten"], "head": "classifier"}


def setup(tmp_path: Path, **screening: Any) -> tuple[Database, Settings, int, int]:
    settings = Settings(data_dir=tmp_path, heartbeat_s=0.2, lease_s=30)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.migrate()
    config = {"max_epochs": 3, "patience": 50, "batch_size": 32, "seeds": [0], "base": "sgd"}
    config.update(screening)
    with db.session() as s:
        tenant = get_or_create_tenant(s, "t")
        study = study_store.create_study(
            s,
            tenant.id,
            name="s",
            dataset="digits",
            policy={"top_k": 1, "tuning_start": "multi"},  # retention of the run checkpoint alone
            screening=config,
        )
        _, _, jobs = study_store.add_candidate(
            s, study, name="lr", spec=LOGREG, spec_hash="h", num_params=1, summary=[], max_attempts=3
        )
        return db, settings, study.id, jobs[0].id


def job(db: Database, job_id: int) -> Job:
    with db.session() as s:
        row = s.get(Job, job_id)
        assert row is not None
        s.expunge(row)
        return row


def files(settings: Settings, job_id: int) -> list[str]:
    folder = settings.resolved_artifacts_dir / "jobs" / str(job_id)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ retention


def test_a_succeeded_run_deletes_its_checkpoint(tmp_path: Path) -> None:
    db, settings, _, job_id = setup(tmp_path)
    assert execute(db, settings, job_id) == "succeeded"
    assert files(settings, job_id) == []
    # and its folder, left empty (issue 25, item 7)
    assert not (settings.resolved_artifacts_dir / "jobs" / str(job_id)).exists()


def test_checkpoints_are_kept_when_retention_is_off(tmp_path: Path) -> None:
    db, settings, _, job_id = setup(tmp_path)
    settings = settings.model_copy(update={"delete_checkpoint_on_success": False})
    assert execute(db, settings, job_id) == "succeeded"
    assert files(settings, job_id) == ["checkpoint.pt"]


def test_a_tuning_job_hands_over_its_model_and_drops_its_run_checkpoint(tmp_path: Path) -> None:
    db, settings, study_id, job_id = setup(tmp_path)
    assert execute(db, settings, job_id) == "succeeded"
    with db.session() as s:
        study = study_store.study_by_id(s, study_id)
        assert study is not None
        _, new = promotion.promote(s, study, [job_by_id(s, job_id).candidate_id], tuner="fd2", max_attempts=3)
        tune_id = new[0].id
    assert execute(db, settings, tune_id) == "succeeded"
    # the job's files are gone: its weights are the model file in the model store, stored once
    assert files(settings, tune_id) == []
    assert not (settings.resolved_artifacts_dir / "jobs" / str(tune_id)).exists()
    with db.session() as s:
        row = job_by_id(s, tune_id)
        assert row.model_key is not None and row.model_bytes
        key = row.model_key
    stored = [p for p in settings.resolved_artifacts_dir.rglob("*") if p.is_file() and key in p.as_posix()]
    assert len(stored) == 1
    model = torch.load(stored[0], weights_only=True)
    assert model["state_dict"] and all(isinstance(v, torch.Tensor) for v in model["state_dict"].values())


def job_by_id(s: Any, job_id: int) -> Job:
    row = s.get(Job, job_id)
    assert row is not None
    return row


# ------------------------------------------------------------------ a full disk


def test_a_failed_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for a lambda
        loop._atomic_save({"weights": torch.zeros(3), "fn": lambda: 0}, path)
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_does_not_fit_says_disk_full_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(loop, "CHECKPOINT_FREE_MARGIN_BYTES", free)  # the margin the service configures
    with pytest.raises(loop.DiskFull, match=r"^\[Errno 28\] disk full: a checkpoint needs \d+ bytes"):
        loop._atomic_save({"weights": torch.zeros(1000)}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_mid_run_requeues_the_job_which_resumes_when_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, settings, _, job_id = setup(tmp_path, max_epochs=400, patience=400, max_steps_per_epoch=5)
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(execute(db, settings, job_id)))
    t.start()
    deadline = time.monotonic() + 60
    while job(db, job_id).epoch < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    # the disk fills up: what the free-space check sees from the next save on
    monkeypatch.setattr(loop, "CHECKPOINT_FREE_MARGIN_BYTES", shutil.disk_usage(tmp_path).free)
    t.join(60)
    assert out == ["requeued"]
    row = job(db, job_id)
    assert row.state == "queued" and row.attempts == 0 and row.lease_owner is None
    assert row.error is not None and row.error.startswith("disk full:") and "retried" in row.error
    assert files(settings, job_id) == ["checkpoint.pt"]  # the last whole checkpoint, no .tmp
    done_epochs = torch.load(
        settings.resolved_artifacts_dir / "jobs" / str(job_id) / "checkpoint.pt", weights_only=False
    )["epoch"]

    # still full: the job is not even claimed (no epoch is spent), it waits for the next sweep
    full = settings.model_copy(update={"checkpoint_free_margin_bytes": shutil.disk_usage(tmp_path).free})
    assert execute(db, full, job_id) == "deferred"
    row = job(db, job_id)
    assert row.state == "queued" and row.attempts == 0 and row.enqueued_at is None
    assert row.error is not None and "disk full" in row.error

    # space is back: it resumes from its checkpoint and finishes
    short = settings.model_copy(update={"checkpoint_free_margin_bytes": 0})
    with db.session() as s:  # a shorter run, so the test ends soon
        study = s.get(Study, row.study_id)
        assert study is not None
        study.screening = {**study.screening, "max_epochs": done_epochs + 2}
    assert execute(db, short, job_id) == "succeeded"
    row = job(db, job_id)
    assert row.attempts == 1 and row.error is None
    with db.session() as s:
        epochs = s.scalars(select(EpochMetric.epoch).where(EpochMetric.job_id == job_id)).all()
    assert sorted(epochs) == list(range(1, done_epochs + 3))
    assert files(settings, job_id) == []


# ------------------------------------------------------------------ a failure's reason


def test_a_failed_job_serves_one_line_and_keeps_the_traceback_in_its_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archscreen.core.screening import AlraoScreener

    db, settings, _, job_id = setup(tmp_path)

    def fails_inside_the_screener(*args: Any, **kwargs: Any) -> Any:
        # (a stored config can no longer be invalid: store/ validates it, so the screener fails here)
        raise ValueError("lr_max must be finite, got inf")

    monkeypatch.setattr(AlraoScreener, "screen", fails_inside_the_screener)
    assert execute(db, settings, job_id) == "failed"
    error = job(db, job_id).error
    assert error is not None
    assert "\n" not in error and "Traceback" not in error and ".py" not in error and len(error) <= 300
    assert error.startswith("ValueError: ") and "lr_max" in error
    trace = (settings.resolved_artifacts_dir / "jobs" / str(job_id) / "error.txt").read_text()
    assert trace.startswith("Traceback (most recent call last):") and ".py" in trace


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            FileNotFoundError(2, "No such file or directory", "/srv/archscreen/data/x.npz"),
            "FileNotFoundError: [Errno 2] No such file or directory: '.../x.npz'",
        ),
        (RuntimeError("shape\nmismatch   at\tlayer 2"), "RuntimeError: shape mismatch at layer 2"),
        (ValueError(), "ValueError"),
        (ValueError("x" * 1000), "ValueError: " + "x" * 285 + "..."),
    ],
)
def test_one_line_reason(exc: BaseException, expected: str) -> None:
    assert one_line_reason(exc) == expected
