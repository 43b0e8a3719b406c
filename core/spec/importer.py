"""Import a PyTorch ``nn.Module`` as a spec: trace it with ``torch.fx``, map every node to a kind.

    imported = import_module(Net(), input_shape=(1, 28, 28))   # ImportRefused if not expressible
    imported.spec, imported.info                                # ArchSpec + the DatasetInfo it fits
    body = build_body(imported.spec, imported.info); head = nn.Linear(...)
    imported.copy_weights(body, head)                          # same outputs as Net()

Each registered kind declares the torch modules, functions and tensor methods it maps from
(``torch_sources``) and turns a node into a layer (``from_torch``). The graph must be a chain
of such nodes with residual diamonds (``x + body(x)`` or ``proj(x) + body(x)``), ending in an
``nn.Linear`` that becomes the spec's head (the trainer supplies its own head, sized by the
dataset). Anything else is refused with the node's name and a one-line reason.

This runs the user's code (tracing executes ``forward``): it is for the client only; the
service takes specs, never modules.
"""

from __future__ import annotations

import importlib
import operator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..data.base import DatasetInfo
from .build import build_body
from .errors import SpecError
from .kinds.residual import Residual, ResidualBlock
from .layers import ArchSpec
from .registry import ImportRefused, LayerKind, Mapped, Shape, TorchSource, kind_classes

__all__ = ["ImportRefused", "ImportedLayer", "ImportedSpec", "import_module", "load_module"]

# The imported spec must reproduce the module's output on the tracing sample to this much.
OUTPUT_TOLERANCE = 1e-5
_SAMPLE_BATCH = 2


@dataclass
class ImportedLayer:
    """One spec layer and where its weights come from (a residual: its children and skip)."""

    layer: LayerKind
    weights: nn.Module | None = None
    children: list[ImportedLayer] = field(default_factory=list)
    skip: nn.Module | None = None


@dataclass
class ImportedSpec:
    """An imported module: the spec, the dataset shape it fits, and the weights' origins."""

    spec: ArchSpec
    info: DatasetInfo
    layers: list[ImportedLayer]
    head: nn.Linear

    def copy_weights(self, body: nn.Sequential, head: nn.Linear) -> None:
        """Copy the source module's weights into a body built from :attr:`spec` and a head."""
        _copy(self.layers, body)
        head.load_state_dict(self.head.state_dict())


def _copy(entries: list[ImportedLayer], modules: nn.Sequential) -> None:
    for entry, built in zip(entries, modules, strict=True):
        if isinstance(built, ResidualBlock):
            _copy(entry.children, built.body)
            if entry.skip is not None:
                built.skip.load_state_dict(entry.skip.state_dict())
        elif entry.weights is not None:
            entry.layer.copy_weights(entry.weights, built)


def _sources() -> dict[Any, type[LayerKind]]:
    """Torch module class, function or method name -> the kind that maps it."""
    table: dict[Any, type[LayerKind]] = {}
    for cls in kind_classes():
        for source in cls.torch_sources:
            if source in table:
                raise TypeError(f"{source!r} is claimed by {table[source].__name__} and {cls.__name__}")
            table[source] = cls
    return table


