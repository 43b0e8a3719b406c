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

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..data.base import DatasetInfo
from .errors import SpecError, SpecIssue
from .layers import (
    Activation,
    ArchSpec,
    Attention,
    Conv1d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    Linear,
    Norm,
    Permute,
    Pool1d,
    Pool2d,
    Positional,
    Recurrent,
    Residual,
    TransformerBlock,
)

Shape = tuple[int, ...]


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


@dataclass
class Node:
    """A validated layer: its input/output shapes, nested nodes and projection."""

    layer: Layer
    path: str
    in_shape: Shape
    out_shape: Shape
    children: list[Node] = field(default_factory=list)
    projection: Projection | None = None
    # attention/transformer_block: the effective mask after ``causal: null`` met the task.
    causal: bool = False


@dataclass
class Analysis:
    """Everything one inference walk found (``nodes``/``report`` only if valid)."""

    issues: list[SpecIssue]
    nodes: list[Node]
    report: SpecReport | None


def count_layers(layers: tuple[Layer, ...]) -> int:
    """Layer items in ``layers``, counting every nested residual layer."""
    return sum(1 + (count_layers(layer.layers) if isinstance(layer, Residual) else 0) for layer in layers)


def _fmt(shape: Shape) -> str:
    return str(tuple(shape))


