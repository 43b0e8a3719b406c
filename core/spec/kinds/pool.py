"""Pooling: ``maxpool1d``/``avgpool1d``, ``maxpool2d``/``avgpool2d`` and ``global_avgpool``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.fx
from pydantic import model_validator
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
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import call_args, module_of, require, tensor_input
from ._windows import layout, spatial_dims, windows

if TYPE_CHECKING:
    from ..infer import Node

_POOLS: dict[str, type[nn.Module]] = {
    "maxpool1d": nn.MaxPool1d,
    "avgpool1d": nn.AvgPool1d,
    "maxpool2d": nn.MaxPool2d,
    "avgpool2d": nn.AvgPool2d,
}


class _Pool(LayerKind):
    """Shared rules; ``stride`` defaults to the kernel and is stored so both spellings hash alike."""

    rank: ClassVar[int] = 2
    shorthand = "kernel"

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def kernels(self) -> tuple[int, ...]:
        return self.triple()[0]

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) != self.rank:
            ctx.issue(kpath, f"{self.kind} needs input {layout(self.rank)}, got {fmt_shape(shape)}")
            return None, 0
        kernel, stride, padding = self.triple()
        # torch refuses pooling padding above half the kernel.
        if any(p > k // 2 for p, k in zip(padding, kernel, strict=True)):
            ctx.issue(f"{kpath}.padding", f"padding {max(padding)} must be at most half the kernel")
            return None, 0
        spatial = windows(ctx, kpath, shape[1:], spatial_dims(self.rank), kernel, stride, padding)
        return (None, 0) if spatial is None else ((shape[0], *spatial), 0)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        kernel, stride, padding = self.triple()
        return _POOLS[self.kind](kernel, stride=stride, padding=padding)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module = module_of(source)
        kind = next(name for name, pool in _POOLS.items() if type(module) is pool)
        require(source, not module.ceil_mode, "ceil_mode=True is not expressible")
        if kind.startswith("max"):
            require(source, module.dilation in (1, (1, 1)), f"dilation {module.dilation} is not expressible")
            require(source, not module.return_indices, "return_indices=True is not expressible")
        else:
            require(source, module.count_include_pad, "count_include_pad=False is not expressible")
            require(
                source,
                getattr(module, "divisor_override", None) is None,
                "divisor_override is not expressible",
            )
        args = {"kernel": module.kernel_size, "stride": module.stride, "padding": module.padding}
        if kind.endswith("1d"):  # 1-D pools keep ints or 1-tuples; the DSL wants ints
            args = {k: v[0] if isinstance(v, tuple) else v for k, v in args.items()}
        return Mapped(cls.model_validate({"kind": kind, **args}), tensor_input(source))


@register_kind
class Pool1d(_Pool):
    """``maxpool1d``/``avgpool1d: {kernel, stride=kernel, padding=0}``; shorthand ``kernel``."""

    kind: Literal["maxpool1d", "avgpool1d"]
    kernel: PosInt
    stride: PosInt | None = None
    padding: NonNegInt = 0

    channels_first_1d = True
    torch_sources = (nn.MaxPool1d, nn.AvgPool1d)
    contract_cases = (
        ContractCase({"maxpool1d": 2}, (3, 9)),
        ContractCase({"avgpool1d": {"kernel": 3, "stride": 1, "padding": 1}}, (2, 5)),
    )

    @model_validator(mode="after")
    def _default_stride(self) -> Pool1d:
        # Store the effective stride so `{kernel: 2}` and `{kernel: 2, stride: 2}` hash alike.
        return self if self.stride is not None else self.model_copy(update={"stride": self.kernel})

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.kernel

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return (self.kernel,), (self.step,), (self.padding,)


@register_kind
class Pool2d(_Pool):
    """``maxpool2d``/``avgpool2d``: as the 1-D pools, with int-or-pair arguments."""

    kind: Literal["maxpool2d", "avgpool2d"]
    kernel: PosPair
    stride: PosPair | None = None
    padding: NonNegPair = (0, 0)

    rank = 3
    torch_sources = (nn.MaxPool2d, nn.AvgPool2d)
    contract_cases = (
        ContractCase({"maxpool2d": 2}, (3, 6, 7)),
        ContractCase({"avgpool2d": {"kernel": [3, 2], "stride": [1, 2], "padding": [1, 0]}}, (2, 5, 4)),
    )

    @model_validator(mode="after")
    def _default_stride(self) -> Pool2d:
        # Store the effective stride so `{kernel: 2}` and `{kernel: 2, stride: 2}` hash alike.
        return self if self.stride is not None else self.model_copy(update={"stride": self.kernel})

    @property
    def step(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.kernel

    def triple(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return self.kernel, self.step, self.padding


class GlobalAvgPooling(nn.Module):
    """Mean over every per-sample dim after the channels: ``(B, C, ...)`` -> ``(B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


@register_kind
class GlobalAvgPool(LayerKind):
    """``global_avgpool``: mean over every dim after the first, ``(C, ...)`` -> ``(C,)``.

    Imported from ``x.mean(dims)`` / ``torch.mean(x, dims)`` over every dim after the channels.
    """

    kind: Literal["global_avgpool"] = "global_avgpool"

    torch_sources = ("mean", torch.mean)
    contract_cases = (ContractCase("global_avgpool", (3, 5)), ContractCase("global_avgpool", (4, 3, 2)))

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) not in (2, 3):
            ctx.issue(kpath, f"global_avgpool needs input (C, L) or (C, H, W), got {fmt_shape(shape)}")
            return None, 0
        return (shape[0],), 0

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return GlobalAvgPooling()

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        args = call_args(source, ("dim", "keepdim"))
        dims = args.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        rank = len(source.in_shape) + 1
        wanted = set(range(2, rank))
        require(source, rank in (3, 4), "a mean is a global_avgpool only on (C, L) or (C, H, W) input")
        require(
            source,
            {d % rank for d in dims} == wanted and not args.get("keepdim", False),
            f"a mean over dims {list(dims)} is not expressible (global_avgpool: dims {sorted(wanted)})",
        )
        return Mapped(cls(), tensor_input(source))
