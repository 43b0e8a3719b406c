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


def test_a_tables_export_takes_raw_rows_and_computes_what_the_job_trained_on(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from archscreen.core.data.preprocess import read_state
    from archscreen.core.data.tabular import feature_columns, table_to_arrays
    from archscreen.worker.artifacts import dataset_preprocessing

    rng = np.random.default_rng(2)
    amount = rng.lognormal(5, 2, 60)
    amount[::7] = np.nan
    table = pa.table(
        {
            "amount": amount,
            "kind": rng.choice(np.array(["a", "b", None], dtype=object), 60).tolist(),
            "y": rng.integers(0, 3, 60),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    arrays, _, _ = table_to_arrays(tmp_path / "t.parquet", "parquet", "y")
    np.savez(tmp_path / "canonical", **arrays)
    prep = dataset_preprocessing(str(tmp_path / "canonical.npz"))
    assert prep == read_state(str(tmp_path / "canonical.npz")) and dataset_preprocessing("mnist1d") is None
    info = DatasetInfo(
        name="x", task="classification", input_shape=(arrays["x_train"].shape[1],), num_classes=3
    )
    spec = {"name": "mlp", "layers": [{"linear": 4}, "relu"], "head": "classifier"}
    torch.manual_seed(0)
    trained = build_plain_model(spec, info)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": trained.state_dict(), "best_state": None}, ckpt)
    artifact = export_model(Settings(data_dir=tmp_path / "data"), ckpt, RESULT, spec, "ds_1", info, 1, prep)
    store = model_store(None, Settings(data_dir=tmp_path / "data").resolved_artifacts_dir)
    f = torch.load(store.local_path(artifact.sha256, tmp_path), weights_only=True)
    model = build_plain_model(f["spec"], DatasetInfo(**f["dataset"]), f["preprocessing"])
    model.load_state_dict(f["state_dict"], strict=True)
    from archscreen.core.data.preprocess import TablePreprocessor

    raw = TablePreprocessor.from_state(f["preprocessing"]).encode_raw(
        feature_columns(table, ["amount", "kind"])
    )
    x = np.concatenate([arrays["x_train"], arrays["x_val"], arrays["x_test"]])
    assert raw.shape[1] == 2 and x.shape[1] > 2
    # the raw rows through the exported model == the stored features through the trained one
    features = torch.from_numpy(TablePreprocessor.from_state(prep).transform(raw))
    assert torch.equal(model.predict(torch.from_numpy(raw)), trained.predict(features))
