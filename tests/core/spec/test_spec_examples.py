"""Every shipped example parses, validates, builds and runs on its dataset."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import ALLOWED_PARAM_MODULES, build_body, parse_spec, spec_hash, validate_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))
REQUIRED = {
    "logistic_regression",
    "mlp",
    "lenet5",
    "resnet_small",
    "mobilenet_small",
    "char_lstm",
    "char_transformer",
    "gru_classifier",
    "mlp_regression",
}


def _dataset_of(path: Path) -> str:
    match = re.fullmatch(r"#\s*dataset:\s*(\w+)\s*", path.read_text().splitlines()[0])
    assert match, f"{path.name}: first line must be '# dataset: NAME'"
    return match.group(1)


def test_required_examples_exist() -> None:
    assert {path.stem for path in EXAMPLES} >= REQUIRED


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_builds_and_runs(
    path: Path, infos: dict[str, DatasetInfo], make_batch: Callable[..., torch.Tensor]
) -> None:
    info = infos[_dataset_of(path)]
    spec = parse_spec(path)
    report = validate_spec(spec, info)
    body = build_body(spec, info)

    out = body(make_batch(info, 3))
    assert tuple(out.shape) == (3, *report.feature_shape)
    assert body.feature_shape == report.feature_shape

    # Parameter count: report == built body + one independently sized head.
    outputs = info.target_dim if info.task == "regression" else info.num_classes
    assert outputs is not None
    head = nn.Linear(report.feature_shape[-1], outputs)
    body_params = sum(p.numel() for p in body.parameters())
    assert report.body_params == body_params == sum(row.params for row in report.rows)
    assert report.num_params == body_params + sum(p.numel() for p in head.parameters())
    assert report.num_params < 200_000, "examples must stay small enough to train fast on CPU"

    # Only the module types the Alrao optimizer knows may own parameters.
    for module in body.modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, ALLOWED_PARAM_MODULES), type(module)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_canonical_round_trip(path: Path) -> None:
    spec = parse_spec(path)
    again = parse_spec(spec.canonical())
    assert again.canonical() == spec.canonical()
    assert spec_hash(again) == spec_hash(spec) == spec.spec_hash
    # The text and the Path forms of the source agree too.
    assert parse_spec(path.read_text()) == spec == parse_spec(str(path))
