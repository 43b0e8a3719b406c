"""``groupnorm: {groups}``: group normalisation over the channels (Wu and He, 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar, Literal

from torch import nn

from ...alrao.grouping import GroupRule, ParamGroup
from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    PosInt,
    Shape,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


def _per_channel(module: nn.GroupNorm) -> list[ParamGroup]:
    """One Alrao feature per channel: its scale and shift share a rate (as for batchnorm)."""
    params = [module.weight, module.bias]
    return [
        {
            "params": params,
            "feature_dims": [0, 0],
            "gate_counts": [1, 1],
            "num_features": module.num_channels,
            "kind": "groupnorm",
        }
    ]


@register_kind
class GroupNorm(LayerKind):
    """``groupnorm: {groups}``; shorthand ``groupnorm: 4``. Input ``(C, ...)``, same shape out.

    The channels are split into ``groups`` groups (``groups`` must divide ``C``), each
    normalised over its channels and every spatial position; then a per-channel scale and
    shift (``2·C`` parameters). Unlike ``batchnorm`` it does not depend on the batch.
    Imported from ``nn.GroupNorm`` with torch's default ``eps`` and affine parameters.
    """

    kind: Literal["groupnorm"] = "groupnorm"
    groups: PosInt

    shorthand = "groups"
    param_modules = (nn.GroupNorm,)
    alrao_rules: ClassVar[Mapping[type[nn.Module], GroupRule]] = {nn.GroupNorm: _per_channel}
    torch_sources = (nn.GroupNorm,)
    contract_cases = (
        ContractCase({"groupnorm": 2}, (4, 5)),
        ContractCase({"groupnorm": {"groups": 3}}, (6, 3, 4)),
        ContractCase({"groupnorm": 1}, (5,)),
    )

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) not in (1, 2, 3):
            ctx.issue(kpath, f"groupnorm needs input (C,), (C, L) or (C, H, W), got {fmt_shape(shape)}")
            return None, 0
        if shape[0] % self.groups:
            ctx.issue(f"{kpath}.groups", f"input channels {shape[0]} not divisible by groups {self.groups}")
            return None, 0
        return shape, 2 * shape[0]

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return nn.GroupNorm(self.groups, node.in_shape[0])

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: nn.GroupNorm = module_of(source)
        require(source, module.eps == 1e-5, f"eps {module.eps:g} is not expressible (the DSL uses 1e-05)")
        require(source, module.affine, "a GroupNorm without affine parameters is not expressible")
        return Mapped(cls(groups=module.num_groups), tensor_input(source))
