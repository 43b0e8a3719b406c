"""``embedding: {dim}``: token ids to vectors; the vocabulary comes from the dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    InferContext,
    LayerKind,
    Mapped,
    PosInt,
    Shape,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import module_of, require, tensor_input

if TYPE_CHECKING:
    from ..infer import Node


@register_kind
class Embedding(LayerKind):
    """``embedding: {dim}``; shorthand ``embedding: 32``. Token ids ``(T,)`` -> ``(T, dim)``.

    Imported from a plain ``nn.Embedding``; its ``num_embeddings`` becomes the dataset's
    ``vocab_size`` (the spec itself has no vocabulary).
    """

    kind: Literal["embedding"] = "embedding"
    dim: PosInt

    shorthand = "dim"
    takes_tokens = True
    param_modules = (nn.Embedding,)
    torch_sources = (nn.Embedding,)
    contract_cases = (ContractCase({"embedding": 6}, (5,), input_kind="tokens", vocab_size=11),)

    def widths(self) -> dict[str, int]:
        return {"dim": self.dim}

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        info = ctx.info
        if not ctx.tokens:
            ctx.issue(
                kpath,
                f"needs integer token ids, but the input {fmt_shape(shape)} is float "
                f"(dataset {info.name!r} has input_kind {info.input_kind!r})",
            )
            return None, 0
        if info.vocab_size is None:
            ctx.issue(kpath, f"dataset {info.name!r} defines no vocab_size")
            return None, 0
        return (*shape, self.dim), info.vocab_size * self.dim

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        assert ctx.info.vocab_size is not None  # guaranteed by validation
        return nn.Embedding(ctx.info.vocab_size, self.dim)

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        module: nn.Embedding = module_of(source)
        plain = module.padding_idx is None and module.max_norm is None and not module.sparse
        require(source, plain, "padding_idx, max_norm and sparse are not expressible")
        require(source, not module.scale_grad_by_freq, "scale_grad_by_freq is not expressible")
        return Mapped(cls(dim=module.embedding_dim), tensor_input(source))
