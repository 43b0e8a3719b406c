"""The wheel installs only under the ``archscreen`` import name (no bare ``core``/``api``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_only_the_archscreen_package(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("archscreen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"archscreen"}
    for module in (
        "archscreen/core/alrao/head.py",
        "archscreen/core/spec/infer.py",
        "archscreen/cli.py",
        "archscreen/testing/tuner.py",  # the importable contract suites (archscreen.testing)
        "archscreen/core/runs.py",
        "archscreen/core/tuners/fd_tuners.py",
    ):
        assert module in names
    assert any(n.startswith("archscreen/core/data/corpus/") and n.endswith(".txt") for n in names)
