"""A table's preprocessing, fitted on its train split only: standardisation, one-hot, imputation.

:class:`TablePreprocessor` turns a table's raw feature columns into the float features a network
trains on, with state that round-trips through JSON (:meth:`TablePreprocessor.to_state` /
:meth:`TablePreprocessor.from_state`) and is stored inside the dataset's canonical ``.npz``
(key :data:`STATE_KEY`, the JSON as bytes), so it is versioned with the content-addressed blob.

Two steps, so that a network can take raw rows:

1. :meth:`~TablePreprocessor.encode_raw`: table columns -> one float32 matrix ``(N, R)``, one
   column per raw feature: a numeric value as it is (``NaN`` when missing), a categorical value
   as its index in the fitted vocabulary (``-1`` when missing or not in the vocabulary).
2. :meth:`~TablePreprocessor.transform`: that matrix -> the features ``(N, F)``, in three blocks:
   the numeric columns (missing values imputed by the train median, then standardised with the
   train mean and standard deviation), one missing-indicator per numeric column that had missing
   values in train, then each categorical column's one-hot (its vocabulary, then one "other"
   bucket for values beyond :data:`DEFAULT_MAX_CATEGORIES`, unseen or missing values).

Step 2 is what :class:`archscreen.core.training.inputs.TableInput` does with torch buffers in an
exported model (same float32 operations in the same order: the same features bit for bit).

Rules:
* numeric: integer, float or bool columns (bool as 0/1), unless named in ``categorical_columns``;
  ``NaN`` counts as missing; an infinite value is an error naming the column;
* categorical: string (and dictionary) columns, and integer or bool columns the user names;
  the vocabulary is the ``max_categories`` most frequent train values (ties: sorted by value);
* ``standardize=False`` keeps numeric values as they are (missing values still imputed).
  A constant column has scale 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from archscreen.core.table_options import DEFAULT_MAX_CATEGORIES, MAX_CATEGORIES_LIMIT

from .base import DatasetError

STATE_VERSION = 1
STATE_KEY = "preprocessing_json"  # the state's key in the canonical .npz (uint8 JSON bytes)
ColumnKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column's fitted statistics (train rows only).

    ``mean``/``scale`` are identity (0, 1) when standardisation is off."""

    name: str
    median: float
    mean: float
    scale: float
    missing_indicator: bool
    missing_train: int = 0


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column's vocabulary (most frequent train values); the one-hot has
    ``len(categories) + 1`` columns, the last one the "other" bucket."""

    name: str
    categories: list[str]
    distinct_train: int = 0
    missing_train: int = 0


@dataclass(frozen=True)
class TablePreprocessor:
    """Fitted preprocessing of a table's feature columns (``columns``: in table order)."""

    columns: list[NumericColumn | CategoricalColumn]
    standardize: bool = True
    max_categories: int = DEFAULT_MAX_CATEGORIES
    version: int = STATE_VERSION
    label_column: str = ""
    classes: list[str] | None = None  # class names of a string label, by class id

    # ------------------------------------------------------------------ layout
    @property
    def numeric(self) -> list[tuple[int, NumericColumn]]:
        """(raw index, column) of the numeric columns."""
        return [(i, c) for i, c in enumerate(self.columns) if isinstance(c, NumericColumn)]

    @property
    def categorical(self) -> list[tuple[int, CategoricalColumn]]:
        return [(i, c) for i, c in enumerate(self.columns) if isinstance(c, CategoricalColumn)]

    def feature_names(self) -> list[str]:
        """The names of the output features, in order."""
        names = [c.name for _, c in self.numeric]
        names += [f"{c.name}__missing" for _, c in self.numeric if c.missing_indicator]
        for _, c in self.categorical:
            names += [f"{c.name}={v}" for v in c.categories] + [f"{c.name}=__other__"]
        return names

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        raw: dict[str, np.ndarray],
        *,
        standardize: bool = True,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
    ) -> TablePreprocessor:
        """Fit on the TRAIN rows' columns: ``raw[name]`` is float64 (``NaN`` missing) for a numeric
        column, an object array of ``str`` or ``None`` for a categorical one."""
        if not 1 <= max_categories <= MAX_CATEGORIES_LIMIT:
            raise DatasetError(f"max_categories must be between 1 and {MAX_CATEGORIES_LIMIT}")
        columns: list[NumericColumn | CategoricalColumn] = []
        for name, values in raw.items():
            if values.dtype == object:
                columns.append(_fit_categorical(name, values, max_categories))
            else:
                columns.append(_fit_numeric(name, values, standardize))
        return cls(columns, standardize=standardize, max_categories=max_categories)

    # -------------------------------------------------------------- transform
    def encode_raw(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """Raw columns (as :meth:`fit` takes them, any rows) -> the float32 matrix ``(N, R)``."""
        missing = [c.name for c in self.columns if c.name not in raw]
        if missing:
            raise DatasetError(f"the table has no column {missing[0]!r} (the model's input columns)")
        n = len(next(iter(raw.values()))) if raw else 0
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        for j, col in enumerate(self.columns):
            values = raw[col.name]
            if isinstance(col, NumericColumn):
                if values.dtype == object:
                    raise DatasetError(f"column {col.name!r} holds text; the model expects numbers")
                out[:, j] = values.astype(np.float32)
            else:
                index = {v: i for i, v in enumerate(col.categories)}
                text = values if values.dtype == object else _as_text(values)
                out[:, j] = np.fromiter((index.get(v, -1) for v in text), dtype=np.float32, count=n)
        return out

    def transform(self, encoded: np.ndarray) -> np.ndarray:
        """The float32 features ``(N, F)`` of an :meth:`encode_raw` matrix."""
        blocks = []
        num_idx = [i for i, _ in self.numeric]
        if num_idx:
            num = encoded[:, num_idx]
            gaps = np.isnan(num)
            median = np.asarray([c.median for _, c in self.numeric], dtype=np.float32)
            mean = np.asarray([c.mean for _, c in self.numeric], dtype=np.float32)
            scale = np.asarray([c.scale for _, c in self.numeric], dtype=np.float32)
            filled = np.where(gaps, median, num)
            blocks.append((filled - mean) / scale)
            flagged = [k for k, (_, c) in enumerate(self.numeric) if c.missing_indicator]
            blocks.append(gaps[:, flagged].astype(np.float32))
        for i, c in self.categorical:
            width = len(c.categories) + 1
            codes = encoded[:, i]
            known = (codes >= 0) & (codes < width - 1)
            slot = np.where(known, codes, width - 1).astype(np.int64)
            onehot = np.zeros((len(encoded), width), dtype=np.float32)
            onehot[np.arange(len(encoded)), slot] = 1.0
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(encoded), 0), np.float32)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_state` rebuilds an equal preprocessor."""
        return {
            "version": self.version,
            "standardize": self.standardize,
            "max_categories": self.max_categories,
            "columns": [{"kind": _kind(c), **asdict(c)} for c in self.columns],
            "label_column": self.label_column,
            "classes": self.classes,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TablePreprocessor:
        if state.get("version") != STATE_VERSION:
            raise DatasetError(
                f"preprocessing version {state.get('version')!r}; this archscreen reads {STATE_VERSION}"
            )
        columns: list[NumericColumn | CategoricalColumn] = []
        for entry in state["columns"]:
            fields = {k: v for k, v in entry.items() if k != "kind"}
            if entry["kind"] == "numeric":
                columns.append(NumericColumn(**fields))
            else:
                columns.append(CategoricalColumn(**fields))
        return cls(
            columns,
            standardize=bool(state["standardize"]),
            max_categories=int(state["max_categories"]),
            label_column=str(state.get("label_column", "")),
            classes=state.get("classes"),
        )

    def to_bytes(self) -> np.ndarray:
        """The state as a uint8 array (an ``.npz`` member readable with ``allow_pickle=False``)."""
        return np.frombuffer(json.dumps(self.to_state()).encode(), dtype=np.uint8)

    @classmethod
    def from_bytes(cls, data: np.ndarray) -> TablePreprocessor:
        return cls.from_state(json.loads(data.tobytes().decode()))

    def report(self) -> list[dict[str, Any]]:
        """Per column, for ``GET /datasets/{id}``: name, kind, encoding and the fitted values."""
        rows = []
        for c in self.columns:
            if isinstance(c, NumericColumn):
                encoding = "standardized" if self.standardize else "as-is"
                if c.missing_indicator:
                    encoding += ", median-imputed + missing indicator"
                rows.append({"kind": "numeric", "encoding": encoding, **asdict(c)})
            else:
                encoding = f"one-hot ({len(c.categories)} values + other)"
                rows.append({"kind": "categorical", "encoding": encoding, **asdict(c)})
        return rows


def read_state(npz_path: str) -> dict[str, Any] | None:
    """The preprocessing state stored in a canonical ``.npz``, or None (an ``.npz`` upload)."""
    with np.load(npz_path, allow_pickle=False) as npz:
        if STATE_KEY not in npz.files:
            return None
        state: dict[str, Any] = json.loads(npz[STATE_KEY].tobytes().decode())
    return state


def _kind(c: NumericColumn | CategoricalColumn) -> ColumnKind:
    return "numeric" if isinstance(c, NumericColumn) else "categorical"


def _as_text(values: np.ndarray) -> np.ndarray:
    """An integer/bool column marked categorical: its values as text (``NaN`` -> None)."""
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values.tolist()):
        out[k] = None if v is None or (isinstance(v, float) and np.isnan(v)) else str(int(v))
    return out


def _fit_numeric(name: str, values: np.ndarray, standardize: bool) -> NumericColumn:
    values = values.astype(np.float64)
    if np.isinf(values).any():
        raise DatasetError(f"feature column {name!r} has infinite values")
    gaps = np.isnan(values)
    present = values[~gaps]
    if present.size == 0:
        raise DatasetError(f"feature column {name!r} has no value in the train rows")
    median = float(np.median(present))
    mean, scale = 0.0, 1.0
    if standardize:
        mean = float(present.mean())
        std = float(present.std())
        scale = std if std > 0 and np.isfinite(std) else 1.0
    return NumericColumn(
        name,
        median=_f32(median),
        mean=_f32(mean),
        scale=_f32(scale) or 1.0,
        missing_indicator=bool(gaps.any()),
        missing_train=int(gaps.sum()),
    )


def _fit_categorical(name: str, values: np.ndarray, max_categories: int) -> CategoricalColumn:
    present = [v for v in values.tolist() if v is not None]
    distinct, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
    order = sorted(range(len(distinct)), key=lambda k: (-int(counts[k]), str(distinct[k])))
    kept = [str(distinct[k]) for k in order[:max_categories]]
    return CategoricalColumn(
        name, categories=kept, distinct_train=len(distinct), missing_train=len(values) - len(present)
    )


def _f32(value: float) -> float:
    """The float32 nearest ``value`` (the buffers are float32: the JSON holds what they hold)."""
    return float(np.float32(value))
