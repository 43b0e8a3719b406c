"""ruff and mypy are part of the suite, so CI fails on a lint or type error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_ruff_clean() -> None:
    proc = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    # scripts/typecheck.py checks the installed layout (archscreen.core is core/).
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "typecheck.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_never_imports_service_layers() -> None:
    forbidden = ("fastapi", "celery", "sqlalchemy", "archscreen.api", "archscreen.worker", "redis")
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(f in stripped for f in forbidden):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
