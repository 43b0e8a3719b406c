"""Build the body of a validated spec as a ``torch.nn.Module``.

The body takes a batch ``(B, *info.input_shape)`` and returns
``(B, *feature_shape)``; the head is added by the training code. Only these
parameterised torch modules ever appear (the Alrao optimizer knows only them):
``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.BatchNorm1d``, ``nn.BatchNorm2d``,
``nn.LayerNorm``, ``nn.Embedding``, ``nn.LSTM``, ``nn.GRU``. Every module defined
here is parameter-free itself and only holds those as children (attention, the
transformer block and the positional embedding included: their weights live in child
``nn.Linear``/``nn.LayerNorm``/``nn.Embedding`` modules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import DatasetInfo
from .errors import SpecError
from .infer import DEFAULT_LIMITS, Node, Projection, Shape, SpecLimits, analyse
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


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(B, T, F)`` -> ``(B, T, dim)``.

    Four separate ``nn.Linear`` (``q``, ``k``, ``v``: ``F -> dim``; ``out``: ``dim -> dim``)
    rather than ``nn.MultiheadAttention``, whose fused ``in_proj_weight`` stacks q, k and v
    in one tensor: as plain ``Linear`` s, Alrao's grouping gives every output feature of
    q, k, v and out its own rate with no special rule. The product itself is
    ``F.scaled_dot_product_attention`` (fused kernels where available), with
    ``is_causal`` for the mask and ``dropout_p`` on the attention weights while training.
    """

    def __init__(self, in_features: int, dim: int, heads: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(in_features, dim)
        self.k = nn.Linear(in_features, dim)
        self.v = nn.Linear(in_features, dim)
        self.out = nn.Linear(dim, dim)
        self.heads = heads
        self.causal = causal
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, dim = x.shape
        return x.view(batch, steps, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )
        batch, _, steps, head_dim = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, steps, self.heads * head_dim))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, causal={self.causal}, dropout={self.dropout}"


class PositionalEmbedding(nn.Module):
    """``x + P[:T]`` for ``(B, T, F)`` input; ``P`` is the weight of the child ``table``.

    The table is an ``nn.Embedding(max_len, F)`` (row t = position t) so that it is one of
    the allowed parameter modules and Alrao groups it like a token embedding: one rate per
    feature column.
    """

    def __init__(self, max_len: int, features: int) -> None:
        super().__init__()
        self.table = nn.Embedding(max_len, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table.weight[: x.shape[1]]


class TransformerLayer(nn.Module):
    """Pre-LN transformer block: ``x + drop(Attn(LN1(x)))``, then ``x + drop(MLP(LN2(x)))``.

    ``MLP = Linear(dim, mlp), GELU, Linear(mlp, dim)``; ``drop`` is residual dropout with
    the block's ``dropout`` (the same p also drops attention weights).
    """

    def __init__(self, dim: int, heads: int, mlp: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, dim, heads, causal, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


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
    if isinstance(layer, Attention):
        return SelfAttention(shape[-1], layer.dim, layer.heads, node.causal, layer.dropout)
    if isinstance(layer, Positional):
        max_len = shape[0] if layer.max_len is None else layer.max_len
        return PositionalEmbedding(max_len, shape[-1])
    if isinstance(layer, TransformerBlock):
        return TransformerLayer(layer.dim, layer.heads, layer.hidden, node.causal, layer.dropout)
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
