"""The test hooks' one helper: the first process to create the marker stops there; others run on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from archscreen.worker.hooks import hold_once

ENV = "ARCHSCREEN_TEST_HOOK_UNDER_TEST"


def test_unset_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    hold_once(ENV, 1, "held %s")  # returns: no marker named


def test_the_first_caller_is_held_and_writes_its_id_the_next_runs_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "held"
    monkeypatch.setenv(ENV, str(marker))
    held = threading.Thread(target=hold_once, args=(ENV, 7, "trial %s is held"), daemon=True)
    with caplog.at_level("WARNING", logger="archscreen.worker"):
        held.start()
        deadline = time.monotonic() + 10
        while not marker.exists() or not caplog.records:
            assert time.monotonic() < deadline, "the hook never fired"
            time.sleep(0.01)
    held.join(0.2)
    assert held.is_alive()  # blocked for good, as a stuck process would be
    assert marker.read_text() == "7"
    assert caplog.records[0].getMessage() == f"test hook {ENV}: trial 7 is held"
    hold_once(ENV, 8, "trial %s is held")  # the marker exists: a later caller is not held
    assert marker.read_text() == "7"
