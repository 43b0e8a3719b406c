"""One definition of every screening default (core/defaults.py): each entry point reads it.

Fails when core (``TrainConfig``, ``AlraoScreener``), the study model (``ScreeningConfig``), the
OpenAPI schema, the CLI's flags (``screen``, ``grid``, ``tune``, ``submit``), the CI gate or
``up --demo`` drift from it, or when a ``ScreeningConfig`` field has no core field to go to.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from archscreen.cli import build_parser
from archscreen.cli_common import model_from_args
from archscreen.config import ScreeningConfig
from archscreen.core.defaults import MEASURED_MAX_EPOCHS, NO_DATASET_MAX_EPOCHS, SCREENING
from archscreen.core.screening import AlraoScreener, screening_run, stop_rule_suffix
from archscreen.core.training.loop import TrainConfig
from tests.conftest import EXAMPLES

RUN_FIELDS = [n for n in ScreeningConfig.model_fields if n not in ScreeningConfig.STUDY_FIELDS]


def _core_default(name: str) -> Any:
    for cls in (AlraoScreener, TrainConfig):
        for f in fields(cls):
            if f.name == name:
                assert f.default is not MISSING, name
                return f.default
    raise AssertionError(f"ScreeningConfig.{name} goes to no core field (AlraoScreener, TrainConfig)")


@pytest.mark.parametrize("name", RUN_FIELDS)
def test_every_option_has_one_core_field_and_its_default(name: str) -> None:
    screener_names = {f.name for f in fields(AlraoScreener)}
    train_names = {f.name for f in fields(TrainConfig)}
    assert (name in screener_names) != (name in train_names), name  # exactly one home
    assert (name in screener_names) == (name in ScreeningConfig.SCREENER_FIELDS), name
    model_default = ScreeningConfig.model_fields[name].default
    if hasattr(SCREENING, name):
        assert model_default == getattr(SCREENING, name), name
    if name == "max_epochs":  # "auto" in the model, resolved per dataset; core's is for no dataset
        assert model_default == "auto" and _core_default(name) == NO_DATASET_MAX_EPOCHS
        return
    assert model_default == _core_default(name), name


# The budget the study chose (docs/fidelity.md, "The budget as a dimension of study II").
CHOSEN_CAPS = {"digits": 60, "mnist1d": 30, "chartext": 25, "regression": 60}


@pytest.mark.parametrize("dataset", sorted(CHOSEN_CAPS))
def test_the_default_run_is_the_measured_budget_of_each_dataset(dataset: str) -> None:
    screener, config = ScreeningConfig().for_dataset(dataset, None).run(seed=3)
    assert screener == AlraoScreener() and config == TrainConfig(seed=3, max_epochs=CHOSEN_CAPS[dataset])
    assert (config.patience, config.stop_rule) == (10, "patience")
    assert screener.name == "alrao-adam" and stop_rule_suffix(config) == ""
    assert ScreeningConfig(max_epochs=7).for_dataset(dataset, None).max_epochs == 7  # a number overrides


def test_auto_is_resolved_before_a_run_and_an_upload_gets_the_step_rule() -> None:
    assert dict(MEASURED_MAX_EPOCHS) == CHOSEN_CAPS
    assert MEASURED_MAX_EPOCHS["mnist1d"] == NO_DATASET_MAX_EPOCHS  # as core/defaults.py says
    with pytest.raises(ValueError, match="auto"):
        ScreeningConfig().run(seed=0)
    with pytest.raises(ValueError, match="training rows"):
        ScreeningConfig().for_dataset("ds_4", None)
    # at least 10 passes and 2,000 steps: 1,077 rows at batch 32 are 34 steps an epoch -> 59 epochs
    assert ScreeningConfig().for_dataset("ds_4", 1077).max_epochs == 59
    assert ScreeningConfig(batch_size=64).for_dataset("ds_4", 1077).max_epochs == 118  # 17 steps an epoch
    assert ScreeningConfig().for_dataset("ds_4", 100_000).max_epochs == 10  # 3,125 steps an epoch
    assert ScreeningConfig().for_dataset("ds_4", 40).max_epochs == 1000  # 2 steps an epoch
    assert ScreeningConfig(max_epochs=12).for_dataset("ds_4", None).max_epochs == 12


def test_the_study_budgets_of_the_benches_are_the_measured_caps() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from fidelity_suites import BUDGETS

    assert {ds: b["max_epochs"] for ds, b in BUDGETS.items()} == CHOSEN_CAPS


def test_switches_reach_the_run_and_its_name() -> None:
    cfg = ScreeningConfig(recentre_after=10, body_lr_min=1e-3, stop_rule="plateau", plateau_min_steps=0)
    screener, config = cfg.for_dataset("mnist1d", None).run(seed=0)
    assert (screener.recentre_after, screener.recentre_width, screener.body_lr_min) == (10, 1.0, 1e-3)
    assert (config.stop_rule, config.plateau_min_steps) == ("plateau", 0)
    assert screener.name == "alrao-adam+body[0.001..]+recentre@10w1"
    assert stop_rule_suffix(config) == "+plateau(min_steps=0)"
    assert ScreeningConfig(switch_theta=0.9999, max_epochs=5).run(seed=0)[0].name == "alrao-adam+theta0.9999"
    with pytest.raises(ValueError, match="unknown screening option"):
        screening_run({"max_epoch": 3})


def test_openapi_defaults_are_the_models(tmp_path: Path) -> None:
    from archscreen.api.app import create_app
    from archscreen.settings import Settings

    app = create_app(Settings(data_dir=tmp_path), check_schema=False)
    props = app.openapi()["components"]["schemas"]["ScreeningConfig"]["properties"]
    for name in RUN_FIELDS:
        assert props[name].get("default") == ScreeningConfig.model_fields[name].default, name
    assert props["max_epochs"]["default"] == SCREENING.max_epochs == "auto"
    caps = ", ".join(f"{ds} {cap}" for ds, cap in CHOSEN_CAPS.items())
    assert (
        caps in props["max_epochs"]["description"]
        and "2,000 optimizer steps" in props["max_epochs"]["description"]
    )
    assert {"type": "integer", "minimum": 1, "maximum": 10_000} in props["max_epochs"]["anyOf"]


def _parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["screen", "grid", "tune"])
def test_local_cli_flags_default_to_the_model(command: str) -> None:
    extra = ["--lrs", "0.1"] if command == "grid" else []
    args = _parsed(command, str(EXAMPLES / "mlp.yaml"), "--dataset", "mnist1d", *extra)
    assert model_from_args(ScreeningConfig, args, exclude=ScreeningConfig.STUDY_FIELDS) == ScreeningConfig()
    for name in RUN_FIELDS:
        if command == "screen" or name not in ScreeningConfig.SCREENER_FIELDS:
            assert getattr(args, name) == ScreeningConfig.model_fields[name].default, name
        else:  # plain runs have no screener options
            assert not hasattr(args, name), name


def test_max_epochs_flag_takes_a_number_or_auto() -> None:
    args = _parsed("screen", str(EXAMPLES / "mlp.yaml"), "--dataset", "digits")
    assert args.max_epochs == "auto" and "--max-epochs N|auto" in build_parser().format_help() + _help(
        "screen"
    )
    assert _parsed("screen", "a.yaml", "--dataset", "digits", "--max-epochs", "7").max_epochs == 7
    assert _parsed("screen", "a.yaml", "--dataset", "digits", "--max-epochs", "auto").max_epochs == "auto"
    assert _parsed("submit", "a.yaml", "--study", "s", "--max-epochs", "auto").max_epochs == "auto"


@pytest.mark.parametrize("command", ["screen", "grid", "tune"])
def test_local_commands_resolve_auto_for_their_dataset(command: str, tmp_path: Path) -> None:
    import numpy as np

    from archscreen.cli import _train_config
    from archscreen.core.data import load_dataset

    extra = ["--lrs", "0.1"] if command == "grid" else []
    spec = str(EXAMPLES / "mlp.yaml")
    for dataset in ("digits", "chartext"):
        args = _parsed(command, spec, "--dataset", dataset, *extra)
        assert _train_config(args, load_dataset(dataset, seed=0)).max_epochs == CHOSEN_CAPS[dataset]
    args = _parsed(command, spec, "--dataset", "digits", "--max-epochs", "3", *extra)
    assert _train_config(args, load_dataset("digits", seed=0)).max_epochs == 3
    npz = tmp_path / "mine.npz"  # no measured cap: the step rule on its training rows
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.normal(size=(500, 4)).astype(np.float32), y_train=rng.integers(0, 2, 500))
    data = load_dataset(str(npz), seed=0)
    args = _parsed(command, spec, "--dataset", str(npz), *extra)
    steps = -(-len(data.x_train) // 32)
    assert _train_config(args, data).max_epochs == max(10, -(-2000 // steps))


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def test_submit_sends_only_the_flags_given_and_has_every_option() -> None:
    args = _parsed("submit", "a.yaml", "--study", "s")
    assert all(hasattr(args, name) for name in ScreeningConfig.model_fields)
    given = model_from_args(ScreeningConfig, args, only_given=True)
    assert given.model_dump(exclude_unset=True) == {}  # the service's defaults apply
    args = _parsed("submit", "a.yaml", "--study", "s", "--recentre-after", "10", "--seeds", "0,1")
    given = model_from_args(ScreeningConfig, args, only_given=True)
    assert given.model_dump(exclude_unset=True) == {"recentre_after": 10, "seeds": [0, 1]}


def test_ci_gate_checks_its_screening_against_the_model(tmp_path: Path) -> None:
    from archscreen.ci_gate import load_ci_config
    from archscreen.cli_common import CliError

    spec = EXAMPLES / "ci" / "candidate-cnn.yaml"
    base = f"dataset: mnist1d\ncandidates: [{spec}]\nrule: {{top_k: 1}}\n"
    plain = tmp_path / "plain.yaml"
    plain.write_text(base)
    assert load_ci_config(plain).screening == {}  # nothing sent: the service's defaults, the model's
    switched = tmp_path / "switched.yaml"
    switched.write_text(base + "screening: {stop_rule: plateau, recentre_after: 10}\n")
    assert load_ci_config(switched).screening == {"stop_rule": "plateau", "recentre_after": 10}
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "screening: {max_epochs: 0}\n")
    with pytest.raises(CliError, match=r"screening\.max_epochs: Input should be greater"):
        load_ci_config(bad)


def test_demo_uses_the_service_defaults() -> None:
    import inspect

    from archscreen import demo

    source = inspect.getsource(demo.submit_demo)
    assert "screening=None" in source and "max_epochs" not in source