def _describe(node: torch.fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return f"method .{target}()"
    name = getattr(target, "__name__", None) or str(target)
    for namespace, prefix in ((torch, "torch"), (torch.nn.functional, "torch.nn.functional"), (operator, "")):
        if getattr(namespace, name, None) is target:
            return f"function {prefix}.{name}" if prefix else f"operator {name}"
    return f"function {getattr(target, '__module__', '?')}.{name}"


class _GraphReader:
    """Turns the traced graph, from the output back to the input, into imported layers."""

    def __init__(self, traced: torch.fx.GraphModule, modules: dict[str, nn.Module]) -> None:
        self.traced = traced
        self.modules = modules
        self.table = _sources()
        self.mapped: dict[torch.fx.Node, Mapped] = {}

    def shape(self, node: torch.fx.Node) -> Shape:
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)  # absent for tuple outputs
        return () if shape is None else tuple(shape[1:])

    def kind_for(self, node: torch.fx.Node) -> type[LayerKind]:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            for base in type(module).__mro__:
                if base in self.table:
                    return self.table[base]
            raise ImportRefused(node.name, f"no layer kind maps module {type(module).__name__}")
        if node.op in ("call_function", "call_method") and node.target in self.table:
            return self.table[node.target]
        if node.op == "get_attr":
            raise ImportRefused(node.name, f"reads {node.target!r} directly: only modules may hold weights")
        if node.op == "placeholder":
            raise ImportRefused(node.name, "a branch reaches the input outside a residual block")
        raise ImportRefused(node.name, f"no layer kind maps {_describe(node)}")

    def map(self, node: torch.fx.Node) -> Mapped:
        if node not in self.mapped:
            module = self.modules[str(node.target)] if node.op == "call_module" else None
            first = node.args[0] if node.args else None
            in_shape = self.shape(first) if isinstance(first, torch.fx.Node) else ()
            source = TorchSource(node, module, in_shape, self.shape(node), self.modules)
            self.mapped[node] = self.kind_for(node).from_torch(source)
        return self.mapped[node]

    def is_add(self, node: torch.fx.Node) -> bool:
        return node.op in ("call_function", "call_method") and self.table.get(node.target) is Residual

    def upstream(self, node: torch.fx.Node) -> torch.fx.Node:
        """The node this one's chain continues from (an add's fork, a layer's input)."""
        return self.fork(node)[0] if self.is_add(node) else self.map(node).input

    def chain(self, value: torch.fx.Node, stop: torch.fx.Node) -> list[ImportedLayer]:
        """The layers computing ``value`` from ``stop``, in order."""
        layers: list[ImportedLayer] = []
        while value is not stop:
            if self.is_add(value):
                layers.append(self.residual(value))
            else:
                mapped = self.map(value)
                weights = mapped.weights or (
                    self.modules[str(value.target)] if value.op == "call_module" else None
                )
                layers.append(ImportedLayer(mapped.layer, weights))
            value = self.upstream(value)
        return layers[::-1]

    def lineage(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        nodes = [node]
        while nodes[-1].op != "placeholder":
            nodes.append(self.upstream(nodes[-1]))
        return nodes

    def fork(self, add: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node, torch.fx.Node]:
        """``(x, a, b)`` for ``add = a + b`` where both branches start from ``x``."""
        if len(add.args) != 2 or add.kwargs or not all(isinstance(a, torch.fx.Node) for a in add.args):
            raise ImportRefused(
                add.name, "only the sum of two traced tensors is expressible (a residual block)"
            )
        a, b = add.args
        assert isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node)
        seen_b = set(self.lineage(b))
        x = next(node for node in self.lineage(a) if node in seen_b)
        return x, a, b

    def residual(self, add: torch.fx.Node) -> ImportedLayer:
        x, a, b = self.fork(add)
        branch_a, branch_b = self.chain(a, x), self.chain(b, x)
        one_each = len(branch_a) == len(branch_b) == 1
        if len(branch_b) > len(branch_a) or (
            one_each and _is_projection(branch_a[0].weights) and not _is_projection(branch_b[0].weights)
        ):
            branch_a, branch_b = branch_b, branch_a  # branch_b is the skip path: empty or one projection
        if len(branch_b) > 1:
            raise ImportRefused(
                add.name, "both branches of the sum hold several layers: one must be the skip path"
            )
        skip = branch_b[0].weights if branch_b else None
        if branch_b and skip is None:
            raise ImportRefused(add.name, "a residual skip path must be the identity or a projection module")
        block = Residual.from_branches(add.name, tuple(entry.layer for entry in branch_a), skip)
        return ImportedLayer(block, children=branch_a, skip=skip)


def _is_projection(module: nn.Module | None) -> bool:
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return set(module.kernel_size) == {1}
    return isinstance(module, nn.Linear)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as exc:  # tracing runs user code: any failure is "cannot trace"
        reason = " ".join(str(exc).split())[:200]
        raise ImportRefused(
            "<trace>", f"torch.fx cannot trace the module: {type(exc).__name__}: {reason}"
        ) from None


def _sample(traced: torch.fx.GraphModule, input_shape: Shape) -> tuple[torch.Tensor, int | None]:
    """A tracing input: token ids when the input feeds an ``nn.Embedding``, else floats."""
    (placeholder,) = [n for n in traced.graph.nodes if n.op == "placeholder"]
    for user in placeholder.users:
        module = traced.get_submodule(str(user.target)) if user.op == "call_module" else None
        if isinstance(module, nn.Embedding):
            vocab = module.num_embeddings
            return torch.randint(
                0, vocab, (_SAMPLE_BATCH, *input_shape), generator=torch.Generator().manual_seed(0)
            ), vocab
    return torch.randn(_SAMPLE_BATCH, *input_shape, generator=torch.Generator().manual_seed(0)), None


