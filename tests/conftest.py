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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding ``slow`` tests first, those with the most slow tests leading.

    xdist (``--dist loadfile --no-loadscope-reorder``, pyproject) hands whole files to its two
    workers in this order. Its default order, most tests first, left the end-to-end files (a few
    tests of 30-120 s each) to the end of the run, where one worker ran them while the other idled.
    """
    slow: dict[Path, int] = {}
    for item in items:
        if item.get_closest_marker("slow") is not None:
            slow[item.path] = slow.get(item.path, 0) + 1
    items.sort(key=lambda item: -slow.get(item.path, 0))  # stable: file order kept otherwise
