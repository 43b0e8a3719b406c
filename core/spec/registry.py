"""The layer registry: one class per layer kind, holding everything about that kind.

A kind is a frozen pydantic model (its DSL schema) registered with :func:`register_kind`.
The class also carries the kind's rules, so adding a kind touches one file under
``core/spec/kinds/`` (discovered automatically) plus its test:

* schema: the pydantic fields; ``shorthand`` names the field a scalar/list fills;
* shape inference and parameter count: :meth:`LayerKind.infer`;
* shape-free checks: :meth:`LayerKind.widths`, :meth:`LayerKind.kernels`, :meth:`LayerKind.check`;
* module construction: :meth:`LayerKind.build`;
* Alrao grouping: ``param_modules`` (the only torch modules holding its parameters) and
  ``alrao_rules`` (feature rules for any of those the grouping does not know yet);
* import from PyTorch: ``torch_sources`` (modules, functions and method names it maps from),
  :meth:`LayerKind.from_torch` and :meth:`LayerKind.copy_weights`;
* ``contract_cases``: small examples the contract test (tests/core/spec/test_kind_contract.py)
  builds and runs for every registered kind.

``LAYER_KINDS``, the discriminated ``Layer`` union and the JSON schema
(:func:`archscreen.core.spec.layers.spec_json_schema`) are derived from the registry.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch.fx
from annotated_types import Ge, Gt, Lt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from torch import nn

from ..alrao.grouping import GroupRule, group_rule_for, register_group_rule
from ..data.base import DatasetInfo
from .errors import preview

if TYPE_CHECKING:
    from .infer import Node, SpecLimits, Walker

Shape = tuple[int, ...]

PosInt = Annotated[int, Strict(), Gt(0)]
NonNegInt = Annotated[int, Strict(), Ge(0)]
Probability = Annotated[float, Strict(), Ge(0), Lt(1)]
StrictBool = Annotated[bool, Strict()]
StrictFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def _to_pair(minimum: int) -> Callable[[Any], Any]:
    """Before-validator: ``k`` or ``[h, w]`` -> ``(h, w)``, each an int >= ``minimum``.

    A plain function (not a union type) so errors stay at the field's own path
    instead of pydantic's per-union-member locations.
    """
    what = "a positive integer" if minimum > 0 else "a non-negative integer"

    def convert(value: Any) -> Any:
        if isinstance(value, tuple | list) and len(value) == 2:
            items = tuple(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            items = (value, value)
        else:
            raise ValueError(f"expected {what} or a pair [h, w] of them, got {preview(value)}")
        for item in items:
            if not isinstance(item, int) or isinstance(item, bool) or item < minimum:
                raise ValueError(f"expected {what} or a pair [h, w] of them, got {preview(value)}")
        return items

    return convert


PosPair = Annotated[tuple[int, int], BeforeValidator(_to_pair(1))]
NonNegPair = Annotated[tuple[int, int], BeforeValidator(_to_pair(0))]


def fmt_shape(shape: Shape) -> str:
    return str(tuple(shape))


class InferContext(typing.Protocol):
    """What a kind's inference sees of the walk: the dataset, the limits, an issue sink."""

    info: DatasetInfo
    limits: SpecLimits
    # True while the input is still the dataset's integer token ids (only ``embedding`` takes them).
    tokens: bool

    def issue(self, path: str, message: str) -> None: ...


@dataclass(frozen=True)
class BuildContext:
    """What a kind's :meth:`LayerKind.build` sees: the dataset, and how to build a child node."""

    info: DatasetInfo

    def module(self, node: Node) -> nn.Module:
        return node.layer.build(node, self)


@dataclass(frozen=True)
class ContractCase:
    """One example for the kind contract test: a DSL layer item on a per-sample input shape."""

    item: Any
    input_shape: Shape
    input_kind: typing.Literal["float", "tokens"] = "float"
    vocab_size: int | None = None


@dataclass(frozen=True)
class TorchSource:
    """An fx node the importer maps to a kind: the node, its torch module (for ``call_module``),
    the per-sample shapes around it, and the graph's modules (for kinds that look further)."""

    node: torch.fx.Node
    module: nn.Module | None
    in_shape: Shape
    out_shape: Shape
    modules: Mapping[str, nn.Module] = field(default_factory=dict)


class Mapped(typing.NamedTuple):
    """What :meth:`LayerKind.from_torch` found: the layer, the fx node its input comes from, and
    the torch module whose weights :meth:`LayerKind.copy_weights` copies (default: the node's)."""

    layer: LayerKind
    input: torch.fx.Node
    weights: nn.Module | None = None


