"""The loop's one state object and its checkpoint (``core/training/state.py``)."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch

from archscreen.core.training.loop import TrainConfig, train
from archscreen.core.training.state import CHECKPOINT_FORMAT, CheckpointFormatError, LoopState
from tests.core.training.test_loop_plateau import Scripted, _data

# Written by the loop before the state object (format 1, no version field): the scripted plateau
# run below, stopped by a dying worker after epoch 12's callback, so its last checkpoint is epoch 11.
OLD_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint-v1.pt"
PLATEAU = {"patience": 2, "stop_rule": "plateau", "plateau_min_steps": 0, "plateau_min_epochs": 1}


def _train(ckpt: Path | None, evals: int) -> Any:
    model = Scripted()
    model.evals = evals
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = TrainConfig(batch_size=10, max_epochs=40, **PLATEAU)
    return train(model, opt, _data(), cfg, checkpoint_path=ckpt)


def test_a_checkpoint_of_the_old_loop_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    shutil.copy(OLD_CHECKPOINT, ckpt)
    assert "format_version" not in torch.load(ckpt, weights_only=False)
    whole = _train(None, evals=-1)
    resumed = _train(ckpt, evals=10)  # the next validation is epoch 12's
    strip = [(r.epoch, r.train_loss, r.val_loss, r.val_accuracy, r.steps) for r in resumed.curves]
    assert strip == [(r.epoch, r.train_loss, r.val_loss, r.val_accuracy, r.steps) for r in whole.curves]
    same = ("stopped_because", "epochs", "best_epoch", "steps", "val", "test")
    assert [getattr(resumed, k) for k in same] == [getattr(whole, k) for k in same]
    assert torch.load(ckpt, weights_only=False)["format_version"] == CHECKPOINT_FORMAT


def test_a_newer_checkpoint_is_refused_before_anything_loads(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    state = torch.load(OLD_CHECKPOINT, weights_only=False)
    torch.save({**state, "format_version": CHECKPOINT_FORMAT + 1}, ckpt)
    with pytest.raises(
        CheckpointFormatError, match=rf"run\.pt: checkpoint format {CHECKPOINT_FORMAT + 1} is newer"
    ):
        _train(ckpt, evals=-1)


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    torch.save({"weights": torch.zeros(2)}, ckpt)
    with pytest.raises(CheckpointFormatError, match="lacks model, optimizer, order_gen, epoch, torch_rng"):
        _train(ckpt, evals=-1)


def test_the_checkpoint_holds_every_field_and_round_trips() -> None:
    model = Scripted()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = LoopState(model, opt, torch.Generator().manual_seed(3), epoch=4, ema=0.5, ema_bad=2)
    saved = state.state_dict()
    assert set(saved) == {f.name for f in fields(LoopState)} | {"torch_rng", "cuda_rng", "format_version"}
    other = LoopState(Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator())
    other.load_state_dict(saved)
    assert (other.epoch, other.ema, other.ema_bad) == (4, 0.5, 2)
    assert torch.equal(other.order_gen.get_state(), state.order_gen.get_state())
