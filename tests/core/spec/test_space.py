"""Search spaces: parsing, sampling through real Optuna samplers, instantiate, refusals, errors."""

# The malformed-space table keeps one case per line, so its lines run long.
# ruff: noqa: E501

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import SpecError, parse_spec, spec_hash, validate_spec
from archscreen.core.spec.space import (
    PointRefused,
    SearchSpace,
    grid_search_space,
    instantiate,
    is_space_document,
    parse_space,
    point_from_params,
    sample,
    sample_point,
    space_size,
    suggest_point,
    survey_space,
)

SPACES = Path(__file__).resolve().parents[3] / "examples" / "spaces"
EXAMPLE_SPACES = {"mlp_space": "digits", "cnn_space": "digits", "transformer_space": "chartext"}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_of(text: str) -> SearchSpace:
    return parse_space(yaml.safe_load(text))


def load_example(name: str) -> SearchSpace:
    return parse_space(SPACES / f"{name}.yaml")


def run_study(
    space: SearchSpace, info: DatasetInfo, sampler: optuna.samplers.BaseSampler, n: int
) -> optuna.Study:
    """An in-memory study whose objective is the point's parameter count (cheap, deterministic)."""

    def objective(trial: optuna.Trial) -> float:
        point = suggest_point(space, trial, info)
        trial.set_user_attr("spec_hash", spec_hash(point.spec))
        return float(point.report.num_params)

    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


MLP = """
name: tiny
space: {limits: {max_params: 100000}}
layers:
  - flatten
  - repeat:
      count: {int: [0, 2], name: depth}
      layers:
        - linear: {out: {choice: [8, 16], name: width}}
        - {choice: {none: [], bn: batchnorm}, name: norm}
        - {choice: [relu, tanh], name: act}
head: classifier
"""


def test_examples_parse_and_name_their_parameters() -> None:
    assert sorted(load_example("transformer_space").params) == ["depth", "dim", "dropout", "heads", "mlp"]
    assert sorted(load_example("mlp_space").params) == [
        "activation",
        "depth",
        "dropout",
        "dropout_p",
        "norm",
        "width",
    ]
    assert space_size(load_example("transformer_space")) == (3 * 4 * 4 * 3, True)  # dim is tied: counted once


@pytest.mark.parametrize("name", sorted(EXAMPLE_SPACES))
def test_example_spaces_sample_valid_points(name: str, infos: dict[str, DatasetInfo]) -> None:
    survey = survey_space(load_example(name), infos[EXAMPLE_SPACES[name]], samples=20, seed=0)
    assert survey.valid >= 10, survey.refusals
    assert survey.valid + sum(survey.refusals.values()) == 20


def test_a_space_parses_from_text_path_or_mapping() -> None:
    text = (SPACES / "mlp_space.yaml").read_text()
    assert parse_space(text) == parse_space(SPACES / "mlp_space.yaml") == parse_space(yaml.safe_load(text))
    with pytest.raises(SpecError, match="spec: cannot read"):
        parse_space(SPACES / "missing.yaml")


def test_derived_names_are_template_paths() -> None:
    space = space_of(
        "space: {}\nlayers: [flatten, {linear: {choice: [8, 16]}}, {dropout: {float: [0.1, 0.5]}}]\nhead: classifier"
    )
    assert sorted(space.params) == ["layers[1].linear", "layers[2].dropout"]


@pytest.mark.parametrize(
    "sampler",
    [optuna.samplers.RandomSampler(seed=1), optuna.samplers.TPESampler(seed=1, n_startup_trials=4)],
    ids=["random", "tpe"],
)
def test_optuna_samplers_drive_sampling_and_params_recreate_the_spec(
    sampler: optuna.samplers.BaseSampler, infos: dict[str, DatasetInfo]
) -> None:
    space = load_example("transformer_space")
    study = run_study(space, infos["chartext"], sampler, n=12)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.COMPLETE in states
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            point = point_from_params(space, trial.params, infos["chartext"])
            assert spec_hash(point.spec) == trial.user_attrs["spec_hash"]
            assert float(point.report.num_params) == trial.value
        else:  # refused: heads that do not divide dim
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert "must divide dim" in trial.user_attrs["refused"]


def test_a_frozen_trial_samples_the_same_spec_as_instantiate(infos: dict[str, DatasetInfo]) -> None:
    space = load_example("mlp_space")
    study = run_study(space, infos["digits"], optuna.samplers.RandomSampler(seed=3), n=3)
    for frozen in study.trials:
        assert sample(space, frozen) == instantiate(space, frozen.params)
        assert instantiate(space, frozen.params) == instantiate(space, dict(frozen.params))  # deterministic


