"""Shape-keeping, parameter-free layers: activations, ``leaky_relu`` and ``dropout``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    Probability,
    Shape,
    StrictFloat,
    TorchSource,
    register_kind,
)
from ._torch import call_args, module_of, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node

ActivationKind = Literal["relu", "gelu", "tanh", "sigmoid", "elu", "silu", "softplus", "identity"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}
# Functions and tensor methods that compute an activation with its default arguments.
_ACTIVATION_CALLS: dict[object, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    "relu": "relu",
    F.gelu: "gelu",
    torch.tanh: "tanh",
    "tanh": "tanh",
    torch.sigmoid: "sigmoid",
    "sigmoid": "sigmoid",
    F.elu: "elu",
    F.silu: "silu",
    F.softplus: "softplus",
}
# Module attributes that must keep torch's defaults for the module to equal the DSL's activation.
_DEFAULTS: dict[type[nn.Module], dict[str, object]] = {
    nn.GELU: {"approximate": "none"},
    nn.ELU: {"alpha": 1.0},
    nn.Softplus: {"beta": 1.0, "threshold": 20.0},
}


def _same_shape(shape: Shape) -> tuple[Shape | None, int]:
    return shape, 0


@register_kind
class Activation(LayerKind):
    """Argument-free activations: relu, gelu, tanh, sigmoid, elu, silu, softplus, identity."""

    kind: ActivationKind

    torch_sources = (*_ACTIVATIONS.values(), *_ACTIVATION_CALLS)
    contract_cases = tuple(ContractCase(name, (3, 4)) for name in _ACTIVATIONS)

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        return _same_shape(shape)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return _ACTIVATIONS[self.kind]()

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        if source.module is None:
            name = _ACTIVATION_CALLS[source.node.target]
            args = call_args(source, ("inplace",) if name in ("relu", "elu", "silu") else ())
            require(source, set(args) <= {"inplace"}, f"arguments {sorted(args)} are not expressible")
            return Mapped(cls.model_validate({"kind": name}), tensor_input(source))
        module = module_of(source)
        for attribute, default in _DEFAULTS.get(type(module), {}).items():
            value = getattr(module, attribute)
            require(
                source,
                value == default,
                f"{attribute}={value!r} is not expressible (the DSL uses {default!r})",
            )
        name = next(name for name, cls_ in _ACTIVATIONS.items() if type(module) is cls_)
        return Mapped(cls.model_validate({"kind": name}), tensor_input(source))


@register_kind
class LeakyReLU(LayerKind):
    """``leaky_relu: {negative_slope=0.01}``; shorthand ``leaky_relu: 0.1``."""

    kind: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: StrictFloat = 0.01

    shorthand = "negative_slope"
    torch_sources = (nn.LeakyReLU, F.leaky_relu)
    contract_cases = (ContractCase({"leaky_relu": 0.2}, (5,)),)

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        return _same_shape(shape)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: Any = source.module
        if module is not None:
            slope = module.negative_slope
        else:
            slope = call_args(source, ("negative_slope", "inplace")).get("negative_slope", 0.01)
        return Mapped(cls(negative_slope=float(slope)), tensor_input(source))


@register_kind
class Dropout(LayerKind):
    """``dropout: {p=0.5}``; shorthand ``dropout: 0.1``; ``0 <= p < 1``."""

    kind: Literal["dropout"] = "dropout"
    p: Probability = 0.5

    shorthand = "p"
    torch_sources = (nn.Dropout,)
    contract_cases = (ContractCase({"dropout": 0.25}, (2, 3)),)

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        return _same_shape(shape)

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        return nn.Dropout(self.p)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module = module_of(source)
        require(source, module.p < 1, f"p={module.p} is not expressible (dropout p must be below 1)")
        return Mapped(cls(p=float(module.p)), tensor_input(source))
