"""Build the body of a validated spec as a ``torch.nn.Module``.

The body takes a batch ``(B, *info.input_shape)`` and returns
``(B, *feature_shape)``; the head is added by the training code. Only these
parameterised torch modules ever appear (the Alrao optimizer knows only them):
``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.BatchNorm1d``, ``nn.BatchNorm2d``,
``nn.LayerNorm``, ``nn.Embedding``, ``nn.LSTM``, ``nn.GRU``. Every module defined
here is parameter-free itself and only holds those as children.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.base import DatasetInfo
from .errors import SpecError
from .infer import DEFAULT_LIMITS, Node, Projection, Shape, SpecLimits, analyse
from .layers import (
    Activation,
    ArchSpec,
    Conv1d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    LeakyReLU,
    Linear,
    Norm,
    Permute,
    Pool1d,
    Pool2d,
    Recurrent,
    Residual,
)

ALLOWED_PARAM_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.Embedding,
    nn.LSTM,
    nn.GRU,
)

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


class SpecBody(nn.Sequential):
    """The built body: a ``Sequential`` that also records its per-sample shapes."""

    def __init__(self, modules: list[nn.Module], input_shape: Shape, feature_shape: Shape) -> None:
        super().__init__(*modules)
        self.input_shape = input_shape
        self.feature_shape = feature_shape


class PermuteDims(nn.Module):
    """Reorders per-sample dims; the batch dim stays first."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous() so following view-based ops never see strided memory.
        return x.permute(0, *(d + 1 for d in self.dims)).contiguous()

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class GlobalAvgPooling(nn.Module):
    """Mean over every per-sample dim after the channels: ``(B, C, ...)`` -> ``(B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


class RecurrentBlock(nn.Module):
    """Wraps ``nn.LSTM``/``nn.GRU`` (``batch_first``) and returns only the output tensor.

    ``rnn`` is the torch module itself (a direct child, so ``isinstance`` scans over
    ``modules()`` find it). ``return_last`` selects the final step ``(B, hidden)``
    instead of the whole sequence ``(B, T, hidden)``.
    """

    def __init__(self, rnn: nn.LSTM | nn.GRU, return_last: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_last = return_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return out[:, -1] if self.return_last else out

    def extra_repr(self) -> str:
        return f"return_last={self.return_last}"


class ResidualBlock(nn.Module):
    """``body(x) + skip(x)``; ``skip`` is ``nn.Identity`` or a linear/1x1-conv projection."""

    def __init__(self, body: nn.Sequential, skip: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def _projection(projection: Projection) -> nn.Module:
    if projection.kind == "identity":
        return nn.Identity()
    if projection.kind == "linear":
        return nn.Linear(projection.in_features, projection.out_features)
    if projection.kind == "conv1d":
        (stride,) = projection.stride
        return nn.Conv1d(projection.in_features, projection.out_features, kernel_size=1, stride=stride)
    height, width = projection.stride
    return nn.Conv2d(projection.in_features, projection.out_features, kernel_size=1, stride=(height, width))


def _module(node: Node, info: DatasetInfo) -> nn.Module:
    layer, shape = node.layer, node.in_shape
    if isinstance(layer, Linear):
        return nn.Linear(shape[-1], layer.out, bias=layer.bias)
    if isinstance(layer, Conv1d):
        return nn.Conv1d(
            shape[0],
            layer.out,
            kernel_size=layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            groups=layer.groups,
            bias=layer.bias,
        )
    if isinstance(layer, Conv2d):
        return nn.Conv2d(
            shape[0],
            layer.out,
            kernel_size=layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            groups=layer.groups,
            bias=layer.bias,
        )
    if isinstance(layer, Pool1d):
        pool1 = nn.MaxPool1d if layer.kind == "maxpool1d" else nn.AvgPool1d
        return pool1(layer.kernel, stride=layer.step, padding=layer.padding)
    if isinstance(layer, Pool2d):
        pool2 = nn.MaxPool2d if layer.kind == "maxpool2d" else nn.AvgPool2d
        return pool2(layer.kernel, stride=layer.step, padding=layer.padding)
    if isinstance(layer, GlobalAvgPool):
        return GlobalAvgPooling()
    if isinstance(layer, Norm):
        if layer.kind == "layernorm":
            return nn.LayerNorm(shape[-1])
        return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, Activation):
        return _ACTIVATIONS[layer.kind]()
    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Permute):
        return PermuteDims(layer.dims)
    if isinstance(layer, Embedding):
        assert info.vocab_size is not None  # guaranteed by validation
        return nn.Embedding(info.vocab_size, layer.dim)
    if isinstance(layer, Recurrent):
        rnn_type = nn.LSTM if layer.kind == "lstm" else nn.GRU
        rnn = rnn_type(shape[-1], layer.hidden, num_layers=layer.layers, batch_first=True)
        return RecurrentBlock(rnn, return_last=layer.returns == "last")
    if isinstance(layer, Residual):
        assert node.projection is not None  # set for every validated residual node
        body = nn.Sequential(*(_module(child, info) for child in node.children))
        return ResidualBlock(body, _projection(node.projection))
    raise AssertionError(f"unhandled layer kind {layer.kind!r}")  # pragma: no cover


def build_body(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> SpecBody:
    """Validate ``spec`` on ``info`` (raising :class:`SpecError`) and build its body.

    The result maps ``(B, *info.input_shape)`` to ``(B, *feature_shape)``; its
    parameter count equals ``validate_spec(...).body_params``. Initialisation is
    torch's default, so seed torch before calling for reproducible weights.
    """
    analysis = analyse(spec, info, limits)
    if analysis.report is None:
        raise SpecError(analysis.issues)
    modules = [_module(node, info) for node in analysis.nodes]
    return SpecBody(modules, analysis.report.input_shape, analysis.report.feature_shape)