def _propagate(traced: torch.fx.GraphModule, sample: torch.Tensor) -> None:
    """Record every node's shape (``tensor_meta``) by running the graph once on ``sample``."""
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(sample)
    except Exception as exc:  # the user's forward failed on this shape
        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split())[:200]
        shape = tuple(sample.shape[1:])
        raise ImportRefused("<input>", f"the module fails on input shape {shape}: {reason}") from None


def _head(reader: _GraphReader) -> tuple[torch.fx.Node, nn.Linear]:
    """The output's ``nn.Linear`` (it becomes the spec's head) and the node feeding it."""
    (output,) = [n for n in reader.traced.graph.nodes if n.op == "output"]
    result = output.args[0]
    if not isinstance(result, torch.fx.Node):
        raise ImportRefused(output.name, "the module must return one tensor")
    module = reader.modules.get(str(result.target)) if result.op == "call_module" else None
    if not isinstance(module, nn.Linear):
        raise ImportRefused(result.name, "the output must come from an nn.Linear: it becomes the spec's head")
    features = result.args[0]
    if len(result.args) != 1 or not isinstance(features, torch.fx.Node):
        raise ImportRefused(result.name, "the head must take one traced tensor")
    return features, module


def _info(
    name: str,
    input_shape: Shape,
    vocab: int | None,
    features: Shape,
    head: nn.Linear,
    kind: Literal["classifier", "regression"],
) -> DatasetInfo:
    if kind == "regression":
        return DatasetInfo(
            name=name, task="regression", input_shape=input_shape, target_dim=head.out_features
        )
    task: Literal["classification", "language_model"] = (
        "language_model" if len(features) == 2 else "classification"
    )
    return DatasetInfo(
        name=name,
        task=task,
        input_shape=input_shape,
        input_kind="float" if vocab is None else "tokens",
        num_classes=head.out_features,
        vocab_size=vocab,
    )


def _check_reproduces(model: nn.Module, imported: ImportedSpec, sample: torch.Tensor) -> None:
    """Build the spec, copy the weights, and require the module's output on ``sample``."""
    try:
        body = build_body(imported.spec, imported.info)
    except SpecError as exc:
        first = exc.issues[0]
        raise ImportRefused(first.path, f"the imported spec does not validate: {first.message}") from None
    head = nn.Linear(
        imported.head.in_features, imported.head.out_features, bias=imported.head.bias is not None
    )
    imported.copy_weights(body, head)
    built = nn.Sequential(body, head).eval()
    with torch.no_grad():
        want, got = model(sample), built(sample)
    if want.shape != got.shape or not torch.allclose(want, got, atol=OUTPUT_TOLERANCE, rtol=OUTPUT_TOLERANCE):
        gap = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
        raise ImportRefused(
            "<output>", f"the imported spec does not reproduce the module's output (max gap {gap:.3g})"
        )


def import_module(
    model: nn.Module,
    input_shape: Shape,
    *,
    name: str = "imported",
    head: Literal["classifier", "regression"] = "classifier",
) -> ImportedSpec:
    """Trace ``model`` on one per-sample ``input_shape`` and map it to a spec.

    The last operation must be an ``nn.Linear`` (the head, left out of the spec's layers). The
    result is checked: the spec is built, the weights copied, and the output compared on a
    sample. Raises :class:`ImportRefused` (``node: reason``) for anything the DSL cannot express.
    """
    training = model.training
    model.eval()
    try:
        traced = _trace(model)
        placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ImportRefused("<inputs>", f"the module takes {len(placeholders)} inputs; a spec has one")
        sample, vocab = _sample(traced, input_shape)
        _propagate(traced, sample)
        reader = _GraphReader(traced, dict(model.named_modules()))
        features, head_module = _head(reader)
        layers = reader.chain(features, placeholders[0])
        spec = ArchSpec(name=name, layers=tuple(entry.layer for entry in layers), head=head)
        info = _info(name, tuple(input_shape), vocab, reader.shape(features), head_module, head)
        imported = ImportedSpec(spec, info, layers, head_module)
        _check_reproduces(model, imported, sample)
        return imported
    finally:
        model.train(training)


def load_module(target: str) -> nn.Module:
    """``pkg.mod:Name`` -> an ``nn.Module``: a module instance, or a class/factory called with no
    arguments. Raises ``ValueError`` with one line when it cannot."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected pkg.module:Name, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # importing runs user code
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(f"{target}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, nn.Module):
        raise ValueError(f"{target} is not a torch.nn.Module (got {type(obj).__name__})")
    return obj
