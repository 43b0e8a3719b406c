"""The curve-aware budget (``TrainConfig(stop_rule="plateau")``) of ``core/training/loop.py``.

A scripted model makes the validation loss follow a given sequence, so each stop rule's epoch can
be computed by hand.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.data.base import DatasetInfo, DatasetSplits
from archscreen.core.training.loop import TrainConfig, train

# Improving, a noisy bump at epochs 4-5, improving again, then flat from epoch 9 on. The smoothed
# curve (EMA 0.3) creeps towards 0.5 and gains less than 0.1% an epoch from epoch 24 on, so
# patience 2 on it stops at epoch 25.
SCRIPT = [1.0, 0.8, 0.7, 0.75, 0.74, 0.6, 0.55, 0.5] + [0.5] * 32


class Scripted(nn.Module):
    """Validation loss = SCRIPT[epoch]; one trainable scalar so the optimizer has work to do."""

    task = "classification"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.evals = 0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        n = len(y)
        if self.training:
            loss = (self.w - 1).pow(2)
            return SimpleNamespace(loss=loss, avg_nll=loss.detach(), avg_log_prob=torch.zeros(n, 2))
        value = SCRIPT[min(self.evals, len(SCRIPT) - 1)]
        return SimpleNamespace(avg_nll=torch.tensor(value), avg_log_prob=torch.zeros(n, 2))

    def train(self, mode: bool = True) -> Scripted:
        if not mode:  # one evaluation per epoch (validation); count it
            self.evals += 1
        return super().train(mode)


def _data() -> DatasetSplits:
    info = DatasetInfo(name="scripted", task="classification", input_shape=(1,), num_classes=2)
    x, y = torch.zeros(40, 1), torch.zeros(40, dtype=torch.long)
    return DatasetSplits(info, x, y, x[:4], y[:4], x[:4], y[:4])


def _run(tmp: Path | None = None, **kw: Any) -> Any:
    model = Scripted()
    model.evals = -1  # the first validation reads SCRIPT[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = TrainConfig(batch_size=10, **kw)  # 4 steps per epoch
    return train(model, opt, _data(), cfg, checkpoint_path=tmp)


def test_default_is_raw_patience_as_before() -> None:
    res = _run(max_epochs=40, patience=2)
    # raw best 0.7 at epoch 3; epochs 4, 5 are worse: patience 2 stops at epoch 5
    assert (res.stopped_because, res.epochs) == ("patience", 5)


def test_plateau_rides_out_a_bump_and_stops_on_the_flat_smoothed_curve() -> None:
    res = _run(max_epochs=40, patience=2, stop_rule="plateau", plateau_min_steps=0, plateau_min_epochs=1)
    assert res.stopped_because == "plateau"
    assert res.epochs == 25  # went past the bump that raw patience stopped on, then the plateau
    assert res.best_epoch == 8  # best weights are still the raw best epoch's


def test_plateau_waits_for_its_minimum_steps_and_epochs() -> None:
    free = _run(max_epochs=40, patience=2, stop_rule="plateau", plateau_min_steps=0, plateau_min_epochs=1)
    by_steps = _run(
        max_epochs=40, patience=2, stop_rule="plateau", plateau_min_steps=120, plateau_min_epochs=1
    )
    by_epochs = _run(
        max_epochs=40, patience=2, stop_rule="plateau", plateau_min_steps=0, plateau_min_epochs=33
    )
    assert free.epochs == 25
    assert by_steps.epochs == 30  # 120 steps = 30 epochs of 4 steps
    assert by_epochs.epochs == 33


def test_plateau_respects_the_cap() -> None:
    res = _run(max_epochs=20, patience=2, stop_rule="plateau", plateau_min_steps=0, plateau_min_epochs=1)
    assert (res.stopped_because, res.epochs) == ("max_epochs", 20)


def test_plateau_resumes_from_a_checkpoint_to_the_same_stop(tmp_path: Path) -> None:
    kw = {"patience": 2, "stop_rule": "plateau", "plateau_min_steps": 0, "plateau_min_epochs": 1}
    whole = _run(max_epochs=40, **kw)
    ckpt = tmp_path / "run.pt"
    first = _run(ckpt, max_epochs=12, **kw)  # stops at the cap; the smoothed state is saved
    assert first.stopped_because == "max_epochs"
    state = torch.load(ckpt, weights_only=False)
    state["stopped_because"] = None  # continue the same run with a larger cap
    torch.save(state, ckpt)
    model = Scripted()
    model.evals = 11  # the resumed run's next validation is epoch 13's
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    resumed = train(
        model, opt, _data(), TrainConfig(batch_size=10, max_epochs=40, **kw), checkpoint_path=ckpt
    )
    assert (resumed.stopped_because, resumed.epochs) == (whole.stopped_because, whole.epochs)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"stop_rule": "smooth"}, "stop_rule must be"),
        ({"plateau_ema": 0.0}, "plateau_ema must be in"),
        ({"plateau_tol": 1.0}, "plateau_tol must be in"),
        ({"plateau_min_steps": -1}, "plateau_min_steps"),
    ],
)
def test_bad_settings_name_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)
