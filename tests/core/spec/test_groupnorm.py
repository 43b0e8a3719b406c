"""The ``groupnorm`` kind: parsing, shape rules, the built module and its Alrao groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archscreen.core.alrao import alrao_param_groups
from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import SpecError, build_body, parse_spec, validate_spec

DIGITS = DatasetInfo(name="digits", task="classification", input_shape=(1, 8, 8), num_classes=10)
SPEC = {
    "layers": [{"conv2d": {"out": 6, "kernel": 3}}, {"groupnorm": 3}, "relu", "flatten"],
    "head": "classifier",
}


def test_shorthand_and_mapping_hash_alike() -> None:
    long = {**SPEC, "layers": [SPEC["layers"][0], {"groupnorm": {"groups": 3}}, "relu", "flatten"]}
    assert parse_spec(SPEC).spec_hash == parse_spec(long).spec_hash


def test_builds_torch_group_norm_with_two_parameters_per_channel() -> None:
    spec = parse_spec(SPEC)
    report = validate_spec(spec, DIGITS)
    assert report.rows[1].params == 12 and report.rows[1].output_shape == (6, 6, 6)
    body = build_body(spec, DIGITS)
    norm = body[1]
    assert isinstance(norm, nn.GroupNorm) and (norm.num_groups, norm.num_channels) == (3, 6)
    x = torch.randn(4, 6, 6, 6)
    torch.testing.assert_close(norm(x), nn.functional.group_norm(x, 3, norm.weight, norm.bias))


def test_alrao_gives_one_rate_per_channel() -> None:
    body = build_body(parse_spec(SPEC), DIGITS)
    (group,) = [g for g in alrao_param_groups(body) if g["kind"] == "groupnorm"]
    assert group["num_features"] == 6 and group["params"] == [body[1].weight, body[1].bias]


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"groupnorm": 4}, "layers[1].groupnorm.groups: input channels 6 not divisible by groups 4"),
        ({"groupnorm": 0}, "layers[1].groupnorm.groups: must be greater than 0, got 0"),
        ("groupnorm", "layers[1].groupnorm.groups: missing required field"),
    ],
)
def test_errors_name_the_argument(layer: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(parse_spec({**SPEC, "layers": [SPEC["layers"][0], layer, "flatten"]}), DIGITS)
    assert str(caught.value) == message
