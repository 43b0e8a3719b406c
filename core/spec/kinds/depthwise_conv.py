"""``depthwise_conv2d``: one filter bank per input channel (MobileNet's depthwise convolution)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    NonNegPair,
    PosInt,
    PosPair,
    Shape,
    StrictBool,
    fmt_shape,
    register_kind,
)
from ._windows import windows

if TYPE_CHECKING:
    from ..infer import Node


@register_kind
class DepthwiseConv2d(LayerKind):
    """``depthwise_conv2d: {kernel, stride=1, padding=0, multiplier=1, bias=true}`` on ``(C, H, W)``.

    Each input channel is convolved with its own ``multiplier`` filters: output
    ``(C·multiplier, H', W')``, ``C·multiplier·kh·kw (+ C·multiplier)`` parameters. It is
    ``conv2d`` with ``out = C·multiplier`` and ``groups = C``, written without repeating the
    channel count (so a spec stays valid when an earlier width changes). An imported
    ``nn.Conv2d`` with ``groups`` maps to ``conv2d``, which says the same explicitly.
    """

    kind: Literal["depthwise_conv2d"] = "depthwise_conv2d"
    kernel: PosPair
    stride: PosPair = (1, 1)
    padding: NonNegPair = (0, 0)
    multiplier: PosInt = 1
    bias: StrictBool = True

    param_modules = (nn.Conv2d,)
    contract_cases = (
        ContractCase({"depthwise_conv2d": {"kernel": 3, "padding": 1}}, (3, 5, 5)),
        ContractCase(
            {"depthwise_conv2d": {"kernel": [3, 1], "stride": 2, "multiplier": 2, "bias": False}}, (2, 7, 4)
        ),
    )

    def kernels(self) -> tuple[int, ...]:
        return self.kernel

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) != 3:
            ctx.issue(kpath, f"depthwise_conv2d needs input (C, H, W), got {fmt_shape(shape)}")
            return None, 0
        out = shape[0] * self.multiplier
        if out > ctx.limits.max_width:
            ctx.issue(
                f"{kpath}.multiplier",
                f"{out:,} output channels exceed the width limit of {ctx.limits.max_width:,}",
            )
            return None, 0
        spatial = windows(ctx, kpath, shape[1:], ("height", "width"), self.kernel, self.stride, self.padding)
        if spatial is None:
            return None, 0
        return (out, *spatial), out * math.prod(self.kernel) + (out if self.bias else 0)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        channels = node.in_shape[0]
        return nn.Conv2d(
            channels,
            channels * self.multiplier,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            groups=channels,
            bias=self.bias,
        )
