"""The normalised spec model: the registered layer kinds, their union, and :class:`ArchSpec`.

Users never write these classes directly; :func:`archscreen.core.spec.parse_spec`
turns the YAML/JSON DSL (bare names, scalar shorthands, omitted defaults) into them.
Every default is materialised here, so two spellings of one architecture produce
equal models and therefore equal :func:`spec_hash` values.

Each kind is one class in ``core/spec/kinds/`` (see :mod:`archscreen.core.spec.registry`);
``Layer``, ``LAYER_KINDS`` and :func:`spec_json_schema` are derived from the registry.

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
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict

from . import kinds  # noqa: F401  (registers every kind)
from .kinds.attention import Attention, Positional, TransformerBlock
from .kinds.conv import Conv1d, Conv2d
from .kinds.elementwise import Activation, ActivationKind, Dropout, LeakyReLU
from .kinds.embedding import Embedding
from .kinds.linear import Linear
from .kinds.norm import Norm
from .kinds.pool import GlobalAvgPool, Pool1d, Pool2d
from .kinds.recurrent import Recurrent
from .kinds.reshape import Flatten, Permute
from .kinds.residual import Residual
from .registry import (
    LayerKind,
    NonNegInt,
    NonNegPair,
    PosInt,
    PosPair,
    Probability,
    StrictBool,
    StrictFloat,
    kind_classes,
    registered_kinds,
)

__all__ = [
    "ACTIVATION_KINDS",
    "LAYER_KINDS",
    "Activation",
    "ActivationKind",
    "ArchSpec",
    "Attention",
    "Conv1d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LayerKind",
    "LeakyReLU",
    "Linear",
    "NonNegInt",
    "NonNegPair",
    "Norm",
    "Permute",
    "Pool1d",
    "Pool2d",
    "PosInt",
    "PosPair",
    "Positional",
    "Probability",
    "Recurrent",
    "Residual",
    "StrictBool",
    "StrictFloat",
    "TransformerBlock",
    "canonical_layer",
    "spec_hash",
    "spec_json_schema",
]

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

if TYPE_CHECKING:
    Layer = LayerKind
else:
    # The discriminated union of every registered kind: pydantic picks the class by ``kind``.
    Layer = Annotated[Union[tuple(kind_classes())], Field(discriminator="kind")]  # noqa: UP007

for _cls in kind_classes():  # kinds that nest layers (residual) refer to ``Layer``
    _cls.model_rebuild(_types_namespace={"Layer": Layer})

# kind -> (model class, name of the field a scalar/list shorthand fills, or None).
LAYER_KINDS: dict[str, tuple[type[LayerKind], str | None]] = {
    name: (cls, cls.shorthand) for name, cls in registered_kinds().items()
}


def canonical_layer(layer: LayerKind) -> dict[str, Any]:
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


def spec_json_schema() -> dict[str, Any]:
    """JSON schema of the normalised spec (every registered kind, in its mapping form's fields)."""
    return ArchSpec.model_json_schema(by_alias=True)
