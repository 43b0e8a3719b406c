"""``batchnorm`` (1-D or 2-D by the input's rank) and ``layernorm`` (last dim)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    Shape,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


@register_kind
class Norm(LayerKind):
    """``batchnorm`` (1d for ``(C,)``/``(C, L)``, 2d for ``(C, H, W)``) or ``layernorm`` (last dim).

    Imported from ``nn.BatchNorm1d/2d`` and ``nn.LayerNorm`` over the last dim, with torch's
    defaults for ``eps``, ``momentum`` and the affine parameters (the DSL has no other value).
    """

    kind: Literal["batchnorm", "layernorm"]

    param_modules = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    torch_sources = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
    contract_cases = (
        ContractCase("batchnorm", (5,)),
        ContractCase("batchnorm", (3, 7)),
        ContractCase("batchnorm", (3, 4, 4)),
        ContractCase("layernorm", (6, 4)),
    )

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if self.kind == "layernorm":
            return shape, 2 * shape[-1]
        if len(shape) not in (1, 2, 3):
            ctx.issue(kpath, f"batchnorm needs input (C,), (C, L) or (C, H, W), got {fmt_shape(shape)}")
            return None, 0
        return shape, 2 * shape[0]

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        shape = node.in_shape
        if self.kind == "layernorm":
            return nn.LayerNorm(shape[-1])
        return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module = module_of(source)
        require(source, module.eps == 1e-5, f"eps {module.eps:g} is not expressible (the DSL uses 1e-05)")
        if isinstance(module, nn.LayerNorm):
            require(
                source,
                tuple(module.normalized_shape) == source.in_shape[-1:],
                f"normalized_shape {tuple(module.normalized_shape)} is not expressible (layernorm: last dim)",
            )
            require(source, module.elementwise_affine and module.bias is not None, "a LayerNorm without "
                    "affine weight and bias is not expressible")  # fmt: skip
            return Mapped(cls(kind="layernorm"), tensor_input(source))
        require(source, module.affine and module.track_running_stats, "a BatchNorm without affine "
                "parameters or running statistics is not expressible")  # fmt: skip
        require(
            source,
            module.momentum == 0.1,
            f"momentum {module.momentum} is not expressible (the DSL uses 0.1)",
        )
        return Mapped(cls(kind="batchnorm"), tensor_input(source))