def _window(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class _Walker:
    def __init__(self, info: DatasetInfo, limits: SpecLimits) -> None:
        self.info = info
        self.limits = limits
        self.issues: list[SpecIssue] = []
        self.rows: list[LayerRow | None] = []

    def issue(self, path: str, message: str) -> None:
        self.issues.append(SpecIssue(path, message))

    # ---- sequences -------------------------------------------------------------------

    def sequence(
        self, layers: tuple[Layer, ...], prefix: str, shape: Shape | None, tokens: bool
    ) -> tuple[Shape | None, bool, list[Node]]:
        nodes: list[Node] = []
        for index, layer in enumerate(layers):
            path = f"{prefix}[{index}]"
            shape, tokens, node = self.layer(layer, path, shape, tokens)
            if node is not None:
                nodes.append(node)
        return shape, tokens, nodes

    def layer(
        self, layer: Layer, path: str, shape: Shape | None, tokens: bool
    ) -> tuple[Shape | None, bool, Node | None]:
        kpath = f"{path}.{layer.kind}"
        self.static_checks(layer, kpath)
        if shape is not None and tokens and not isinstance(layer, Embedding):
            self.issue(
                kpath, f"input is integer token ids of shape {_fmt(shape)}: the first layer must be embedding"
            )
            shape = None
        if shape is None:
            # Unknown input after an earlier problem: still run shape-free checks inside blocks.
            if isinstance(layer, Residual):
                self.sequence(layer.layers, f"{kpath}.layers", None, False)
            return None, False, None
        if isinstance(layer, Residual):
            return self.residual(layer, path, kpath, shape)
        causal = False
        if isinstance(layer, Embedding):
            out, params = self.embedding(layer, kpath, shape, tokens)
        elif isinstance(layer, Attention | TransformerBlock | Positional):
            out, params = self.sequence_layer(layer, kpath, shape)
            if isinstance(layer, Attention | TransformerBlock):
                causal = self.causal(layer, kpath)
        else:
            out, params = self.simple(layer, kpath, shape)
        if out is None:
            return None, False, None
        row = LayerRow(path=path, kind=layer.kind, input_shape=shape, output_shape=out, params=params)
        self.rows.append(row)
        return out, False, Node(layer=layer, path=path, in_shape=shape, out_shape=out, causal=causal)

    # ---- shape-independent checks ----------------------------------------------------

    def static_checks(self, layer: Layer, kpath: str) -> None:
        widths: dict[str, int] = {}
        kernels: tuple[int, ...] = ()
        if isinstance(layer, Linear | Conv1d | Conv2d):
            widths["out"] = layer.out
        if isinstance(layer, Embedding):
            widths["dim"] = layer.dim
        if isinstance(layer, Recurrent):
            widths["hidden"] = layer.hidden
        if isinstance(layer, Attention | TransformerBlock):
            widths["dim"] = layer.dim
            if layer.dim % layer.heads:
                self.issue(f"{kpath}.heads", f"must divide dim ({layer.dim}), got {layer.heads}")
        if isinstance(layer, TransformerBlock):
            widths["mlp"] = layer.hidden
        if isinstance(layer, Conv1d | Pool1d):
            kernels = (layer.kernel,)
        if isinstance(layer, Conv2d | Pool2d):
            kernels = layer.kernel
        for name, width in widths.items():
            if width > self.limits.max_width:
                limit = self.limits.max_width
                self.issue(f"{kpath}.{name}", f"{width:,} exceeds the width limit of {limit:,}")
        if any(k > self.limits.max_kernel for k in kernels):
            self.issue(
                f"{kpath}.kernel", f"kernel {max(kernels)} exceeds the limit of {self.limits.max_kernel}"
            )

    # ---- per-layer shape rules -------------------------------------------------------

    def embedding(self, layer: Embedding, kpath: str, shape: Shape, tokens: bool) -> tuple[Shape | None, int]:
        if not tokens:
            self.issue(
                kpath,
                f"needs integer token ids, but the input {_fmt(shape)} is float "
                f"(dataset {self.info.name!r} has input_kind {self.info.input_kind!r})",
            )
            return None, 0
        vocab = self.info.vocab_size
        if vocab is None:
            self.issue(kpath, f"dataset {self.info.name!r} defines no vocab_size")
            return None, 0
        return (*shape, layer.dim), vocab * layer.dim

    def causal(self, layer: Attention | TransformerBlock, kpath: str) -> bool:
        """The effective ``causal`` flag: ``null`` follows the task; a leak is refused.

        On a ``language_model`` dataset the target at step t is the input at step t+1, so
        attention that sees later steps would read the answer: ``causal: false`` there is
        an error rather than a silently perfect (and useless) model.
        """
        lm = self.info.task == "language_model"
        if layer.causal is None:
            return lm
        if lm and not layer.causal:
            self.issue(
                f"{kpath}.causal",
                f"false on the language_model dataset {self.info.name!r} lets step t see step t+1, "
                "its own target: use causal: true (or omit it)",
            )
        return layer.causal

    def sequence_layer(
        self, layer: Attention | TransformerBlock | Positional, kpath: str, shape: Shape
    ) -> tuple[Shape | None, int]:
        """Output shape and parameters of attention, transformer_block and positional.

        All three take a ``(T, F)`` sequence. Parameters (every ``Linear`` has a bias):
        attention ``3·(F·dim + dim) + dim·dim + dim``; transformer_block two LayerNorms
        (``4·dim``), attention with ``F = dim``, and the MLP ``2·dim·mlp + mlp + dim``;
        positional ``max_len·F``.
        """
        if len(shape) != 2:
            self.issue(kpath, f"{layer.kind} needs a sequence input (T, F), got {_fmt(shape)}")
            return None, 0
        steps, features = shape
        if isinstance(layer, Positional):
            max_len = steps if layer.max_len is None else layer.max_len
            if max_len < steps:
                self.issue(f"{kpath}.max_len", f"{max_len} is shorter than the input sequence length {steps}")
                return None, 0
            return shape, max_len * features
        if layer.dim % layer.heads:
            return None, 0  # reported by static_checks
        if isinstance(layer, Attention):
            dim = layer.dim
            return (steps, dim), 3 * (features * dim + dim) + dim * dim + dim
        if features != layer.dim:
            self.issue(
                f"{kpath}.dim",
                f"must equal the input features ({features}): the residual stream keeps its width "
                f"(add linear: {layer.dim} before the block), got {layer.dim}",
            )
            return None, 0
        dim, hidden = layer.dim, layer.hidden
        attention = 4 * (dim * dim + dim)
        mlp = dim * hidden + hidden + hidden * dim + dim
        return shape, 2 * (2 * dim) + attention + mlp

    def simple(self, layer: Layer, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        """Output shape and own parameter count of every non-residual, non-embedding layer."""
        rank = len(shape)
        if isinstance(layer, Linear):
            if rank not in (1, 2):
                self.issue(kpath, f"linear needs input (F,) or (T, F), got {_fmt(shape)}: add flatten")
                return None, 0
            return (*shape[:-1], layer.out), shape[-1] * layer.out + (layer.out if layer.bias else 0)
        if isinstance(layer, Conv1d | Conv2d):
            return self.conv(layer, kpath, shape)
        if isinstance(layer, Pool1d | Pool2d):
            return self.pool(layer, kpath, shape)
        if isinstance(layer, GlobalAvgPool):
            if rank not in (2, 3):
                self.issue(kpath, f"global_avgpool needs input (C, L) or (C, H, W), got {_fmt(shape)}")
                return None, 0
            return (shape[0],), 0
        if isinstance(layer, Norm):
            if layer.kind == "layernorm":
                return shape, 2 * shape[-1]
            if rank not in (1, 2, 3):
                self.issue(kpath, f"batchnorm needs input (C,), (C, L) or (C, H, W), got {_fmt(shape)}")
                return None, 0
            return shape, 2 * shape[0]
        if isinstance(layer, Dropout | Activation | LeakyReLU):
            return shape, 0
        if isinstance(layer, Flatten):
            return (math.prod(shape),), 0
        if isinstance(layer, Permute):
            if sorted(layer.dims) != list(range(rank)):
                self.issue(
                    f"{kpath}.dims",
                    f"{list(layer.dims)} is not a permutation of {list(range(rank))} for input {_fmt(shape)}",
                )
                return None, 0
            return tuple(shape[d] for d in layer.dims), 0
        if isinstance(layer, Recurrent):
            if rank != 2:
                self.issue(kpath, f"{layer.kind} needs input (T, F), got {_fmt(shape)}")
                return None, 0
            gates = 4 if layer.kind == "lstm" else 3
            params = 0
            features = shape[1]
            for _ in range(layer.layers):
                # weight_ih, weight_hh, bias_ih, bias_hh per stacked layer
                params += gates * layer.hidden * (features + layer.hidden) + 2 * gates * layer.hidden
                features = layer.hidden
            out = (shape[0], layer.hidden) if layer.returns == "sequence" else (layer.hidden,)
            return out, params
        raise AssertionError(f"unhandled layer kind {layer.kind!r}")  # pragma: no cover

    def conv(self, layer: Conv1d | Conv2d, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        kernel: tuple[int, ...]
        stride: tuple[int, ...]
        padding: tuple[int, ...]
        dims: tuple[str, ...]
        if isinstance(layer, Conv1d):
            want, dims = 2, ("length",)
            kernel, stride, padding = (layer.kernel,), (layer.stride,), (layer.padding,)
        else:
            want, dims = 3, ("height", "width")
            kernel, stride, padding = layer.kernel, layer.stride, layer.padding
        if len(shape) != want:
            layout = "(C, L)" if want == 2 else "(C, H, W)"
            self.issue(kpath, f"{layer.kind} needs input {layout}, got {_fmt(shape)}")
            return None, 0
        channels = shape[0]
        if channels % layer.groups:
            self.issue(f"{kpath}.groups", f"input channels {channels} not divisible by groups {layer.groups}")
        if layer.out % layer.groups:
            self.issue(f"{kpath}.groups", f"out {layer.out} not divisible by groups {layer.groups}")
        spatial = self.windows(kpath, shape[1:], dims, kernel, stride, padding)
        if spatial is None:
            return None, 0
        params = layer.out * (channels // layer.groups) * math.prod(kernel) + (layer.out if layer.bias else 0)
        return (layer.out, *spatial), params

    def pool(self, layer: Pool1d | Pool2d, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        kernel: tuple[int, ...]
        stride: tuple[int, ...]
        padding: tuple[int, ...]
        dims: tuple[str, ...]
        if isinstance(layer, Pool1d):
            want, dims = 2, ("length",)
            kernel, stride, padding = (layer.kernel,), (layer.step,), (layer.padding,)
        else:
            want, dims = 3, ("height", "width")
            kernel, stride, padding = layer.kernel, layer.step, layer.padding
        if len(shape) != want:
            layout = "(C, L)" if want == 2 else "(C, H, W)"
            self.issue(kpath, f"{layer.kind} needs input {layout}, got {_fmt(shape)}")
            return None, 0
        # torch refuses pooling padding above half the kernel.
        if any(p > k // 2 for p, k in zip(padding, kernel, strict=True)):
            self.issue(f"{kpath}.padding", f"padding {max(padding)} must be at most half the kernel")
            return None, 0
        spatial = self.windows(kpath, shape[1:], dims, kernel, stride, padding)
        return (None, 0) if spatial is None else ((shape[0], *spatial), 0)

    def windows(
        self,
        kpath: str,
        sizes: Shape,
        dims: tuple[str, ...],
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
    ) -> Shape | None:
        out: list[int] = []
        ok = True
        for size, name, k, s, p in zip(sizes, dims, kernel, stride, padding, strict=True):
            padded = size + 2 * p
            if k > padded:
                with_padding = f" (padding {p} included)" if p else ""
                self.issue(f"{kpath}.kernel", f"kernel {k} larger than input {name} {padded}{with_padding}")
                ok = False
            else:
                out.append(_window(size, k, s, p))
        return tuple(out) if ok else None

    # ---- residual blocks -------------------------------------------------------------

    def residual(
        self, layer: Residual, path: str, kpath: str, shape: Shape
    ) -> tuple[Shape | None, bool, Node | None]:
        slot = len(self.rows)
        self.rows.append(None)  # the block's row goes before its inner rows
        body_out, _, children = self.sequence(layer.layers, f"{kpath}.layers", shape, False)
        if body_out is None:
            return None, False, None
        projection = self.projection(layer, kpath, shape, body_out)
        if projection is None:
            return None, False, None
        self.rows[slot] = LayerRow(
            path=path, kind="residual", input_shape=shape, output_shape=body_out, params=projection.params
        )
        node = Node(layer, path, shape, body_out, children=children, projection=projection)
        return body_out, False, node

    def projection(self, layer: Residual, kpath: str, x: Shape, y: Shape) -> Projection | None:
        """Pick the skip path mapping input ``x`` onto body output ``y`` (rules in the docs)."""
        mode = layer.projection
        ppath = f"{kpath}.projection"
        if mode in ("auto", "none") and x == y:
            return Projection("identity")
        if mode == "none":
            self.issue(ppath, f"body output {_fmt(y)} differs from input {_fmt(x)}: use projection auto")
            return None
        if len(x) != len(y):
            self.issue(ppath, f"body changes the rank from {_fmt(x)} to {_fmt(y)}: no projection matches")
            return None
        if mode == "auto":
            # Rank 2 is ambiguous: (C, L) for convolutions, (T, F) for sequences. A block
            # with 1-D convs/pools is treated as (C, L); otherwise as features on the last dim.
            conv_like = any(isinstance(inner, Conv1d | Pool1d) for inner in layer.layers)
            if len(x) == 3 or (len(x) == 2 and conv_like):
                mode = "conv"
            elif x[:-1] == y[:-1]:
                mode = "linear"
            else:
                self.issue(ppath, f"cannot project {_fmt(x)} to {_fmt(y)}: only the last dim may change")
                return None
        if mode == "linear":
            if x[:-1] != y[:-1]:
                self.issue(
                    ppath, f"linear projection changes only the last dim, cannot map {_fmt(x)} to {_fmt(y)}"
                )
                return None
            return Projection("linear", x[-1], y[-1])
        # mode == "conv": a 1x1 convolution whose stride reproduces the body's spatial size.
        if len(x) not in (2, 3):
            self.issue(ppath, f"conv projection needs input (C, L) or (C, H, W), got {_fmt(x)}")
            return None
        strides: list[int] = []
        for size, target in zip(x[1:], y[1:], strict=True):
            stride = next((s for s in range(1, size + 1) if (size - 1) // s + 1 == target), None)
            if stride is None:
                self.issue(
                    ppath, f"no strided 1x1 conv maps {_fmt(x)} to {_fmt(y)} (spatial {size} -> {target})"
                )
                return None
            strides.append(stride)
        kind: ProjectionKind = "conv1d" if len(x) == 2 else "conv2d"
        return Projection(kind, x[0], y[0], tuple(strides))

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
            self.issue("head", f"features are still integer token ids {_fmt(features)}: add embedding")
            return 0, 0
        if info.task == "language_model":
            steps = info.input_shape[0] if info.input_shape else 0
            if len(features) != 2 or features[0] != steps:
                self.issue(
                    "head",
                    f"{spec.head} on a language_model dataset needs per-step features ({steps}, F), "
                    f"got {_fmt(features)}: keep the time axis (e.g. lstm return: sequence)",
                )
                return 0, 0
        elif len(features) != 1:
            self.issue("head", f"{spec.head} needs flat features, got {_fmt(features)}: add flatten")
            return 0, 0
        if outputs is None:
            return 0, 0
        return outputs, features[-1] * outputs + outputs


def analyse(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> Analysis:
    """Run the inference walk; never raises for spec problems (they are in ``issues``)."""
    walker = _Walker(info, limits)
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
