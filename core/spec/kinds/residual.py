"""``residual: {layers, projection=auto}``: ``body(x) + skip(x)``, the one nesting kind."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from annotated_types import MinLen
from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    ImportRefused,
    InferContext,
    LayerKind,
    Shape,
    fmt_shape,
    register_kind,
)

if TYPE_CHECKING:
    from ..infer import Node, Walker
    from ..layers import Layer

ProjectionKind = Literal["identity", "linear", "conv1d", "conv2d"]


@dataclass
class Projection:
    """How a residual block maps its input onto the body's output shape."""

    kind: ProjectionKind
    in_features: int = 0
    out_features: int = 0
    stride: tuple[int, ...] = ()

    @property
    def params(self) -> int:
        if self.kind == "identity":
            return 0
        return self.in_features * self.out_features + self.out_features

    def module(self) -> nn.Module:
        if self.kind == "identity":
            return nn.Identity()
        if self.kind == "linear":
            return nn.Linear(self.in_features, self.out_features)
        conv: Any = nn.Conv1d if self.kind == "conv1d" else nn.Conv2d
        return conv(self.in_features, self.out_features, kernel_size=1, stride=self.stride)


class ResidualBlock(nn.Module):
    """``body(x) + skip(x)``; ``skip`` is ``nn.Identity`` or a linear/1x1-conv projection."""

    def __init__(self, body: nn.Sequential, skip: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def _conv_strides(ctx: InferContext, ppath: str, x: Shape, y: Shape) -> tuple[int, ...] | None:
    """Per spatial dim, the smallest stride of a 1x1 conv mapping ``x``'s size to ``y``'s."""
    strides: list[int] = []
    for size, target in zip(x[1:], y[1:], strict=True):
        stride = next((s for s in range(1, size + 1) if (size - 1) // s + 1 == target), None)
        if stride is None:
            ctx.issue(
                ppath,
                f"no strided 1x1 conv maps {fmt_shape(x)} to {fmt_shape(y)} (spatial {size} -> {target})",
            )
            return None
        strides.append(stride)
    return tuple(strides)


@register_kind
class Residual(LayerKind):
    """``residual: {layers: [...], projection=auto}``; shorthand ``residual: [...]``.

    Output is ``body(x) + skip(x)``. ``skip`` is the identity when shapes match and
    ``projection`` is ``auto`` or ``none``; a learned projection otherwise (see docs).
    Imported from an addition of two branches of one input (see the importer).
    """

    kind: Literal["residual"] = "residual"
    layers: Annotated[tuple[Layer, ...], MinLen(1)]
    projection: Literal["auto", "none", "linear", "conv"] = "auto"

    shorthand = "layers"
    nested_field = "layers"
    param_modules = (nn.Linear, nn.Conv1d, nn.Conv2d)
    torch_sources = (operator.add, operator.iadd, torch.add, "add")
    contract_cases = (
        ContractCase({"residual": ["relu", {"linear": 4}]}, (4,)),
        ContractCase({"residual": [{"linear": 6}]}, (3, 4)),
        ContractCase(
            {"residual": [{"conv2d": {"out": 4, "kernel": 3, "stride": 2, "padding": 1}}]}, (2, 6, 6)
        ),
        ContractCase(
            {
                "residual": {
                    "layers": [{"conv1d": {"out": 3, "kernel": 3, "padding": 1}}],
                    "projection": "conv",
                }
            },
            (3, 9),
        ),
    )

    def args(self) -> dict[str, Any]:
        return {
            "layers": [{layer.kind: layer.args()} for layer in self.layers],
            "projection": self.projection,
        }

    def sublayers(self) -> tuple[LayerKind, ...]:
        return tuple(self.layers)

    def walk_unknown(self, walker: Walker, kpath: str) -> None:
        """Shape-free checks of the inner layers after an earlier problem."""
        walker.sequence(self.layers, f"{kpath}.layers", None, False)

    def walk(self, walker: Walker, path: str, kpath: str, shape: Shape) -> tuple[Shape | None, Node | None]:
        from ..infer import LayerRow, Node

        slot = walker.reserve_row()  # the block's row goes before its inner rows
        body_out, _, children = walker.sequence(self.layers, f"{kpath}.layers", shape, False)
        if body_out is None:
            return None, None
        projection = self.pick_projection(walker, kpath, shape, body_out)
        if projection is None:
            return None, None
        walker.rows[slot] = LayerRow(
            path=path, kind="residual", input_shape=shape, output_shape=body_out, params=projection.params
        )
        return body_out, Node(self, path, shape, body_out, children=children, projection=projection)

    def pick_projection(self, ctx: InferContext, kpath: str, x: Shape, y: Shape) -> Projection | None:
        """Pick the skip path mapping input ``x`` onto body output ``y`` (rules in the docs)."""
        mode = self.projection
        ppath = f"{kpath}.projection"
        if mode in ("auto", "none") and x == y:
            return Projection("identity")
        if mode == "none":
            ctx.issue(
                ppath, f"body output {fmt_shape(y)} differs from input {fmt_shape(x)}: use projection auto"
            )
            return None
        if len(x) != len(y):
            ctx.issue(
                ppath, f"body changes the rank from {fmt_shape(x)} to {fmt_shape(y)}: no projection matches"
            )
            return None
        if mode == "auto":
            # Rank 2 is ambiguous: (C, L) for convolutions, (T, F) for sequences. A block
            # with 1-D convs/pools is treated as (C, L); otherwise as features on the last dim.
            conv_like = any(inner.channels_first_1d for inner in self.layers)
            if len(x) == 3 or (len(x) == 2 and conv_like):
                mode = "conv"
            elif x[:-1] == y[:-1]:
                mode = "linear"
            else:
                ctx.issue(
                    ppath, f"cannot project {fmt_shape(x)} to {fmt_shape(y)}: only the last dim may change"
                )
                return None
        if mode == "linear":
            if x[:-1] != y[:-1]:
                ctx.issue(
                    ppath,
                    "linear projection changes only the last dim, "
                    f"cannot map {fmt_shape(x)} to {fmt_shape(y)}",
                )
                return None
            return Projection("linear", x[-1], y[-1])
        # mode == "conv": a 1x1 convolution whose stride reproduces the body's spatial size.
        if len(x) not in (2, 3):
            ctx.issue(ppath, f"conv projection needs input (C, L) or (C, H, W), got {fmt_shape(x)}")
            return None
        strides = _conv_strides(ctx, ppath, x, y)
        return (
            None
            if strides is None
            else Projection("conv1d" if len(x) == 2 else "conv2d", x[0], y[0], strides)
        )

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        assert node.projection is not None  # set for every validated residual node
        body = nn.Sequential(*(ctx.module(child) for child in node.children))
        return ResidualBlock(body, node.projection.module())

    @classmethod
    def from_branches(cls, node: str, body: tuple[LayerKind, ...], skip: nn.Module | None) -> Residual:
        """The block for ``x + body(x)`` (``skip`` None) or ``skip(x) + body(x)`` (a projection)."""
        if not body:
            raise ImportRefused(node, "adds a tensor to itself: no residual body")
        if skip is None:
            return cls(layers=body, projection="none")
        if isinstance(skip, nn.Linear) and skip.bias is not None:
            return cls(layers=body, projection="linear")
        if isinstance(skip, nn.Conv1d | nn.Conv2d):
            one_by_one = set(skip.kernel_size) == {1} and set(skip.padding) == {0} and skip.groups == 1
            if one_by_one and skip.bias is not None:
                return cls(layers=body, projection="conv")
        reason = "a residual skip path must be the identity, a linear or a 1x1 conv projection with a bias"
        raise ImportRefused(node, reason)
