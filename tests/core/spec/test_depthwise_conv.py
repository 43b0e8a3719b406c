"""The ``depthwise_conv2d`` kind: shapes, parameters, the built module and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import SpecError, SpecLimits, build_body, parse_spec, validate_spec

DIGITS = DatasetInfo(name="digits", task="classification", input_shape=(1, 8, 8), num_classes=10)


def _spec(depthwise: object) -> dict[str, object]:
    return {"layers": [{"conv2d": {"out": 4, "kernel": 1}}, depthwise, "flatten"], "head": "classifier"}


def test_equals_conv2d_with_groups_equal_to_the_channels() -> None:
    depthwise = parse_spec(_spec({"depthwise_conv2d": {"kernel": 3, "padding": 1, "multiplier": 2}}))
    grouped = parse_spec(_spec({"conv2d": {"out": 8, "kernel": 3, "padding": 1, "groups": 4}}))
    report = validate_spec(depthwise, DIGITS)
    assert report.rows[1].output_shape == (8, 8, 8)
    assert report.rows[1].params == 8 * 9 + 8 == validate_spec(grouped, DIGITS).rows[1].params
    torch.manual_seed(0)
    body = build_body(depthwise, DIGITS)
    torch.manual_seed(0)
    reference = build_body(grouped, DIGITS)
    conv = body[1]
    assert isinstance(conv, nn.Conv2d) and (conv.groups, conv.out_channels) == (4, 8)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(body(x), reference(x))


def test_stride_and_pair_kernel() -> None:
    spec = parse_spec(_spec({"depthwise_conv2d": {"kernel": [3, 1], "stride": 2, "bias": False}}))
    assert validate_spec(spec, DIGITS).rows[1].output_shape == (4, 3, 4)


DW = "layers[1].depthwise_conv2d"


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"depthwise_conv2d": {"kernel": 9}}, f"{DW}.kernel: kernel 9 larger than input height 8"),
        (
            {"depthwise_conv2d": {"kernel": 3, "multiplier": 0}},
            f"{DW}.multiplier: must be greater than 0, got 0",
        ),
        (
            {"depthwise_conv2d": 3},
            f"{DW}: expected a mapping of arguments (kernel, stride, padding, multiplier, bias), got 3",
        ),
    ],
)
def test_errors_name_the_argument(layer: object, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(parse_spec(_spec(layer)), DIGITS)
    assert str(caught.value).splitlines()[0] == message


def test_width_limit_counts_the_multiplied_channels() -> None:
    spec = parse_spec(_spec({"depthwise_conv2d": {"kernel": 1, "multiplier": 3}}))
    with pytest.raises(SpecError, match=r"multiplier: 12 output channels exceed the width limit of 10"):
        validate_spec(spec, DIGITS, SpecLimits(max_width=10))
