"""Shape inference and validation of an :class:`ArchSpec` against a dataset.

Shapes are per sample, channels first, without the batch dim (``(1, 40)``,
``(1, 8, 8)``, ``(64,)``), exactly like ``DatasetInfo.input_shape``. Inference walks
the layers once, checks every layer against the shape it receives and the limits,
and keeps going after a problem so that every issue is reported together. When a
layer's output shape cannot be known, later layers only get shape-free checks.

The same walk records, per layer, the input shape and the residual projection that
:func:`archscreen.core.spec.build_body` needs, so building can never disagree with
validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..data.base import DatasetInfo
from .errors import SpecError, SpecIssue
from .kinds.residual import Projection, ProjectionKind
from .layers import ArchSpec, Layer, LayerKind
from .registry import Shape, fmt_shape

__all__ = [
    "DEFAULT_LIMITS",
    "Analysis",
    "LayerRow",
    "Node",
    "Projection",
    "ProjectionKind",
    "Shape",
    "SpecLimits",
    "SpecReport",
    "Walker",
    "analyse",
    "count_layers",
    "feature_shape",
    "validate_spec",
]


@dataclass(frozen=True)
class SpecLimits:
    """Upper bounds that keep a screened architecture cheap enough to train.

    Attributes:
        max_layers: layer items in the whole spec, nested residual layers included
            (a ``residual`` counts as one plus its inner layers).
        max_params: trainable parameters of body plus ONE copy of the head.
        max_width: any ``out``/``hidden``/``dim``/``mlp`` (linear, conv, lstm/gru, embedding,
            attention, transformer_block).
        max_kernel: any conv or pooling kernel size (per dim).
    """

    max_layers: int = 64
    max_params: int = 20_000_000
    max_width: int = 8192
    max_kernel: int = 32


DEFAULT_LIMITS = SpecLimits()


class LayerRow(BaseModel):
    """One layer of a validated spec.

    ``params`` are the parameters the layer owns directly: for a ``residual`` only
    its projection (inner layers have their own rows), so the rows sum to the body.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    kind: str
    input_shape: Shape
    output_shape: Shape
    params: int


