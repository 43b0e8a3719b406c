"""``archscreen predict MODEL.pt DATA -o preds.csv``: an exported model applied to raw rows.

``MODEL.pt`` is what ``archscreen export`` writes; it is read with ``torch.load(weights_only=True)``
(no pickled code runs) and rebuilt with
:func:`~archscreen.core.training.model.build_plain_model`. A model trained on an uploaded table
carries the table's preprocessing (``f["preprocessing"]``, buffers of its input module): DATA is
then a Parquet or CSV table with the same columns as uploaded, raw (strings, gaps and all); the
label and ``split`` columns are optional (``--split test`` keeps that split's rows). A model of an
``.npz`` or built-in dataset takes an ``.npz`` whose ``--x-key`` array (default ``x_test``) holds
the features as the dataset did (its raw ``(N, C, H, W)`` 0..255 pixels for an image upload's model);
the labels beside it (``y_test``), when there, are scored like a table's label column.

A model trained on an image upload (a zip of class folders, an image Parquet) carries its input
normalisation (``ImageInput``), and DATA may be images: a folder or a ``.zip`` of ``FILE`` (no
labels: predictions only), ``CLASS/FILE`` or ``SPLIT/CLASS/FILE`` (``--split test`` keeps the test
folder). Each image is decoded as the upload decodes it (:mod:`archscreen.core.data.image_inputs`:
Pillow, converted to the model's ``L``/``RGB``, resized to its input size), so the test folder of
an uploaded zip reproduces the job's test accuracy. The CSV then starts with ``file`` (the path
inside DATA) and, for class folders, ``label`` (the folder's name).

The output CSV has one row per input row: ``prediction`` (the class name when the table's label
was a string, else the class id; the predicted value for regression) and, for classification,
``probability`` of that class. When DATA holds the label, the accuracy (or mean squared error) over
the labelled rows is printed to stderr, the figure the job reports as its test score.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archscreen.cli_common import EXIT_OK, CliError

if TYPE_CHECKING:
    from archscreen.core.data.images import ImageMode

TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def add_predict_commands(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="apply an exported model (archscreen export) to raw rows: a .parquet/.csv table or an .npz",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("model", help="the exported model file (archscreen export)")
    p.add_argument(
        "data", help="a .parquet/.csv table (raw, as uploaded), an .npz, or a folder or .zip of images"
    )
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="where to write the predictions")
    p.add_argument(
        "--split",
        choices=["train", "val", "test"],
        help="only the table's rows (or the images' folder) of this split",
    )
    p.add_argument("--x-key", default="x_test", help="an .npz's feature array (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.set_defaults(func=cmd_predict)


def load_model(path: Path) -> tuple[Any, dict[str, Any]]:
    """The rebuilt model (eval mode) and the file's content."""
    import pickle

    import torch

    from archscreen.core.data.base import DatasetInfo
    from archscreen.core.training.model import build_plain_model

    try:
        f = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CliError(f"{path}: not a model file from `archscreen export`: {reason}") from None
    if not isinstance(f, dict) or "state_dict" not in f or "spec" not in f:
        raise CliError(f"{path}: not a model file from `archscreen export`")
    info = DatasetInfo(**{**f["dataset"], "input_shape": tuple(f["dataset"]["input_shape"])})
    model = build_plain_model(f["spec"], info, f.get("preprocessing"))
    model.load_state_dict(f["state_dict"], strict=True)
    return model.eval(), f


