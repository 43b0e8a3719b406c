"""Sequence layers: ``attention``, ``positional`` and the pre-LN ``transformer_block``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.fx
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from ...data.base import DatasetInfo
from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    PosInt,
    Probability,
    Shape,
    StrictBool,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


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


def _sequence(ctx: InferContext, kind: str, kpath: str, shape: Shape) -> bool:
    if len(shape) != 2:
        ctx.issue(kpath, f"{kind} needs a sequence input (T, F), got {fmt_shape(shape)}")
        return False
    return True


def effective_causal(causal: bool | None, info: DatasetInfo) -> bool:
    """The effective ``causal`` flag: ``null`` follows the task (true on a language model)."""
    return info.task == "language_model" if causal is None else causal


def check_causal(causal: bool | None, ctx: InferContext, kpath: str) -> None:
    """Refuse ``causal: false`` on a language model.

    There the target at step t is the input at step t+1, so attention that sees later steps
    would read the answer: an error rather than a silently perfect (and useless) model.
    """
    info = ctx.info
    if info.task == "language_model" and causal is False:
        ctx.issue(
            f"{kpath}.causal",
            f"false on the language_model dataset {info.name!r} lets step t see step t+1, "
            "its own target: use causal: true (or omit it)",
        )


class _Heads(LayerKind):
    """``heads`` must divide ``dim``: shared by attention and the transformer block."""

    heads: PosInt
    dim: PosInt
    causal: StrictBool | None = None
    dropout: Probability = 0.0

    def check(self, ctx: InferContext, kpath: str) -> None:
        if self.dim % self.heads:
            ctx.issue(f"{kpath}.heads", f"must divide dim ({self.dim}), got {self.heads}")


@register_kind
class Attention(_Heads):
    """``attention: {heads, dim, causal=auto, dropout=0}``: multi-head self-attention.

    Input ``(T, F)``; output ``(T, dim)``. The q, k and v projections are
    ``Linear(F, dim)`` each and the output projection ``Linear(dim, dim)``, so ``dim``
    may differ from ``F`` (the q/k/v projections are the projection; no extra module).
    ``heads`` must divide ``dim`` (checked by validation, with the path). ``causal``
    ``null`` (the default) means "decided by the dataset": true on a
    ``language_model`` task, false otherwise; it is kept as ``null`` in the canonical
    form because the spec alone cannot know the task. ``dropout`` drops attention
    weights while training. Parameters: ``3·(F·dim + dim) + dim·dim + dim``.
    """

    kind: Literal["attention"] = "attention"

    param_modules = (nn.Linear,)
    contract_cases = (ContractCase({"attention": {"heads": 2, "dim": 6}}, (5, 3)),)

    def widths(self) -> dict[str, int]:
        return {"dim": self.dim}

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        ok = _sequence(ctx, self.kind, kpath, shape) and not self.dim % self.heads
        check_causal(self.causal, ctx, kpath)
        if not ok:
            return None, 0
        steps, features = shape
        dim = self.dim
        return (steps, dim), 3 * (features * dim + dim) + dim * dim + dim

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        causal = effective_causal(self.causal, ctx.info)
        return SelfAttention(node.in_shape[-1], self.dim, self.heads, causal, self.dropout)


@register_kind
class Positional(LayerKind):
    """``positional: {max_len=null}``; shorthand ``positional: 128``.

    A learned positional embedding added to a ``(T, F)`` input: output ``x + P[:T]``
    with ``P`` of shape ``(max_len, F)``. ``null`` (default) means ``max_len = T``,
    the inferred sequence length; an explicit value must be at least ``T``.
    """

    kind: Literal["positional"] = "positional"
    max_len: PosInt | None = None

    shorthand = "max_len"
    param_modules = (nn.Embedding,)
    contract_cases = (ContractCase("positional", (5, 3)), ContractCase({"positional": 9}, (4, 2)))

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if not _sequence(ctx, self.kind, kpath, shape):
            return None, 0
        steps, features = shape
        max_len = steps if self.max_len is None else self.max_len
        if max_len < steps:
            ctx.issue(f"{kpath}.max_len", f"{max_len} is shorter than the input sequence length {steps}")
            return None, 0
        return shape, max_len * features

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        max_len = node.in_shape[0] if self.max_len is None else self.max_len
        return PositionalEmbedding(max_len, node.in_shape[-1])


def _feed_forward_is_gelu(layer: nn.TransformerEncoderLayer) -> bool:
    activation = layer.activation
    if isinstance(activation, nn.GELU):
        return activation.approximate == "none"
    return activation is F.gelu


@register_kind
class TransformerBlock(_Heads):
    """``transformer_block: {heads, dim, mlp=4*dim, causal=auto, dropout=0}``, pre-LN.

    ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with ``MLP = Linear(dim, mlp), GELU,
    Linear(mlp, dim)``. Input ``(T, dim)`` (the residual stream keeps its width, so
    ``dim`` must equal the input features); output ``(T, dim)``. ``mlp`` defaults to
    ``4 * dim`` and is stored explicitly, so omitting it hashes like writing it.
    ``dropout`` drops attention weights and each sublayer's output before its add.
    Parameters: two LayerNorms ``4·dim``, attention ``4·(dim² + dim)``, MLP
    ``2·dim·mlp + mlp + dim``.

    Imported from ``nn.TransformerEncoderLayer(batch_first=True, norm_first=True,
    activation="gelu", dropout=0)`` called on ``x`` alone (its fused ``in_proj`` is split
    into q, k and v when weights are copied).
    """

    kind: Literal["transformer_block"] = "transformer_block"
    mlp: PosInt | None = None

    param_modules = (nn.Linear, nn.LayerNorm)
    torch_sources = (nn.TransformerEncoderLayer,)
    contract_cases = (ContractCase({"transformer_block": {"heads": 2, "dim": 4, "mlp": 6}}, (5, 4)),)

    @model_validator(mode="after")
    def _default_mlp(self) -> TransformerBlock:
        return self if self.mlp is not None else self.model_copy(update={"mlp": 4 * self.dim})

    @property
    def hidden(self) -> int:
        """The MLP's hidden width (``mlp``, materialised to ``4 * dim`` when omitted)."""
        return self.mlp if self.mlp is not None else 4 * self.dim

    def widths(self) -> dict[str, int]:
        return {"dim": self.dim, "mlp": self.hidden}

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        ok = _sequence(ctx, self.kind, kpath, shape) and not self.dim % self.heads
        if ok and shape[1] != self.dim:
            ctx.issue(
                f"{kpath}.dim",
                f"must equal the input features ({shape[1]}): the residual stream keeps its width "
                f"(add linear: {self.dim} before the block), got {self.dim}",
            )
            ok = False
        check_causal(self.causal, ctx, kpath)
        if not ok:
            return None, 0
        dim, hidden = self.dim, self.hidden
        attention = 4 * (dim * dim + dim)
        mlp = dim * hidden + hidden + hidden * dim + dim
        return shape, 2 * (2 * dim) + attention + mlp

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        causal = effective_causal(self.causal, ctx.info)
        return TransformerLayer(self.dim, self.heads, self.hidden, causal, self.dropout)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        layer: nn.TransformerEncoderLayer = module_of(source)
        attn = layer.self_attn
        require(source, len(source.node.args) == 1 and not source.node.kwargs, "masks are not expressible")
        require(
            source, layer.norm_first, "post-LN (norm_first=False) is not expressible: the block is pre-LN"
        )
        require(source, attn.batch_first, "batch_first=False is not expressible (the DSL is batch-first)")
        require(source, _feed_forward_is_gelu(layer), "only an exact GELU feed-forward is expressible")
        require(
            source, layer.dropout.p == 0, "dropout inside the feed-forward is not expressible: use dropout=0"
        )
        require(source, attn.in_proj_bias is not None and layer.linear1.bias is not None, "bias=False is not "
                "expressible")  # fmt: skip
        require(source, layer.norm1.eps == 1e-5, f"layer_norm_eps {layer.norm1.eps:g} is not expressible")
        block = cls(heads=attn.num_heads, dim=attn.embed_dim, mlp=layer.linear1.out_features, causal=False)
        return Mapped(block, tensor_input(source))

    def copy_weights(self, source: nn.Module, built: nn.Module) -> None:
        assert isinstance(source, nn.TransformerEncoderLayer) and isinstance(built, TransformerLayer)
        built.ln1.load_state_dict(source.norm1.state_dict())
        built.ln2.load_state_dict(source.norm2.state_dict())
        built.mlp[0].load_state_dict(source.linear1.state_dict())
        built.mlp[2].load_state_dict(source.linear2.state_dict())
        built.attn.out.load_state_dict(source.self_attn.out_proj.state_dict())
        weights = source.self_attn.in_proj_weight.chunk(3)
        biases = source.self_attn.in_proj_bias.chunk(3)
        with torch.no_grad():
            for linear, weight, bias in zip(
                (built.attn.q, built.attn.k, built.attn.v), weights, biases, strict=True
            ):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
