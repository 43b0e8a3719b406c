"""What a user chooses for a table's preprocessing at upload, defined once (no torch, no numpy).

The API, the CLI and :mod:`archscreen.core.data.preprocess` read these without loading torch
(``archscreen.core.data`` imports it); the upload route keys a dataset by the file's sha256, its
label column and :meth:`TableOptions.key_sha256` (the same file with other options is another
dataset).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_MAX_CATEGORIES = 20
MAX_CATEGORIES_LIMIT = 1000


@dataclass(frozen=True)
class TableOptions:
    """A table upload's preprocessing options.

    Attributes:
        standardize: numeric columns to zero mean and unit variance on the train split (default);
            False keeps them as they are (missing values are still imputed).
        categorical_columns: integer (or bool) columns to one-hot like string columns.
        max_categories: one-hot columns per categorical column; rarer values share one "other"
            column (so do missing and unseen values).
    """

    standardize: bool = True
    categorical_columns: tuple[str, ...] = ()
    max_categories: int = DEFAULT_MAX_CATEGORIES

    def key(self) -> str:
        """The options as one canonical string (stored in the dataset's facts)."""
        cats = ",".join(sorted(self.categorical_columns))
        return f"standardize={int(self.standardize)};max_categories={self.max_categories};categorical={cats}"

    def key_sha256(self) -> str:
        return hashlib.sha256(self.key().encode()).hexdigest()
