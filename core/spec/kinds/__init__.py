"""Every layer kind, one module per kind or family; importing this package registers them all.

Modules here are discovered, not listed: adding a kind is one new file (plus its test).
Files starting with ``_`` hold shared helpers and are not kinds.
"""

from __future__ import annotations

import importlib
import pkgutil


def _import_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