def table_inputs(
    path: Path, preprocessing: dict[str, Any], split: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The raw encoded rows of a table (as the model's input module takes them), and its labels as
    class ids / values (None without the label column; ``NaN``/-1 for a row without a label)."""
    from archscreen.core.data.base import DatasetError
    from archscreen.core.data.preprocess import CategoricalColumn, TablePreprocessor
    from archscreen.core.data.tabular import SPLIT_COLUMN, feature_columns, read_table

    prep = TablePreprocessor.from_state(preprocessing)
    try:
        table: Any = read_table(path, TABLE_SUFFIXES[path.suffix.lower()])  # type: ignore[arg-type]
        if split is not None:
            if SPLIT_COLUMN not in table.column_names:
                raise DatasetError(f"--split {split}: the table has no 'split' column")
            keep = np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object) == split
            table = table.filter(keep)
        names = [c.name for c in prep.columns]
        absent = [n for n in names if n not in table.column_names]
        if absent:
            raise DatasetError(f"the table has no column {absent[0]!r} (the model's input columns)")
        cats = tuple(c.name for c in prep.columns if isinstance(c, CategoricalColumn))
        encoded = prep.encode_raw(feature_columns(table, names, cats))
    except DatasetError as exc:
        raise CliError(f"{path}: {exc}") from None
    labels = None
    if prep.label_column and prep.label_column in table.column_names:
        values = table.column(prep.label_column).to_pylist()
        if prep.classes is not None:
            index = {c: i for i, c in enumerate(prep.classes)}
            labels = np.asarray([index.get(v, -1) for v in values], dtype=np.int64)
        else:
            labels = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return encoded, labels


def npz_inputs(path: Path, key: str, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``key`` array, and the labels beside it (``y_test`` for ``x_test``) when the file has
    them as the job scored them: 1-D class ids, or 1-D values for regression."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise CliError(f"{path}: no array {key!r} (arrays: {', '.join(npz.files)})")
            x = np.asarray(npz[key])
            y_key = "y_" + key[2:] if key.startswith("x_") else None
            y = np.asarray(npz[y_key]) if y_key in npz.files else None
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: cannot read: {' '.join(str(exc).split())[:200]}") from None
    if y is None or y.ndim != 1 or len(y) != len(x) or task == "language_model":
        return x, None
    if task == "regression":
        return x, y.astype(np.float64)
    return x, (y.astype(np.int64) if y.dtype.kind in "biu" else None)


def predict(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs (class log-probabilities, or predicted values) for every row."""
    import torch

    tokens = x.dtype.kind in "iu" and getattr(model, "task", "") == "language_model"
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64 if tokens else np.float32))
    outs = [model.predict(tensor[i : i + batch_size]) for i in range(0, len(tensor), batch_size)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 1), np.float32)


def write_predictions(dest: Path, out: np.ndarray, task: str, classes: list[str] | None) -> np.ndarray:
    """Write the CSV; returns the predicted class ids (classification) or values (regression)."""
    with dest.open("w", newline="") as f:
        writer = csv.writer(f)
        if task == "regression":
            writer.writerow(
                ["prediction"] if out.shape[1] == 1 else [f"prediction_{i}" for i in range(out.shape[1])]
            )
            writer.writerows(out.tolist())
            return out
        ids = out.argmax(axis=1)
        prob = np.exp(out[np.arange(len(out)), ids])
        writer.writerow(["prediction", "probability"])
        for k, p in zip(ids.tolist(), prob.tolist(), strict=True):
            writer.writerow([classes[k] if classes else k, f"{p:.6f}"])
        return ids


def image_model_input(f: dict[str, Any], model_path: Path) -> tuple[ImageMode, tuple[int, int]]:
    """The Pillow mode and (H, W) an image upload's model takes; a one-line error for other models."""
    prep = f.get("preprocessing")
    if prep is None or prep.get("kind") != "image":
        takes = "a .parquet/.csv table" if prep is not None else "an .npz of its inputs"
        raise CliError(
            f"{model_path}: this model was not trained on an image upload (a zip of class folders or an "
            f"image Parquet), so it takes no image files; give it {takes}"
        )
    shape = list(f["dataset"]["input_shape"])
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise CliError(
            f"{model_path}: the model takes inputs of shape {tuple(shape)}, not (1 or 3, H, W) images"
        )
    return ("L" if shape[0] == 1 else "RGB"), (int(shape[1]), int(shape[2]))


def label_ids(names: list[str], classes: list[str] | None) -> np.ndarray:
    """Class-folder names as the model's class ids (-1: not one of its classes). Without class
    names in the file (integer labels), a folder named by a number is that id."""
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index.get(n, -1) for n in names], dtype=np.int64)
    return np.asarray([int(n) if n.isdecimal() else -1 for n in names], dtype=np.int64)


