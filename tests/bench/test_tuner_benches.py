"""The tuner benches' own arithmetic (``bench/fd2_variants.py``, ``bench/tuner_quality.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.training.loop import TrainConfig
from archscreen.core.tuning import FD2Tuner

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fd2_variants  # noqa: E402
import tuner_quality  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _small_mnist1d() -> DatasetSplits:
    d = load_dataset("mnist1d", seed=0)
    return DatasetSplits(
        d.info, d.x_train[:320], d.y_train[:320], d.x_val[:64], d.y_val[:64], d.x_test[:64], d.y_test[:64]
    )


@pytest.mark.parametrize("rule", ["tail", "mean"])
def test_variant_rules_match_the_tuner(rule: str) -> None:
    cfg = TrainConfig(max_epochs=2, patience=5, batch_size=32)
    tuner = FD2Tuner(recommend=rule, max_change=2.0)  # type: ignore[arg-type]
    tuner.max_points = 10_000
    r = tuner.tune(EXAMPLES / "mlp.yaml", _small_mnist1d(), 0.01, cfg)
    assert r.steps == 20
    assert fd2_variants._rule(r.trajectory, r.steps, rule) == pytest.approx(r.recommended_lr, rel=1e-12)


def test_every_variant_builds_and_options_parse() -> None:
    for name in fd2_variants.VARIANTS:
        FD2Tuner(**fd2_variants._options(name))
    assert fd2_variants._options("previous: x2 float32")["eval_dtype"] is torch.float32
    opts = tuner_quality._parse_options("max_change=2,recommend=tail,eval_dtype=float32,guard=true,every=1")
    assert opts == {
        "max_change": 2,
        "recommend": "tail",
        "eval_dtype": torch.float32,
        "guard": True,
        "every": 1,
    }
    FD2Tuner(**opts)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        tuner_quality._parse_options("max_change")
    with pytest.raises(SystemExit, match=r"--compare-fd2: .*maxchange"):
        tuner_quality._parse_options("maxchange=2", "--compare-fd2")
    with pytest.raises(SystemExit, match="--fd2: Invalid recommend"):
        tuner_quality._parse_options("recommend=median")
