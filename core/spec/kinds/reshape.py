"""Parameter-free reshapes: ``flatten`` and ``permute``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.fx
from annotated_types import MinLen
from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    NonNegInt,
    Shape,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import call_args, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


@register_kind
class Flatten(LayerKind):
    """``flatten``: any per-sample shape -> ``(prod(shape),)``.

    Imported from ``nn.Flatten()``, ``torch.flatten(x, 1)`` and ``x.flatten(1)``.
    """

    kind: Literal["flatten"] = "flatten"

    torch_sources = (nn.Flatten, torch.flatten, "flatten")
    contract_cases = (ContractCase("flatten", (2, 3, 4)),)

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        return (math.prod(shape),), 0

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return nn.Flatten()

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: Any = source.module
        if module is not None:
            start, end = module.start_dim, module.end_dim
        else:
            args = call_args(source, ("start_dim", "end_dim"))
            start, end = args.get("start_dim", 0), args.get("end_dim", -1)
        rank = len(source.in_shape) + 1
        require(
            source,
            start == 1 and end % rank == rank - 1,
            f"flattening dims {start}..{end} is not expressible (flatten keeps the batch dim only)",
        )
        return Mapped(cls(), tensor_input(source))


class PermuteDims(nn.Module):
    """Reorders per-sample dims; the batch dim stays first."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous() so following view-based ops never see strided memory.
        return x.permute(0, *(d + 1 for d in self.dims)).contiguous()

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


def _permutation(source: TorchSource) -> tuple[int, ...]:
    """The full permutation (batch dim included) a ``permute``/``transpose`` node applies."""
    rank = len(source.in_shape) + 1
    node = source.node
    require(source, not node.kwargs, "keyword arguments are not expressible here")
    raw: tuple[Any, ...] = tuple(node.args[1:])
    if node.target in ("transpose", torch.transpose):
        a, b = (int(d) % rank for d in raw)
        order = list(range(rank))
        order[a], order[b] = order[b], order[a]
        return tuple(order)
    flat = raw[0] if len(raw) == 1 and isinstance(raw[0], tuple | list) else raw
    return tuple(int(d) % rank for d in flat)


@register_kind
class Permute(LayerKind):
    """``permute: [dims]``: reorder per-sample dims (no batch dim), e.g. ``[1, 0]``.

    Imported from ``x.permute(...)``, ``torch.permute`` and ``transpose`` that keep the batch dim.
    """

    kind: Literal["permute"] = "permute"
    dims: Annotated[tuple[NonNegInt, ...], MinLen(1)]

    shorthand = "dims"
    torch_sources = ("permute", torch.permute, "transpose", torch.transpose)
    contract_cases = (
        ContractCase({"permute": [1, 0]}, (3, 5)),
        ContractCase({"permute": [2, 0, 1]}, (2, 3, 4)),
    )

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        rank = len(shape)
        if sorted(self.dims) != list(range(rank)):
            ctx.issue(
                f"{kpath}.dims",
                f"{list(self.dims)} is not a permutation of {list(range(rank))} for input {fmt_shape(shape)}",
            )
            return None, 0
        return tuple(shape[d] for d in self.dims), 0

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return PermuteDims(self.dims)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        order = _permutation(source)
        require(source, order[:1] == (0,), f"permutation {list(order)} moves the batch dim")
        return Mapped(cls(dims=tuple(d - 1 for d in order[1:])), tensor_input(source))
