"""``linear: {out, bias=true}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    PosInt,
    Shape,
    StrictBool,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


@register_kind
class Linear(LayerKind):
    """``linear: {out, bias=true}``; shorthand ``linear: 120``. Input ``(F,)`` or ``(T, F)``."""

    kind: Literal["linear"] = "linear"
    out: PosInt
    bias: StrictBool = True

    shorthand = "out"
    param_modules = (nn.Linear,)
    torch_sources = (nn.Linear,)
    contract_cases = (
        ContractCase({"linear": 5}, (7,)),
        ContractCase({"linear": {"out": 3, "bias": False}}, (4, 6)),
    )

    def widths(self) -> dict[str, int]:
        return {"out": self.out}

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) not in (1, 2):
            ctx.issue(kpath, f"linear needs input (F,) or (T, F), got {fmt_shape(shape)}: add flatten")
            return None, 0
        return (*shape[:-1], self.out), shape[-1] * self.out + (self.out if self.bias else 0)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return nn.Linear(node.in_shape[-1], self.out, bias=self.bias)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: nn.Linear = module_of(source)
        return Mapped(cls(out=module.out_features, bias=module.bias is not None), tensor_input(source))
