"""Run mypy over the package as it is imported (``archscreen.core`` is ``core/``).

mypy cannot follow setuptools' editable-install finder that maps the top-level
folders under ``archscreen``, so this builds a throw-away view of symlinks with
the installed layout and checks that, plus ``bench/``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"core": "core", "api": "api", "worker": "worker", "store": "store", "migrations": "migrations"}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="archscreen-mypy-") as tmp:
        view = Path(tmp) / "archscreen"
        view.mkdir()
        for item in (ROOT / "archscreen").iterdir():
            if item.name != "__pycache__":
                (view / item.name).symlink_to(item)
        for name, folder in MAPPED.items():
            (view / name).symlink_to(ROOT / folder)
        bench = Path(tmp) / "bench"
        bench.symlink_to(ROOT / "bench")
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "archscreen"]
        if any((ROOT / "bench").glob("*.py")):
            cmd += [str(p) for p in sorted(bench.glob("*.py"))]
        return subprocess.run(cmd, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
