"""The contract every :class:`~archscreen.core.screening.Screener` passes."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from archscreen.core.data import DatasetSplits
from archscreen.core.screening import Screener, ScreenResult
from archscreen.core.spec import SpecError
from archscreen.core.training.loop import Progress, TrainConfig, TrainingCancelled

from ._data import BAD_SPEC, TINY_MLP, digits

__all__ = ["ScreenerContract"]


def _values(r: ScreenResult) -> list[tuple[Any, ...]]:
    """The curves without wall-clock times."""
    return [(c["epoch"], c["train_loss"], c["val_loss"], c["val_accuracy"], c["steps"]) for c in r.curves]


class ScreenerContract:
    """Deterministic per seed, seed-sensitive, best-epoch metrics, a spec error before training,
    cancellation (after an epoch and within one), bit-for-bit resume, data left untouched.

    Subclass with ``screener = MyScreener(...)``, or override the ``contract_screener`` fixture.
    ``spec`` and ``config`` may be overridden too (the suite trains ``digits``).
    """

    screener: ClassVar[Screener]
    spec: ClassVar[dict[str, Any]] = TINY_MLP
    config: ClassVar[TrainConfig] = TrainConfig(
        max_epochs=3, patience=5, batch_size=64, max_steps_per_epoch=8
    )

    @pytest.fixture
    def contract_screener(self) -> Screener:
        return type(self).screener

    @pytest.fixture
    def contract_data(self) -> DatasetSplits:
        return digits()

    def test_same_seed_same_result(self, contract_screener: Screener, contract_data: DatasetSplits) -> None:
        a = contract_screener.screen(self.spec, contract_data, self.config)
        b = contract_screener.screen(self.spec, contract_data, self.config)
        assert _values(a) == _values(b)
        assert a.val_loss == b.val_loss and a.test_accuracy == b.test_accuracy

    def test_other_seed_other_result(self, contract_screener: Screener, contract_data: DatasetSplits) -> None:
        a = contract_screener.screen(self.spec, contract_data, self.config)
        b = contract_screener.screen(self.spec, contract_data, replace(self.config, seed=1))
        assert _values(a) != _values(b)

    def test_reports_the_best_epoch(self, contract_screener: Screener, contract_data: DatasetSplits) -> None:
        r = contract_screener.screen(self.spec, contract_data, self.config)
        best = min(r.curves, key=lambda c: c["val_loss"])
        assert r.best_epoch == best["epoch"]
        assert r.val_loss == pytest.approx(best["val_loss"], rel=1e-6)
        assert r.epochs == len(r.curves) == self.config.max_epochs
        assert r.stopped_because == "max_epochs"
        assert 0.0 <= (r.test_accuracy or -1) <= 1.0
        assert r.screener == contract_screener.name and r.to_dict()["screener"] == r.screener

    def test_invalid_spec_fails_before_training(
        self, contract_screener: Screener, contract_data: DatasetSplits
    ) -> None:
        calls: list[Progress] = []
        with pytest.raises(SpecError, match=r"layers\[0\]\.conv2d"):
            contract_screener.screen(BAD_SPEC, contract_data, self.config, callback=calls.append)
        assert calls == []

    def test_cancel_keeps_partial_curves(
        self, contract_screener: Screener, contract_data: DatasetSplits
    ) -> None:
        def cancel(p: Progress) -> None:
            raise TrainingCancelled

        r = contract_screener.screen(self.spec, contract_data, self.config, callback=cancel)
        assert r.stopped_because == "cancelled"
        assert len(r.curves) == 1

    def test_cancel_from_step_hook_stops_mid_epoch(
        self, contract_screener: Screener, contract_data: DatasetSplits
    ) -> None:
        steps_seen: list[tuple[int, int]] = []

        def cancel_in_epoch_two(step: int, per_epoch: int) -> None:
            steps_seen.append((step, per_epoch))
            if len(steps_seen) == per_epoch + 3:
                raise TrainingCancelled

        r = contract_screener.screen(self.spec, contract_data, self.config, step_hook=cancel_in_epoch_two)
        assert r.stopped_because == "cancelled"
        assert len(r.curves) == 1  # the unfinished second epoch is dropped
        assert len(steps_seen) == steps_seen[0][1] + 3
        assert math.isfinite(r.val_loss)

    def test_checkpoint_resume_equals_uninterrupted(
        self, contract_screener: Screener, contract_data: DatasetSplits, tmp_path: Path
    ) -> None:
        full = contract_screener.screen(self.spec, contract_data, self.config)

        def stop_at_2(p: Progress) -> None:
            if p.epoch == 2:
                raise SystemExit("worker died")  # not a cancel: the checkpoint of epoch 1 remains

        ckpt = tmp_path / "run.pt"
        with pytest.raises(SystemExit):
            contract_screener.screen(
                self.spec, contract_data, self.config, callback=stop_at_2, checkpoint_path=ckpt
            )
        assert ckpt.exists()
        resumed = contract_screener.screen(self.spec, contract_data, self.config, checkpoint_path=ckpt)
        assert _values(resumed) == _values(full)
        assert resumed.val_loss == full.val_loss
        assert resumed.test_accuracy == full.test_accuracy
        assert resumed.steps == full.steps

    def test_does_not_touch_the_data(self, contract_screener: Screener, contract_data: DatasetSplits) -> None:
        before = contract_data.x_train.clone()
        contract_screener.screen(self.spec, contract_data, self.config)
        assert torch.equal(before, contract_data.x_train)
