"""A succeeded tuning job's model file: the best epoch's weights with what it takes to use them.

The file is what ``GET /tuning-jobs/{id}/model`` and ``archscreen export`` hand over::

    torch.save({"format": 1, "state_dict": ..., "spec": ..., "lr": ..., "tuner": ...,
                "metrics": {...}, "dataset": {...}, "seed": ..., "job_id": ...,
                "preprocessing": {...} or None})

Only tensors, dicts, lists, tuples, strings, numbers and ``None``: it loads with
``torch.load(path, weights_only=True)`` (no pickled code runs on the reader's machine), and
``archscreen.core.training.model.build_plain_model(f["spec"], DatasetInfo(**f["dataset"]))``
rebuilds the network it fits (``load_state_dict(strict=True)``).

A table's model takes raw rows: ``preprocessing`` is the dataset's fitted
:class:`~archscreen.core.data.preprocess.TablePreprocessor` state (column names, kinds,
vocabularies) and the state_dict holds its :class:`~archscreen.core.training.inputs.TableInput`
buffers under ``input.``; rebuild with ``build_plain_model(f["spec"], DatasetInfo(**f["dataset"]),
f["preprocessing"])`` (``archscreen predict`` does this). None for an ``.npz`` or built-in dataset.

The weights come from the run's checkpoint, which the training loop writes at every epoch end
and which holds the best epoch's weights (``best_state``): the weights ``train()`` restored and
evaluated, so the file reproduces the job's reported metrics. Reading them there, rather than
from the tuner's return value, keeps ``core/`` unchanged. Once the file is stored, the run
checkpoint is deleted (``delete_checkpoint_on_success``): the weights are kept once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from archscreen.core.names import RESULT_METRIC_NAMES
from archscreen.settings import Settings
from archscreen.store.blobs import model_key, model_store, sha256_of
from archscreen.store.jobs import ModelArtifact

FORMAT = 1
# The tuning result's fields that describe the handed-over weights (the best epoch's).
METRIC_FIELDS = (
    *RESULT_METRIC_NAMES,
    "best_epoch",
    "epochs",
    "init_lr",
    "recommended_by",
)


def best_weights(checkpoint: Path) -> dict[str, Any]:
    """The best epoch's weights from a run checkpoint (the last epoch's if no epoch improved)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file
    weights = state.get("best_state") or state["model"]
    return {k: v.detach().clone() for k, v in weights.items()}


def model_payload(
    state_dict: dict[str, Any],
    result: dict[str, Any],
    spec: dict[str, Any],
    dataset_ref: str,
    info: Any,
    job_id: int,
    preprocessing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The exported file's content for a tuning result (``TuningResult.to_dict()``).

    ``dataset`` is the :class:`~archscreen.core.data.DatasetInfo` the model was built for, named by
    the study's dataset (``mnist1d``, ``ds_<id>``) rather than the worker's local file.
    """
    if preprocessing is not None:
        from archscreen.core.training.inputs import input_module

        buffers = input_module(preprocessing).state_dict()
        state_dict = {**{f"input.{k}": v for k, v in buffers.items()}, **state_dict}
    return {
        "format": FORMAT,
        "state_dict": state_dict,
        "spec": spec,
        "lr": float(result["recommended_lr"]),
        "tuner": str(result["tuner"]),
        "metrics": {k: result.get(k) for k in METRIC_FIELDS},
        "dataset": asdict(replace(info, name=dataset_ref)),
        "seed": int(result["seed"]),
        "job_id": job_id,
        "preprocessing": preprocessing,
    }


def dataset_preprocessing(dataset: str) -> dict[str, Any] | None:
    """The preprocessing state stored in a study's local dataset file (a table's), else None."""
    if not os.path.isfile(dataset):  # a built-in name
        return None
    from archscreen.core.data.preprocess import read_state

    return read_state(dataset)


def export_model(
    settings: Settings,
    checkpoint: Path,
    result: dict[str, Any],
    spec: dict[str, Any],
    dataset_ref: str,
    info: Any,
    job_id: int,
    preprocessing: dict[str, Any] | None = None,
) -> ModelArtifact:
    """Write the model file next to the checkpoint, put it into the model store, drop the local copy."""
    import torch

    weights = best_weights(checkpoint)
    payload = model_payload(weights, result, spec, dataset_ref, info, job_id, preprocessing)
    tmp = checkpoint.with_name("model-export.pt.tmp")
    try:
        torch.save(payload, tmp)
        sha = sha256_of(tmp)
        size = tmp.stat().st_size
        model_store(settings.dataset_store_url, settings.resolved_artifacts_dir).put(tmp, sha)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return ModelArtifact(key=model_key(sha), size=size, sha256=sha)
