"""The normalised spec model: one frozen pydantic class per layer family.

Users never write these classes directly; :func:`archscreen.core.spec.parse_spec`
turns the YAML/JSON DSL (bare names, scalar shorthands, omitted defaults) into them.
Every default is materialised here, so two spellings of one architecture produce
equal models and therefore equal :func:`spec_hash` values.

Value rules (checked while parsing, before any shape inference):
  * widths, kernels, strides, ``groups``, ``hidden``, ``layers`` are integers >= 1
    (``true``/``"3"``/``3.0`` are rejected, not coerced);
  * paddings and ``permute`` dims are integers >= 0;
  * 2-D ``kernel``/``stride``/``padding`` take an int or a pair ``[h, w]`` and are
    stored as pairs; pooling ``stride`` defaults to its ``kernel``;
  * ``dropout`` p (and the ``dropout`` of attention layers) is in [0, 1);
  * ``causal`` is ``true``, ``false`` or ``null`` (decided by the dataset's task).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Lt, MinLen
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from .errors import preview

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

ActivationKind = Literal["relu", "gelu", "tanh", "sigmoid", "elu", "silu", "softplus", "identity"]
ACTIVATION_KINDS: tuple[str, ...] = (
    "relu",
    "gelu",
    "tanh",
    "sigmoid",
    "elu",
    "leaky_relu",
    "silu",
    "softplus",
    "identity",
)


class _LayerModel(BaseModel):
    """Common config: immutable, unknown fields rejected (typos must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kind: str

    def args(self) -> dict[str, Any]:
        """The layer's arguments in canonical JSON form (defaults filled, pairs as lists)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"kind"})


class Linear(_LayerModel):
    """``linear: {out, bias=true}``; shorthand ``linear: 120``. Input ``(F,)`` or ``(T, F)``."""

    kind: Literal["linear"] = "linear"
    out: PosInt
    bias: StrictBool = True


class Conv1d(_LayerModel):
    """``conv1d: {out, kernel, stride=1, padding=0, groups=1, bias=true}`` on ``(C, L)``."""

    kind: Literal["conv1d"] = "conv1d"
    out: PosInt
    kernel: PosInt
    stride: PosInt = 1
    padding: NonNegInt = 0
    groups: PosInt = 1
    bias: StrictBool = True


class Conv2d(_LayerModel):
    """``conv2d``: as ``conv1d`` on ``(C, H, W)``; kernel/stride/padding int or ``[h, w]``."""

    kind: Literal["conv2d"] = "conv2d"
    out: PosInt
    kernel: PosPair
    stride: PosPair = (1, 1)
    padding: NonNegPair = (0, 0)
    groups: PosInt = 1
    bias: StrictBool = True


class Pool1d(_LayerModel):
    """``maxpool1d``/``avgpool1d: {kernel, stride=kernel, padding=0}``; shorthand ``kernel``."""

    kind: Literal["maxpool1d", "avgpool1d"]
    kernel: PosInt
    stride: PosInt | None = None
    padding: NonNegInt = 0

    @model_validator(mode="after")
    def _default_stride(self) -> Pool1d:
        # Store the effective stride so `{kernel: 2}` and `{kernel: 2, stride: 2}` hash alike.
        return self if self.stride is not None else self.model_copy(update={"stride": self.kernel})

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.kernel


class Pool2d(_LayerModel):
    """``maxpool2d``/``avgpool2d``: as the 1-D pools, with int-or-pair arguments."""

    kind: Literal["maxpool2d", "avgpool2d"]
    kernel: PosPair
    stride: PosPair | None = None
    padding: NonNegPair = (0, 0)

    @model_validator(mode="after")
    def _default_stride(self) -> Pool2d:
        return self if self.stride is not None else self.model_copy(update={"stride": self.kernel})

    @property
    def step(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.kernel


class GlobalAvgPool(_LayerModel):
    """``global_avgpool``: mean over every dim after the first, ``(C, ...)`` -> ``(C,)``."""

    kind: Literal["global_avgpool"] = "global_avgpool"


class Norm(_LayerModel):
    """``batchnorm`` (1d for ``(C,)``/``(C, L)``, 2d for ``(C, H, W)``) or ``layernorm`` (last dim)."""

    kind: Literal["batchnorm", "layernorm"]


class Dropout(_LayerModel):
    """``dropout: {p=0.5}``; shorthand ``dropout: 0.1``; ``0 <= p < 1``."""

    kind: Literal["dropout"] = "dropout"
    p: Probability = 0.5


class Activation(_LayerModel):
    """Argument-free activations: relu, gelu, tanh, sigmoid, elu, silu, softplus, identity."""

    kind: ActivationKind


class LeakyReLU(_LayerModel):
    """``leaky_relu: {negative_slope=0.01}``; shorthand ``leaky_relu: 0.1``."""

    kind: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: StrictFloat = 0.01


class Flatten(_LayerModel):
    """``flatten``: any per-sample shape -> ``(prod(shape),)``."""

    kind: Literal["flatten"] = "flatten"


class Permute(_LayerModel):
    """``permute: [dims]``: reorder per-sample dims (no batch dim), e.g. ``[1, 0]``."""

    kind: Literal["permute"] = "permute"
    dims: Annotated[tuple[NonNegInt, ...], MinLen(1)]


class Embedding(_LayerModel):
    """``embedding: {dim}``; shorthand ``embedding: 32``. Token ids ``(T,)`` -> ``(T, dim)``."""

    kind: Literal["embedding"] = "embedding"
    dim: PosInt


class Recurrent(_LayerModel):
    """``lstm``/``gru: {hidden, layers=1, return=sequence}``; shorthand ``lstm: 64``.

    Input ``(T, F)``; output ``(T, hidden)`` (``return: sequence``) or ``(hidden,)``
    (``return: last``, the final time step).
    """

    kind: Literal["lstm", "gru"]
    hidden: PosInt
    layers: PosInt = 1
    returns: Literal["sequence", "last"] = Field("sequence", alias="return")


class Attention(_LayerModel):
    """``attention: {heads, dim, causal=auto, dropout=0}``: multi-head self-attention.

    Input ``(T, F)``; output ``(T, dim)``. The q, k and v projections are
    ``Linear(F, dim)`` each and the output projection ``Linear(dim, dim)``, so ``dim``
    may differ from ``F`` (the q/k/v projections are the projection; no extra module).
    ``heads`` must divide ``dim`` (checked by validation, with the path). ``causal``
    ``null`` (the default) means "decided by the dataset": true on a
    ``language_model`` task, false otherwise; it is kept as ``null`` in the canonical
    form because the spec alone cannot know the task. ``dropout`` drops attention
    weights while training.
    """

    kind: Literal["attention"] = "attention"
    heads: PosInt
    dim: PosInt
    causal: StrictBool | None = None
    dropout: Probability = 0.0


class Positional(_LayerModel):
    """``positional: {max_len=null}``; shorthand ``positional: 128``.

    A learned positional embedding added to a ``(T, F)`` input: output ``x + P[:T]``
    with ``P`` of shape ``(max_len, F)``. ``null`` (default) means ``max_len = T``,
    the inferred sequence length; an explicit value must be at least ``T``.
    """

    kind: Literal["positional"] = "positional"
    max_len: PosInt | None = None


class TransformerBlock(_LayerModel):
    """``transformer_block: {heads, dim, mlp=4*dim, causal=auto, dropout=0}``, pre-LN.

    ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with ``MLP = Linear(dim, mlp), GELU,
    Linear(mlp, dim)``. Input ``(T, dim)`` (the residual stream keeps its width, so
    ``dim`` must equal the input features); output ``(T, dim)``. ``mlp`` defaults to
    ``4 * dim`` and is stored explicitly, so omitting it hashes like writing it.
    ``dropout`` drops attention weights and each sublayer's output before its add.
    """

    kind: Literal["transformer_block"] = "transformer_block"
    heads: PosInt
    dim: PosInt
    mlp: PosInt | None = None
    causal: StrictBool | None = None
    dropout: Probability = 0.0

    @model_validator(mode="after")
    def _default_mlp(self) -> TransformerBlock:
        return self if self.mlp is not None else self.model_copy(update={"mlp": 4 * self.dim})

    @property
    def hidden(self) -> int:
        """The MLP's hidden width (``mlp``, materialised to ``4 * dim`` when omitted)."""
        return self.mlp if self.mlp is not None else 4 * self.dim


class Residual(_LayerModel):
    """``residual: {layers: [...], projection=auto}``; shorthand ``residual: [...]``.

    Output is ``body(x) + skip(x)``. ``skip`` is the identity when shapes match and
    ``projection`` is ``auto`` or ``none``; a learned projection otherwise (see docs).
    """

    kind: Literal["residual"] = "residual"
    layers: Annotated[tuple[Layer, ...], MinLen(1)]
    projection: Literal["auto", "none", "linear", "conv"] = "auto"

    def args(self) -> dict[str, Any]:
        return {"layers": [canonical_layer(layer) for layer in self.layers], "projection": self.projection}


Layer = Annotated[
    Linear
    | Conv1d
    | Conv2d
    | Pool1d
    | Pool2d
    | GlobalAvgPool
    | Norm
    | Dropout
    | Activation
    | LeakyReLU
    | Flatten
    | Permute
    | Embedding
    | Recurrent
    | Attention
    | Positional
    | TransformerBlock
    | Residual,
    Field(discriminator="kind"),
]

Residual.model_rebuild()

# kind -> (model class, name of the field a scalar/list shorthand fills, or None).
LAYER_KINDS: dict[str, tuple[type[_LayerModel], str | None]] = {
    "linear": (Linear, "out"),
    "conv1d": (Conv1d, None),
    "conv2d": (Conv2d, None),
    "maxpool1d": (Pool1d, "kernel"),
    "avgpool1d": (Pool1d, "kernel"),
    "maxpool2d": (Pool2d, "kernel"),
    "avgpool2d": (Pool2d, "kernel"),
    "global_avgpool": (GlobalAvgPool, None),
    "batchnorm": (Norm, None),
    "layernorm": (Norm, None),
    "dropout": (Dropout, "p"),
    **{kind: (Activation, None) for kind in ACTIVATION_KINDS if kind != "leaky_relu"},
    "leaky_relu": (LeakyReLU, "negative_slope"),
    "flatten": (Flatten, None),
    "permute": (Permute, "dims"),
    "embedding": (Embedding, "dim"),
    "lstm": (Recurrent, "hidden"),
    "gru": (Recurrent, "hidden"),
    "attention": (Attention, None),
    "positional": (Positional, "max_len"),
    "transformer_block": (TransformerBlock, None),
    "residual": (Residual, "layers"),
}


def canonical_layer(layer: _LayerModel) -> dict[str, Any]:
    """``{kind: {all args}}``: the mapping form of the DSL with every default written out."""
    return {layer.kind: layer.args()}


class ArchSpec(BaseModel):
    """A parsed, normalised architecture: a body of ``layers`` and a ``head``.

    ``name`` is a label only: it is excluded from :meth:`canonical` and the hash.
    ``layers`` is a tuple (the model is frozen, so the spec cannot change under a
    hash that was already computed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Strict(), Field(min_length=1, max_length=200)] = "unnamed"
    layers: tuple[Layer, ...]
    head: Literal["classifier", "regression"]

    def canonical(self) -> dict[str, Any]:
        """The architecture as plain JSON data: mapping form, defaults filled, no name.

        Feeding it back to ``parse_spec`` gives an equal spec (round trip).
        """
        return {"head": self.head, "layers": [canonical_layer(layer) for layer in self.layers]}

    @property
    def spec_hash(self) -> str:
        """See :func:`spec_hash`."""
        return spec_hash(self)


def spec_hash(spec: ArchSpec) -> str:
    """sha256 hex of ``spec.canonical()`` as compact JSON with sorted keys.

    Equal for every spelling of one architecture (shorthands, omitted defaults,
    names); different as soon as any layer, argument or the head changes.
    """
    text = json.dumps(spec.canonical(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
