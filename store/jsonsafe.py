"""The one NaN scrubber: values on their way into the database as plain JSON.

PostgreSQL's ``json`` type, strict JSON parsers and some float columns reject NaN and infinities,
so a diverged run's non-finite numbers are stored as ``null``. The store's epoch metrics and the
worker's results both go through :func:`jsonable`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON: NaN/inf become ``None``, tuples lists, keys strings, NumPy/torch scalars
    Python numbers (through ``.item()``); other values unchanged."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return jsonable(x.item())
    return x
