"""``conv1d`` and ``conv2d``: convolutions with ``groups`` (grouped and depthwise included)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    NonNegInt,
    NonNegPair,
    PosInt,
    PosPair,
    Shape,
    StrictBool,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, require, tensor_input
from ._windows import layout, spatial_dims, windows

if TYPE_CHECKING:
    from ..infer import Node


class _Conv(LayerKind):
    """Shared rules; subclasses fix the rank and the kernel/stride/padding types."""

    if TYPE_CHECKING:  # the fields, declared by each subclass in the DSL's argument order
        out: int
        groups: int
        bias: bool

    rank: ClassVar[int] = 2
    param_modules = (nn.Conv1d, nn.Conv2d)

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(kernel, stride, padding)``, one entry per spatial dim."""
        raise NotImplementedError

    def widths(self) -> dict[str, int]:
        return {"out": self.out}

    def kernels(self) -> tuple[int, ...]:
        return self.triple()[0]

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) != self.rank:
            ctx.issue(kpath, f"{self.kind} needs input {layout(self.rank)}, got {fmt_shape(shape)}")
            return None, 0
        channels = shape[0]
        if channels % self.groups:
            ctx.issue(f"{kpath}.groups", f"input channels {channels} not divisible by groups {self.groups}")
        if self.out % self.groups:
            ctx.issue(f"{kpath}.groups", f"out {self.out} not divisible by groups {self.groups}")
        kernel, stride, padding = self.triple()
        spatial = windows(ctx, kpath, shape[1:], spatial_dims(self.rank), kernel, stride, padding)
        if spatial is None:
            return None, 0
        params = self.out * (channels // self.groups) * math.prod(kernel) + (self.out if self.bias else 0)
        return (self.out, *spatial), params

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        conv: Any = nn.Conv1d if self.rank == 2 else nn.Conv2d
        kernel, stride, padding = self.triple()
        return conv(
            node.in_shape[0],
            self.out,
            kernel,
            stride=stride,
            padding=padding,
            groups=self.groups,
            bias=self.bias,
        )

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: nn.Conv1d | nn.Conv2d = module_of(source)
        require(source, not isinstance(module.padding, str), f"padding {module.padding!r} is not expressible")
        require(source, set(module.dilation) == {1}, f"dilation {module.dilation} is not expressible")
        require(
            source, module.padding_mode == "zeros", f"padding_mode {module.padding_mode!r} is not expressible"
        )
        one_d = isinstance(module, nn.Conv1d)
        layer = cls.model_validate(
            {
                "kind": "conv1d" if one_d else "conv2d",
                "out": module.out_channels,
                "kernel": module.kernel_size[0] if one_d else module.kernel_size,
                "stride": module.stride[0] if one_d else module.stride,
                "padding": module.padding[0] if one_d else module.padding,
                "groups": module.groups,
                "bias": module.bias is not None,
            }
        )
        return Mapped(layer, tensor_input(source))


@register_kind
class Conv1d(_Conv):
    """``conv1d: {out, kernel, stride=1, padding=0, groups=1, bias=true}`` on ``(C, L)``."""

    kind: Literal["conv1d"] = "conv1d"
    out: PosInt
    kernel: PosInt
    stride: PosInt = 1
    padding: NonNegInt = 0
    groups: PosInt = 1
    bias: StrictBool = True

    channels_first_1d = True
    torch_sources = (nn.Conv1d,)
    contract_cases = (
        ContractCase({"conv1d": {"out": 4, "kernel": 3, "padding": 1}}, (2, 9)),
        ContractCase({"conv1d": {"out": 6, "kernel": 2, "stride": 2, "groups": 3, "bias": False}}, (3, 8)),
    )

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return (self.kernel,), (self.stride,), (self.padding,)


@register_kind
class Conv2d(_Conv):
    """``conv2d``: as ``conv1d`` on ``(C, H, W)``; kernel/stride/padding int or ``[h, w]``."""

    kind: Literal["conv2d"] = "conv2d"
    out: PosInt
    kernel: PosPair
    stride: PosPair = (1, 1)
    padding: NonNegPair = (0, 0)
    groups: PosInt = 1
    bias: StrictBool = True

    rank = 3
    torch_sources = (nn.Conv2d,)
    contract_cases = (
        ContractCase({"conv2d": {"out": 4, "kernel": 3, "padding": 1}}, (2, 6, 5)),
        ContractCase({"conv2d": {"out": 4, "kernel": [3, 1], "stride": [2, 1], "groups": 4}}, (4, 7, 3)),
    )

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return self.kernel, self.stride, self.padding