class SpecReport(BaseModel):
    """Result of :func:`validate_spec`: per-layer rows plus totals.

    ``num_params = body_params + head_params`` where the head is ONE
    ``Linear(feature_shape[-1], head_outputs)`` (the trainer may use several copies).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    dataset: str
    input_shape: Shape
    rows: tuple[LayerRow, ...]
    feature_shape: Shape
    head: Literal["classifier", "regression"]
    head_outputs: int
    body_params: int
    head_params: int
    num_params: int
    num_layers: int


@dataclass
class Node:
    """A validated layer: its input/output shapes, nested nodes and projection."""

    layer: Layer
    path: str
    in_shape: Shape
    out_shape: Shape
    children: list[Node] = field(default_factory=list)
    projection: Projection | None = None


@dataclass
class Analysis:
    """Everything one inference walk found (``nodes``/``report`` only if valid)."""

    issues: list[SpecIssue]
    nodes: list[Node]
    report: SpecReport | None


def count_layers(layers: tuple[Layer, ...]) -> int:
    """Layer items in ``layers``, counting every nested residual layer."""
    return sum(1 + count_layers(layer.sublayers()) for layer in layers)


class Walker:
    """One inference walk: the issues found, the rows so far, and whether input is still token ids.

    Kinds call back into it: :meth:`leaf` for a plain layer, :meth:`sequence` and
    :meth:`reserve_row` for a nesting kind (``residual``).
    """

    def __init__(self, info: DatasetInfo, limits: SpecLimits) -> None:
        self.info = info
        self.limits = limits
        self.issues: list[SpecIssue] = []
        self.rows: list[LayerRow | None] = []
        self.tokens = False

    def issue(self, path: str, message: str) -> None:
        self.issues.append(SpecIssue(path, message))

    def reserve_row(self) -> int:
        """A placeholder row (filled by the caller) so a block's row precedes its inner rows."""
        self.rows.append(None)
        return len(self.rows) - 1

    def sequence(
        self, layers: tuple[LayerKind, ...], prefix: str, shape: Shape | None, tokens: bool
    ) -> tuple[Shape | None, bool, list[Node]]:
        nodes: list[Node] = []
        for index, layer in enumerate(layers):
            path = f"{prefix}[{index}]"
            shape, tokens, node = self.layer(layer, path, shape, tokens)
            if node is not None:
                nodes.append(node)
        return shape, tokens, nodes

    def layer(
        self, layer: LayerKind, path: str, shape: Shape | None, tokens: bool
    ) -> tuple[Shape | None, bool, Node | None]:
        kpath = f"{path}.{layer.kind}"
        self.static_checks(layer, kpath)
        if shape is not None and tokens and not layer.takes_tokens:
            self.issue(
                kpath,
                f"input is integer token ids of shape {fmt_shape(shape)}: the first layer must be embedding",
            )
            shape = None
        if shape is None:
            # Unknown input after an earlier problem: still run shape-free checks inside blocks.
            layer.walk_unknown(self, kpath)
            return None, False, None
        self.tokens = tokens
        out, node = layer.walk(self, path, kpath, shape)
        return out, False, node

    def leaf(self, layer: LayerKind, path: str, kpath: str, shape: Shape) -> tuple[Shape | None, Node | None]:
        """Infer a plain layer, record its row and node."""
        out, params = layer.infer(self, kpath, shape)
        if out is None:
            return None, None
        self.rows.append(
            LayerRow(path=path, kind=layer.kind, input_shape=shape, output_shape=out, params=params)
        )
        return out, Node(layer=layer, path=path, in_shape=shape, out_shape=out)

    def static_checks(self, layer: LayerKind, kpath: str) -> None:
        """Shape-independent checks: the kind's own, then widths and kernels against the limits."""
        layer.check(self, kpath)
        for name, width in layer.widths().items():
            if width > self.limits.max_width:
                limit = self.limits.max_width
                self.issue(f"{kpath}.{name}", f"{width:,} exceeds the width limit of {limit:,}")
        kernels = layer.kernels()
        if any(k > self.limits.max_kernel for k in kernels):
            self.issue(
                f"{kpath}.kernel", f"kernel {max(kernels)} exceeds the limit of {self.limits.max_kernel}"
            )

    # ---- head --------------------------------------------------------------------------

    def head(self, spec: ArchSpec, features: Shape | None, tokens: bool) -> tuple[int, int]:
        """Check head vs task and the feature shape; return (head outputs, head params)."""
        info = self.info
        if spec.head == "classifier" and info.task not in ("classification", "language_model"):
            self.issue(
                "head",
                f"classifier needs a classification or language_model dataset, "
                f"but {info.name!r} is a {info.task} task: use head: regression",
            )
        if spec.head == "regression" and info.task != "regression":
            self.issue(
                "head",
                f"regression needs a regression dataset, but {info.name!r} is a {info.task} task: "
                "use head: classifier",
            )
        outputs = info.target_dim if info.task == "regression" else info.num_classes
        if outputs is None:
            what = "target_dim" if info.task == "regression" else "num_classes"
            self.issue("head", f"dataset {info.name!r} defines no {what}")
        if features is None:
            return 0, 0
        if tokens:
            self.issue("head", f"features are still integer token ids {fmt_shape(features)}: add embedding")
            return 0, 0
        if info.task == "language_model":
            steps = info.input_shape[0] if info.input_shape else 0
            if len(features) != 2 or features[0] != steps:
                self.issue(
                    "head",
                    f"{spec.head} on a language_model dataset needs per-step features ({steps}, F), "
                    f"got {fmt_shape(features)}: keep the time axis (e.g. lstm return: sequence)",
                )
                return 0, 0
        elif len(features) != 1:
            self.issue("head", f"{spec.head} needs flat features, got {fmt_shape(features)}: add flatten")
            return 0, 0
        if outputs is None:
            return 0, 0
        return outputs, features[-1] * outputs + outputs


def analyse(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> Analysis:
    """Run the inference walk; never raises for spec problems (they are in ``issues``)."""
    walker = Walker(info, limits)
    num_layers = count_layers(spec.layers)
    if num_layers > limits.max_layers:
        walker.issue("layers", f"{num_layers} layers exceed the limit of {limits.max_layers}")
    tokens = info.input_kind == "tokens"
    features, tokens, nodes = walker.sequence(spec.layers, "layers", tuple(info.input_shape), tokens)
    head_outputs, head_params = walker.head(spec, features, tokens)
    rows = [row for row in walker.rows if row is not None]
    body_params = sum(row.params for row in rows)
    if features is not None and body_params + head_params > limits.max_params:
        walker.issue(
            "spec",
            f"{body_params + head_params:,} parameters exceed the limit of {limits.max_params:,}",
        )
    if walker.issues or features is None:
        return Analysis(walker.issues, [], None)
    report = SpecReport(
        name=spec.name,
        dataset=info.name,
        input_shape=tuple(info.input_shape),
        rows=tuple(rows),
        feature_shape=features,
        head=spec.head,
        head_outputs=head_outputs,
        body_params=body_params,
        head_params=head_params,
        num_params=body_params + head_params,
        num_layers=num_layers,
    )
    return Analysis([], nodes, report)


def validate_spec(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> SpecReport:
    """Infer every shape of ``spec`` on ``info.input_shape`` and check it, before training.

    Raises :class:`SpecError` listing ALL problems (shape mismatches, group
    divisibility, kernels larger than their input, head vs task, feature shape
    entering the head, limits). Returns a :class:`SpecReport` otherwise.
    """
    analysis = analyse(spec, info, limits)
    if analysis.report is None:
        raise SpecError(analysis.issues)
    return analysis.report


def feature_shape(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> Shape:
    """The per-sample shape entering the head (validates first; raises :class:`SpecError`)."""
    return validate_spec(spec, info, limits).feature_shape