def test_nsga2_with_two_objectives(infos: dict[str, DatasetInfo]) -> None:
    space = space_of(MLP)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        point = suggest_point(space, trial, infos["digits"])
        return float(point.report.num_params), float(point.flops)

    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0)
    )
    study.optimize(objective, n_trials=6)
    assert len(study.best_trials) >= 1


def test_grid_sampler_covers_the_space_and_its_size(infos: dict[str, DatasetInfo]) -> None:
    space = space_of(MLP)
    grid = grid_search_space(space)
    assert grid == {"depth": [0, 1, 2], "width": [8, 16], "norm": ["none", "bn"], "act": ["relu", "tanh"]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    hashes: set[str] = set()

    def objective(trial: optuna.Trial) -> float:
        hashes.add(json.dumps(sample(space, trial), sort_keys=True))
        return 0.0

    study.optimize(objective)  # the grid sampler stops the study when the grid is exhausted
    # depth 0 has no width/norm/act; depth 1 and 2 share them (share: true): 1 + 2 * (2 * 2 * 2)
    assert space_size(space) == (17, False)
    assert len(hashes) == 17


def test_grid_refuses_a_continuous_parameter() -> None:
    with pytest.raises(SpecError, match=r"layers\[1\]\.dropout: parameter 'p' is continuous"):
        grid_search_space(
            space_of(
                "space: {}\nlayers: [flatten, {dropout: {float: [0.1, 0.5], name: p}}]\nhead: classifier"
            )
        )


def test_conditional_block_exists_only_for_its_choice() -> None:
    space = space_of(
        """
space: {}
layers:
  - flatten
  - choice:
      without: []
      with: [{dropout: {float: [0.1, 0.5], name: p}}, {linear: {int: [4, 8], name: hidden}}]
    name: extra
head: classifier
"""
    )
    assert instantiate(space, {"extra": "without"})["layers"] == ["flatten"]
    on = instantiate(space, {"extra": "with", "p": 0.2, "hidden": 5})
    assert on["layers"] == ["flatten", {"dropout": 0.2}, {"linear": 5}]
    with pytest.raises(SpecError, match=r"params\.p: not a parameter of this point"):
        instantiate(space, {"extra": "without", "p": 0.2})
    frozen_off = optuna.trial.FixedTrial({"extra": "without"})
    assert sample(space, frozen_off)["layers"] == ["flatten"]


def test_depth_repeats_shared_or_per_copy_parameters() -> None:
    shared = space_of(MLP)
    doc = instantiate(shared, {"depth": 2, "width": 16, "norm": "none", "act": "tanh"})
    assert doc["layers"] == ["flatten", {"linear": {"out": 16}}, "tanh", {"linear": {"out": 16}}, "tanh"]
    assert instantiate(shared, {"depth": 0})["layers"] == ["flatten"]
    per_copy = space_of(MLP.replace("      layers:\n", "      share: false\n      layers:\n"))
    params = {
        "depth": 2,
        "width[0]": 8,
        "norm[0]": "bn",
        "act[0]": "relu",
        "width[1]": 16,
        "norm[1]": "none",
        "act[1]": "tanh",
    }
    layers = instantiate(per_copy, params)["layers"]
    assert layers == ["flatten", {"linear": {"out": 8}}, "batchnorm", "relu", {"linear": {"out": 16}}, "tanh"]
    assert space_size(per_copy) == (1 + 8 + 64, False)


def test_a_list_choice_of_blocks_suggests_indices_and_splices() -> None:
    space = space_of(
        "space: {}\nlayers: [flatten, {choice: [[], [relu, relu], tanh], name: b}]\nhead: classifier"
    )
    assert space.params["b"].choices == (0, 1, 2)
    assert instantiate(space, {"b": 1})["layers"] == ["flatten", "relu", "relu"]
    assert instantiate(space, {"b": 2})["layers"] == ["flatten", "tanh"]


def test_every_point_is_a_plain_spec_that_validates(infos: dict[str, DatasetInfo]) -> None:
    space = load_example("cnn_space")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        try:
            point = sample_point(space, trial, infos["digits"])
        except PointRefused as refusal:
            with pytest.raises(SpecError):
                validate_spec(
                    parse_spec(sample(space, optuna.trial.FixedTrial(trial.params))), infos["digits"]
                )
            assert refusal.issues and refusal.reason
            continue
        assert not is_space_document(point.document)
        assert validate_spec(parse_spec(point.document), infos["digits"]) == point.report


@pytest.mark.parametrize(
    ("limits", "params", "reason"),
    [
        ("{}", {"heads": 3}, r"layers\[1\]\.transformer_block\.heads: must divide dim \(32\), got 3"),
        ("{limits: {max_params: 1000}}", {"heads": 2}, r"spec: [\d,]+ parameters exceed the limit of 1,000"),
        ("{limits: {max_flops: 1000}}", {"heads": 2}, r"spec: [\d,]+ FLOPs exceed the limit of 1,000"),
    ],
)
def test_refusal_reasons(
    limits: str, params: dict[str, Any], reason: str, infos: dict[str, DatasetInfo]
) -> None:
    space = space_of(
        f"space: {limits}\nlayers: [{{embedding: 32}}, {{transformer_block: {{heads: {{choice: [2, 3], name: heads}}, dim: 32}}}}]\nhead: classifier"
    )
    with pytest.raises(PointRefused, match=reason):
        point_from_params(space, params, infos["chartext"])
    # through Optuna: the trial ends PRUNED with the reason as a user attribute
    study = optuna.create_study()
    study.enqueue_trial(params)
    study.optimize(lambda trial: float(suggest_point(space, trial, infos["chartext"]).flops), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    assert study.trials[0].user_attrs["refused"]


BAD_SPACES: list[tuple[str, str]] = [
    ("space: 3\nlayers: []\nhead: classifier", r"space: expected a mapping"),
    ("space: {limit: {}}\nlayers: []\nhead: classifier", r"space\.limit: unknown field"),
    (
        "space: {limits: {max_params: -1}}\nlayers: []\nhead: classifier",
        r"space\.limits\.max_params: expected a positive number",
    ),
    (
        "space: {limits: {max_flop: 10}}\nlayers: []\nhead: classifier",
        r"space\.limits\.max_flop: unknown field",
    ),
    (
        "space: {}\nlayers: [{linear: {int: [8]}}]\nhead: classifier",
        r"layers\[0\]\.linear\.int: expected \[lo, hi\], two integers",
    ),
    (
        "space: {}\nlayers: [{linear: {int: [8, 4]}}]\nhead: classifier",
        r"layers\[0\]\.linear\.int: lo must not exceed hi",
    ),
    (
        "space: {}\nlayers: [{linear: {int: [8.5, 9]}}]\nhead: classifier",
        r"layers\[0\]\.linear\.int: expected \[lo, hi\], two integers",
    ),
    (
        "space: {}\nlayers: [{dropout: {float: [0, 0.5], log: true}}]\nhead: classifier",
        r"layers\[0\]\.dropout\.float: log: true needs lo > 0",
    ),
    (
        "space: {}\nlayers: [{dropout: {float: [0.1, 0.5], logg: true}}]\nhead: classifier",
        r"layers\[0\]\.dropout\.logg: unknown field",
    ),
    ("space: {}\nlayers: [{choice: []}]\nhead: classifier", r"layers\[0\]\.choice: must not be empty"),
    (
        "space: {}\nlayers: [{choice: [relu, relu]}]\nhead: classifier",
        r"layers\[0\]\.choice: options must be distinct",
    ),
    (
        "space: {}\nlayers: [{choice: 3}]\nhead: classifier",
        r"layers\[0\]\.choice: expected a list or a mapping",
    ),
    (
        "space: {}\nlayers: [{choice: [relu], int: [1, 2]}]\nhead: classifier",
        r"layers\[0\]: a parameter has one of",
    ),
    (
        "space: {}\nlayers: [{linear: {choice: [8], name: 5}}]\nhead: classifier",
        r"layers\[0\]\.linear\.name: expected a string",
    ),
    (
        "space: {}\nlayers: [{linear: {choice: [8], name: w}}, {linear: {choice: [16], name: w}}]\nhead: classifier",
        r"layers\[1\]\.linear\.name: parameter 'w' is defined differently at layers\[0\]\.linear",
    ),
    (
        "space: {}\nlayers: [{repeat: {layers: [relu]}}]\nhead: classifier",
        r"layers\[0\]\.repeat\.count: missing required field",
    ),
    (
        "space: {}\nlayers: [{repeat: {count: {float: [1, 2]}, layers: [relu]}}]\nhead: classifier",
        r"layers\[0\]\.repeat\.count: expected an integer from 0 to 1,000",
    ),
    (
        "space: {}\nlayers: [{repeat: {count: 2, layers: relu}}]\nhead: classifier",
        r"layers\[0\]\.repeat\.layers: expected a list of layers",
    ),
    (
        "space: {}\nlayers: [{repeat: {count: 2, layers: [relu], times: 3}}]\nhead: classifier",
        r"layers\[0\]\.repeat\.times: unknown field",
    ),
    (
        "space: {}\nlayers: [{residual: [{repeat: {count: 1, layers: [{linear: {int: [2, 1]}}]}}]}]\nhead: classifier",
        r"layers\[0\]\.residual\[0\]\.repeat\.layers\[0\]\.linear\.int: lo must not exceed hi",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPACES)
def test_malformed_spaces_name_the_path(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        space_of(text)
    assert any(re.match(message, str(issue)) for issue in caught.value.issues), str(caught.value)


def test_instantiate_names_bad_params() -> None:
    space = space_of(MLP)
    with pytest.raises(SpecError) as caught:
        instantiate(space, {"depth": 5, "typo": 1})
    lines = str(caught.value).splitlines()
    assert lines == [
        "params.depth: expected an int in [0, 2], got 5",
        "params.typo: not a parameter of this point",
    ]
    with pytest.raises(SpecError, match=r"params\.width: missing"):
        instantiate(space, {"depth": 1, "norm": "bn", "act": "relu"})
    with pytest.raises(SpecError, match=r"params\.act: expected one of \['relu', 'tanh'\], got 'gelu'"):
        instantiate(space, {"depth": 1, "width": 8, "norm": "bn", "act": "gelu"})


def test_a_plain_spec_is_not_a_space() -> None:
    plain = yaml.safe_load((SPACES.parent / "lenet5.yaml").read_text())
    assert not is_space_document(plain)
    with pytest.raises(SpecError, match="top-level 'space:'"):
        parse_space(plain)


def test_hostile_repeats_are_bounded() -> None:
    with pytest.raises(SpecError, match=r"layers\[0\]\.repeat\.count: expected an integer from 0 to 1,000"):
        space_of(
            "space: {}\nlayers: [{repeat: {count: {int: [1, 1000000000]}, layers: [relu]}}]\nhead: classifier"
        )
    nested = "relu"
    for _ in range(4):  # 1000^4 layers if expanded
        nested = f"{{repeat: {{count: {{int: [0, 1000]}}, share: false, layers: [{nested}]}}}}"
    space = space_of(f"space: {{}}\nlayers: [{nested}]\nhead: classifier")
    assert space_size(space) == (10**18, False)  # counted without expanding the copies, saturated
    with pytest.raises(SpecError, match=r"layers: a grid visits more than 10,000 list items"):
        grid_search_space(space)
    depth = {"layers[0].repeat.count": 1000}
    with pytest.raises(SpecError, match=r"params: more than 20 problems; stopped"):
        instantiate(
            space, depth | {f"layers[0].repeat.layers[0].repeat.count[{i}]": 1000 for i in range(1000)}
        )
    shared = space_of(
        f"space: {{}}\nlayers: [{nested.replace('share: false', 'share: true')}]\nhead: classifier"
    )
    counts = {name: 1000 for name in shared.params}
    with pytest.raises(SpecError, match=r"layers: the point expands to more than 10,000 list items"):
        instantiate(shared, counts)
    with pytest.raises(PointRefused, match=r"layers: the point expands to more than 10,000 list items"):
        sample_point(
            shared,
            optuna.trial.FixedTrial(counts),
            DatasetInfo(name="x", task="classification", input_shape=(4,), num_classes=2),
        )


class _OtherSpaceTrial:
    """A Trial-compatible object holding values of another space (as a stored trial might)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return 2

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return high + 1

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return high


def test_a_trial_value_outside_the_space_is_refused_by_name(infos: dict[str, DatasetInfo]) -> None:
    space = space_of("space: {}\nlayers: [flatten, {choice: [relu, tanh], name: c}]\nhead: classifier")
    with pytest.raises(SpecError, match=r"params\.c: expected one of \['relu', 'tanh'\], got 2"):
        sample(space, _OtherSpaceTrial())
    space = space_of("space: {}\nlayers: [flatten, {linear: {int: [4, 8], name: w}}]\nhead: classifier")
    with pytest.raises(PointRefused, match=r"params\.w: expected an int in \[4, 8\], got 9"):
        sample_point(space, _OtherSpaceTrial(), infos["digits"])