def predict_images(
    model: Any, f: dict[str, Any], model_path: Path, data: Path, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict on a folder or zip of images and write the CSV as the batches come: the predicted
    ids and the folder labels' ids (None for a flat folder)."""
    from archscreen.core.data.base import DatasetError
    from archscreen.core.data.image_inputs import image_batches, image_files

    mode, size = image_model_input(f, model_path)
    classes = f["preprocessing"].get("classes")
    predicted: list[np.ndarray] = []
    try:
        files = image_files(data, args.split)
        with Path(args.output).open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(
                ["file"] + (["label"] if files.labels is not None else []) + ["prediction", "probability"]
            )
            for start, pixels in image_batches(files, mode, size, args.batch_size):
                logp = predict(model, pixels, args.batch_size)
                ids = logp.argmax(axis=1)
                prob = np.exp(logp[np.arange(len(ids)), ids])
                for k, (i, p) in enumerate(zip(ids.tolist(), prob.tolist(), strict=True)):
                    at = start + k
                    label = [files.labels[at]] if files.labels is not None else []
                    writer.writerow([files.names[at], *label, classes[i] if classes else i, f"{p:.6f}"])
                predicted.append(ids)
    except DatasetError as exc:
        Path(args.output).unlink(missing_ok=True)  # no half-written predictions
        raise CliError(f"{data}: {exc}" if str(data) not in str(exc) else str(exc)) from None
    labels = None if files.labels is None else label_ids(files.labels, classes)
    return (np.concatenate(predicted) if predicted else np.zeros(0, np.int64)), labels


def report_score(task: str, predicted: np.ndarray, labels: np.ndarray) -> None:
    """The accuracy (or mean squared error) over the labelled rows, on stderr."""
    known = labels >= 0 if task != "regression" else ~np.isnan(labels)
    if task == "regression":
        mse = float(np.mean((predicted[known, 0] - labels[known]) ** 2)) if known.any() else float("nan")
        print(f"mse {mse:.6g} on {int(known.sum())} labelled rows", file=sys.stderr)
        return
    acc = float(np.mean(predicted[known] == labels[known])) if known.any() else float("nan")
    print(f"accuracy {acc:.4f} on {int(known.sum())} labelled rows", file=sys.stderr)
    if not known.all():
        print(
            f"{int((~known).sum())} rows with a label that is not one of the model's classes: not counted",
            file=sys.stderr,
        )


def check_npz_shape(x: np.ndarray, f: dict[str, Any], data: Path, key: str) -> None:
    """An ``.npz``'s samples must have the shape the model takes (e.g. its image channels)."""
    shape = tuple(int(d) for d in f["dataset"]["input_shape"])
    if f["dataset"]["task"] != "language_model" and tuple(x.shape[1:]) != shape:
        raise CliError(f"{data}: {key} holds samples of shape {tuple(x.shape[1:])}; the model takes {shape}")


def cmd_predict(args: argparse.Namespace) -> int:
    model_path, data = Path(args.model), Path(args.data)
    if not model_path.is_file():
        raise CliError(f"{model_path}: no such file")
    if not data.exists():
        raise CliError(f"{data}: no such file or folder")
    model, f = load_model(model_path)
    prep = f.get("preprocessing")
    task = f["dataset"]["task"]
    labels: np.ndarray | None = None
    if data.is_dir() or data.suffix.lower() == ".zip":
        predicted, labels = predict_images(model, f, model_path, data, args)
    else:
        if data.suffix.lower() in TABLE_SUFFIXES:
            if prep is None or prep.get("kind") == "image":  # an image model takes images or an .npz
                raise CliError(
                    f"{model_path}: this model was not trained on a table; give an .npz of its inputs"
                    + (", or a folder or .zip of images" if prep is not None else "")
                )
            x, labels = table_inputs(data, prep, args.split)
        else:
            x, labels = npz_inputs(data, args.x_key, task)
            if prep is None or prep.get("kind") == "image":
                check_npz_shape(x, f, data, args.x_key)
        out = predict(model, x, args.batch_size)
        predicted = write_predictions(Path(args.output), out, task, (prep or {}).get("classes"))
    if labels is not None:
        report_score(task, predicted, labels)
    print(args.output)
    return EXIT_OK
