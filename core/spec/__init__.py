"""The architecture spec DSL: declarative YAML/JSON, never code.

    spec = parse_spec("examples/lenet5.yaml")      # SpecError on bad syntax/values
    report = validate_spec(spec, info)             # SpecError listing every problem
    body = build_body(spec, info)                  # (B, *input_shape) -> (B, *feature_shape)

Each layer kind is one class in ``core/spec/kinds/`` (see :mod:`.registry`).
See ``docs/spec.md`` for the layer reference, shape rules, limits and hashing.
"""

from .build import (
    ALLOWED_PARAM_MODULES,
    GlobalAvgPooling,
    PermuteDims,
    PositionalEmbedding,
    RecurrentBlock,
    ResidualBlock,
    SelfAttention,
    SpecBody,
    TransformerLayer,
    build_body,
)
from .errors import SpecError, SpecIssue
from .infer import (
    DEFAULT_LIMITS,
    LayerRow,
    SpecLimits,
    SpecReport,
    count_layers,
    feature_shape,
    validate_spec,
)
from .layers import LAYER_KINDS, ArchSpec, Layer, spec_hash, spec_json_schema
from .parse import parse_spec
from .registry import LayerKind, register_kind

__all__ = [
    "ALLOWED_PARAM_MODULES",
    "DEFAULT_LIMITS",
    "LAYER_KINDS",
    "ArchSpec",
    "GlobalAvgPooling",
    "Layer",
    "LayerKind",
    "LayerRow",
    "PermuteDims",
    "PositionalEmbedding",
    "RecurrentBlock",
    "ResidualBlock",
    "SelfAttention",
    "SpecBody",
    "SpecError",
    "SpecIssue",
    "SpecLimits",
    "SpecReport",
    "TransformerLayer",
    "build_body",
    "count_layers",
    "feature_shape",
    "parse_spec",
    "register_kind",
    "spec_hash",
    "spec_json_schema",
    "validate_spec",
]