class ImportRefused(Exception):
    """The importer cannot express a node in the DSL. ``str()`` is ``node: reason``, one line."""

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"{node}: {reason}")


class LayerKind(BaseModel):
    """Base of every layer kind: immutable, unknown fields rejected (typos must not pass silently).

    Subclasses set ``kind`` to a ``Literal`` of their DSL names and override what applies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kind: str

    shorthand: ClassVar[str | None] = None
    param_modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    alrao_rules: ClassVar[Mapping[type[nn.Module], GroupRule]] = {}
    torch_sources: ClassVar[tuple[Any, ...]] = ()
    contract_cases: ClassVar[tuple[ContractCase, ...]] = ()
    # Residual ``projection: auto`` reads a rank-2 input as (C, L) when its body holds such a kind.
    channels_first_1d: ClassVar[bool] = False
    takes_tokens: ClassVar[bool] = False
    # The field holding nested DSL layer items (``residual``'s ``layers``), parsed recursively.
    nested_field: ClassVar[str | None] = None

    def args(self) -> dict[str, Any]:
        """The layer's arguments in canonical JSON form (defaults filled, pairs as lists)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"kind"})

    def sublayers(self) -> tuple[LayerKind, ...]:
        """Nested layers (counted against ``max_layers``); none for a plain layer."""
        return ()

    def widths(self) -> dict[str, int]:
        """Argument name -> width, checked against ``max_width``."""
        return {}

    def kernels(self) -> tuple[int, ...]:
        """Kernel sizes (per dim), checked against ``max_kernel``."""
        return ()

    def check(self, ctx: InferContext, kpath: str) -> None:
        """Shape-free checks beyond the limits (run even when the input shape is unknown)."""

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        """``(output shape, own parameter count)``; ``(None, 0)`` after reporting an issue."""
        raise NotImplementedError

    def walk(self, walker: Walker, path: str, kpath: str, shape: Shape) -> tuple[Shape | None, Node | None]:
        """One step of the inference walk; a nesting kind overrides it to walk its inner layers."""
        return walker.leaf(self, path, kpath, shape)

    def walk_unknown(self, walker: Walker, kpath: str) -> None:
        """The walk reached this layer with an unknown input shape (after an earlier problem)."""

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        """The torch module of a validated node (``node.in_shape`` is its input)."""
        raise NotImplementedError

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        """The layer for ``source``, the fx node its input comes from, the module holding its weights.

        Raises :class:`ImportRefused` with a one-line reason when the DSL cannot express it.
        """
        raise ImportRefused(source.node.name, f"no mapping to {cls.__name__}")

    def copy_weights(self, source: nn.Module, built: nn.Module) -> None:
        """Copy an imported module's weights into the module this layer built."""
        built.load_state_dict(source.state_dict())


_REGISTRY: dict[str, type[LayerKind]] = {}


def kind_names(cls: type[LayerKind]) -> tuple[str, ...]:
    """The DSL names of a kind class, read from its ``kind: Literal[...]`` field."""
    names = typing.get_args(cls.model_fields["kind"].annotation)
    if not names or not all(isinstance(name, str) for name in names):
        raise TypeError(f"{cls.__name__}.kind must be a Literal of DSL names")
    return names


def register_kind(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: add a kind to the registry (its names, Alrao rules and param modules).

    Refuses a name registered twice and a parameter module without an Alrao feature rule, so a
    kind that could not be screened fails at import, not in the middle of a run.
    """
    for module_type, rule in cls.alrao_rules.items():
        register_group_rule(module_type, rule)
    for module_type in cls.param_modules:
        if group_rule_for(module_type) is None:
            raise TypeError(f"{cls.__name__}: no Alrao feature rule for {module_type.__name__}")
    if cls.shorthand is not None and cls.shorthand not in cls.model_fields:
        raise TypeError(f"{cls.__name__}: shorthand {cls.shorthand!r} is not a field")
    for name in kind_names(cls):
        if name in _REGISTRY:
            raise ValueError(f"layer kind {name!r} registered twice")
        _REGISTRY[name] = cls
    return cls


def registered_kinds() -> dict[str, type[LayerKind]]:
    """DSL name -> kind class, in registration order."""
    return dict(_REGISTRY)


def kind_classes() -> tuple[type[LayerKind], ...]:
    """Every registered kind class once, in registration order."""
    return tuple(dict.fromkeys(_REGISTRY.values()))
