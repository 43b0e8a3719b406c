"""``TrainConfig.pause_at``: a run trained rung by rung (ASHA, a search study's screening run)
continues from its checkpoint exactly as the uninterrupted run goes on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from archscreen.core.screening import screening_run
from archscreen.core.training.loop import TrainConfig

SPEC = {"name": "tiny", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}
# patience 2 on a short noisy run: the stop rule's state (bad epochs) must survive the pauses too
OPTIONS = {"max_epochs": 9, "patience": 2, "batch_size": 64, "base": "adam", "max_steps_per_epoch": 6}


def _screen(pause_at: int | None, ckpt: Path | None) -> Any:
    screener, config = screening_run(OPTIONS, seed=5)
    config = dataclasses.replace(config, pause_at=pause_at)
    return screener.screen(SPEC, "digits", config, checkpoint_path=ckpt)


def _curve(result: Any) -> list[tuple[Any, ...]]:
    return [
        (r["epoch"], r["train_loss"], r["val_loss"], r["val_accuracy"], r["steps"]) for r in result.curves
    ]


def test_a_run_paused_at_1_and_3_continues_to_the_uninterrupted_9_epoch_run(tmp_path: Path) -> None:
    whole = _screen(None, None)
    ckpt = tmp_path / "run.pt"
    first = _screen(1, ckpt)
    assert first.stopped_because == "paused" and first.epochs == 1
    again = _screen(1, ckpt)  # the same rung delivered twice: nothing more is trained
    assert again.stopped_because == "paused" and _curve(again) == _curve(first)
    second = _screen(3, ckpt)
    assert _curve(second) == _curve(whole)[: len(_curve(second))]
    last = _screen(None, ckpt)
    assert _curve(last) == _curve(whole)
    same = ("stopped_because", "epochs", "best_epoch", "steps", "val_loss", "val_accuracy", "test_accuracy")
    assert [getattr(last, k) for k in same] == [getattr(whole, k) for k in same]
    assert whole.stopped_because != "paused"


def test_a_rule_that_fires_before_the_rung_stops_the_run_as_usual(tmp_path: Path) -> None:
    screener, config = screening_run({**OPTIONS, "max_epochs": 3}, seed=5)
    res = screener.screen(
        SPEC, "digits", dataclasses.replace(config, pause_at=3), checkpoint_path=tmp_path / "c"
    )
    assert res.stopped_because != "paused"  # a pause at the cap is the cap: the run is finished
    assert res.epochs <= 3


def test_pause_at_is_validated() -> None:
    with pytest.raises(ValueError, match="pause_at must be >= 1"):
        TrainConfig(pause_at=0)
