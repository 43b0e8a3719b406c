"""The contract every :class:`~archscreen.core.tuning.Tuner` passes."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from archscreen.core.data import DatasetSplits
from archscreen.core.spec import SpecError
from archscreen.core.training.loop import Progress, TrainConfig, TrainingCancelled
from archscreen.core.tuning import Tuner

from ._data import BAD_SPEC, TINY_MLP, digits

__all__ = ["TunerContract"]


class TunerContract:
    """A run's rate starts at ``init_lr`` and stays finite and > 0; a finite recommended rate;
    deterministic per seed; cancellable from the callback (which sees the rate); a spec error
    before any training; a crashed run resumes from its checkpoint to the same trajectory.

    Subclass with ``tuner = MyTuner()``, or override the ``contract_tuner`` fixture. ``init_lr``
    (default: the tuner's ``default_init_lr()``), ``spec`` and ``config`` may be overridden.
    """

    tuner: ClassVar[Tuner]
    init_lr: ClassVar[float | None] = None
    spec: ClassVar[dict[str, Any]] = TINY_MLP
    config: ClassVar[TrainConfig] = TrainConfig(
        max_epochs=1, patience=5, batch_size=32, max_steps_per_epoch=3, eval_batch_size=256
    )

    @pytest.fixture
    def contract_tuner(self) -> Tuner:
        return type(self).tuner

    @pytest.fixture
    def contract_data(self) -> DatasetSplits:
        return digits(512)

    def _init(self, tuner: Tuner) -> float:
        return tuner.default_init_lr() if self.init_lr is None else self.init_lr

    def test_rate_starts_at_init_and_stays_positive(
        self, contract_tuner: Tuner, contract_data: DatasetSplits
    ) -> None:
        init = self._init(contract_tuner)
        r = contract_tuner.tune(self.spec, contract_data, init, self.config)
        steps = self.config.max_epochs * (self.config.max_steps_per_epoch or 0)
        assert r.tuner == contract_tuner.name and r.stopped_because == "max_epochs" and r.steps == steps
        assert r.trajectory[0] == [0, pytest.approx(init, rel=1e-9)] and len(r.trajectory) == steps + 1
        assert all(lr > 0 and math.isfinite(lr) for _, lr in r.trajectory)
        assert r.recommended_lr > 0 and math.isfinite(r.recommended_lr)
        assert r.base_optimizer == contract_tuner.base_optimizer
        assert math.isfinite(r.val_loss) and len(r.curves) == self.config.max_epochs
        d = r.to_dict()
        for key in ("tuner", "recommended_lr", "trajectory", "val_loss", "test_accuracy", "stopped_because"):
            assert key in d

    def test_deterministic_and_cancellable(self, contract_tuner: Tuner, contract_data: DatasetSplits) -> None:
        a = contract_tuner.tune(self.spec, contract_data, None, self.config)
        b = contract_tuner.tune(self.spec, contract_data, None, self.config)
        assert a.trajectory == b.trajectory and a.val_loss == b.val_loss

        def cancel(p: Progress) -> None:
            assert "lr" in p.extra
            raise TrainingCancelled

        cfg = replace(self.config, max_epochs=3)
        c = contract_tuner.tune(self.spec, contract_data, None, cfg, callback=cancel)
        assert c.stopped_because == "cancelled" and c.epochs == 1

    def test_invalid_spec_fails_before_training(
        self, contract_tuner: Tuner, contract_data: DatasetSplits
    ) -> None:
        calls: list[Progress] = []
        with pytest.raises(SpecError, match=r"layers\[0\]\.conv2d"):
            contract_tuner.tune(
                BAD_SPEC, contract_data, self._init(contract_tuner), self.config, callback=calls.append
            )
        assert calls == []

    def test_invalid_initial_rate_is_refused(
        self, contract_tuner: Tuner, contract_data: DatasetSplits
    ) -> None:
        for bad in (0.0, -1e-3, math.nan, math.inf):
            with pytest.raises(ValueError, match="Invalid learning rate"):
                contract_tuner.tune(self.spec, contract_data, bad, self.config)

    def test_checkpoint_resume_is_identical(
        self, contract_tuner: Tuner, contract_data: DatasetSplits, tmp_path: Path
    ) -> None:
        cfg = replace(self.config, max_epochs=3)
        init = self._init(contract_tuner)
        full = contract_tuner.tune(self.spec, contract_data, init, cfg)
        calls = [0]

        def crash_in_epoch_two(step: int, steps_per_epoch: int) -> None:
            calls[0] += 1
            if calls[0] == steps_per_epoch + 2:  # after epoch 1's checkpoint was written
                raise RuntimeError("simulated crash")

        ckpt = tmp_path / "run.pt"
        with pytest.raises(RuntimeError, match="simulated crash"):
            contract_tuner.tune(
                self.spec, contract_data, init, cfg, step_hook=crash_in_epoch_two, checkpoint_path=ckpt
            )
        assert ckpt.exists()
        resumed = contract_tuner.tune(self.spec, contract_data, init, cfg, checkpoint_path=ckpt)
        assert resumed.trajectory == full.trajectory
        assert resumed.val_loss == full.val_loss and resumed.recommended_lr == full.recommended_lr
