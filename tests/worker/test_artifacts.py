"""worker/artifacts.py: the exported file holds the checkpoint's *best* weights and loads safely."""

from __future__ import annotations

from pathlib import Path

import torch

from archscreen.core.data import DatasetInfo
from archscreen.core.training.model import build_plain_model
from archscreen.settings import Settings
from archscreen.store.blobs import model_store
from archscreen.worker.artifacts import best_weights, export_model

SPEC = {"name": "mlp", "layers": ["flatten", {"linear": 4}, "relu"], "head": "classifier"}
INFO = DatasetInfo(name="/srv/cache/ab/abcdef", task="classification", input_shape=(1, 6), num_classes=3)
RESULT = {"recommended_lr": 0.02, "tuner": "fd2", "seed": 3, "val_loss": 0.5, "best_epoch": 2, "epochs": 4}


def checkpoint(
    tmp_path: Path, *, with_best: bool
) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    last = build_plain_model(SPEC, INFO).state_dict()
    best = build_plain_model(SPEC, INFO).state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": last, "best_state": best if with_best else None, "best_epoch": 2}, path)
    return path, best, last


def test_the_best_epochs_weights_are_exported_not_the_last(tmp_path: Path) -> None:
    ckpt, best, last = checkpoint(tmp_path, with_best=True)
    assert any(not torch.equal(best[k], last[k]) for k in best)
    got = best_weights(ckpt)
    assert all(torch.equal(got[k], best[k]) for k in best)
    ckpt, best, last = checkpoint(tmp_path, with_best=False)  # no epoch improved: the last weights
    assert all(torch.equal(best_weights(ckpt)[k], last[k]) for k in last)


def test_export_puts_a_weights_only_file_in_the_model_store(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    ckpt, best, _ = checkpoint(tmp_path, with_best=True)
    artifact = export_model(settings, ckpt, RESULT, SPEC, "ds_7", INFO, 42)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "data"]  # no local copy left
    path = model_store(None, settings.resolved_artifacts_dir).local_path(artifact.sha256, tmp_path)
    assert (
        artifact.size == path.stat().st_size
        and artifact.key == f"models/{artifact.sha256[:2]}/{artifact.sha256}"
    )
    f = torch.load(path, weights_only=True)
    assert (f["format"], f["lr"], f["tuner"], f["seed"], f["job_id"]) == (1, 0.02, "fd2", 3, 42)
    assert f["spec"] == SPEC and f["metrics"]["val_loss"] == 0.5 and f["metrics"]["val_accuracy"] is None
    # named by the study's dataset, not the worker's cached file
    assert f["dataset"] == {**INFO.__dict__, "name": "ds_7"} and f["dataset"]["input_shape"] == (1, 6)
    model = build_plain_model(f["spec"], DatasetInfo(**f["dataset"]))
    model.load_state_dict(f["state_dict"], strict=True)
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
