"""The command modules import their shared helpers from archscreen.cli_common, never each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_import_cycle_between_the_command_modules() -> None:
    for name in ("service_cli", "remote_cli", "cli_common"):
        tree = ast.parse((ROOT / "archscreen" / f"{name}.py").read_text())
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is not None
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "archscreen.cli" not in imported, name
    # each loads on its own, without the main CLI module
    code = (
        "import sys, archscreen.service_cli, archscreen.remote_cli; "
        "assert 'archscreen.cli' not in sys.modules, 'archscreen.cli imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
