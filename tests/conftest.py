from __future__ import annotations

from pathlib import Path

import pytest

from tests.services import database_url, migrated, redis_url  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def example_dataset(path: Path) -> str:
    """The dataset an example declares on its first line (``# dataset: NAME``)."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# dataset:"), f"{path.name}: first line must be '# dataset: NAME'"
    return first.split(":", 1)[1].strip()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES
