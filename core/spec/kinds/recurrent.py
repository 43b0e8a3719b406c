"""``lstm`` and ``gru``: stacked, unidirectional, batch-first recurrent layers."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Literal, cast

import torch
import torch.fx
from pydantic import Field
from torch import nn

from ..registry import (
    BuildContext,
    ContractCase,
    ImportRefused,
    InferContext,
    LayerKind,
    Mapped,
    PosInt,
    Shape,
    TorchSource,
    fmt_shape,
    register_kind,
)
from ._torch import require

if TYPE_CHECKING:
    from ..infer import Node


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


_LAST_STEP = (slice(None, None, None), -1)


def _rnn_call(source: TorchSource, node: torch.fx.Node) -> tuple[nn.LSTM | nn.GRU, torch.fx.Node]:
    """``node`` must be ``rnn(x)[0]`` (the output sequence): the rnn and its input ``x``."""
    rnn_node = node.args[0]
    if not (
        node.target is operator.getitem
        and node.args[1] == 0
        and isinstance(rnn_node, torch.fx.Node)
        and rnn_node.op == "call_module"
        and isinstance(source.modules.get(str(rnn_node.target)), nn.LSTM | nn.GRU)
    ):
        raise ImportRefused(source.node.name, "indexing is expressible only as rnn(x)[0] or rnn(x)[0][:, -1]")
    rnn = cast(nn.LSTM | nn.GRU, source.modules[str(rnn_node.target)])
    require(
        source, len(rnn_node.args) == 1 and not rnn_node.kwargs, "an initial hidden state is not expressible"
    )
    require(source, rnn.batch_first, "batch_first=False is not expressible (the DSL is batch-first)")
    require(source, not rnn.bidirectional, "bidirectional recurrent layers are not expressible")
    require(source, rnn.bias, "bias=False is not expressible")
    require(
        source, rnn.num_layers == 1 or rnn.dropout == 0, "dropout between stacked layers is not expressible"
    )
    require(source, getattr(rnn, "proj_size", 0) == 0, "proj_size is not expressible")
    x = rnn_node.args[0]
    assert isinstance(x, torch.fx.Node)
    return rnn, x


@register_kind
class Recurrent(LayerKind):
    """``lstm``/``gru: {hidden, layers=1, return=sequence}``; shorthand ``lstm: 64``.

    Input ``(T, F)``; output ``(T, hidden)`` (``return: sequence``) or ``(hidden,)``
    (``return: last``, the final time step). Imported from ``out, _ = rnn(x)`` (sequence)
    and ``out[:, -1]`` (last) on a batch-first, unidirectional ``nn.LSTM``/``nn.GRU``.
    """

    kind: Literal["lstm", "gru"]
    hidden: PosInt
    layers: PosInt = 1
    returns: Literal["sequence", "last"] = Field("sequence", alias="return")

    shorthand = "hidden"
    param_modules = (nn.LSTM, nn.GRU)
    torch_sources = (operator.getitem,)
    contract_cases = (
        ContractCase({"lstm": {"hidden": 5, "layers": 2}}, (4, 3)),
        ContractCase({"gru": {"hidden": 4, "return": "last"}}, (6, 2)),
    )

    def widths(self) -> dict[str, int]:
        return {"hidden": self.hidden}

    def infer(self, ctx: InferContext, kpath: str, shape: Shape) -> tuple[Shape | None, int]:
        if len(shape) != 2:
            ctx.issue(kpath, f"{self.kind} needs input (T, F), got {fmt_shape(shape)}")
            return None, 0
        gates = 4 if self.kind == "lstm" else 3
        params = 0
        features = shape[1]
        for _ in range(self.layers):
            # weight_ih, weight_hh, bias_ih, bias_hh per stacked layer
            params += gates * self.hidden * (features + self.hidden) + 2 * gates * self.hidden
            features = self.hidden
        out = (shape[0], self.hidden) if self.returns == "sequence" else (self.hidden,)
        return out, params

    def build(self, node: Node, ctx: BuildContext) -> nn.Module:
        rnn_type = nn.LSTM if self.kind == "lstm" else nn.GRU
        rnn = rnn_type(node.in_shape[-1], self.hidden, num_layers=self.layers, batch_first=True)
        return RecurrentBlock(rnn, return_last=self.returns == "last")

    @classmethod
    def from_torch(cls, source: TorchSource) -> Mapped:
        node = source.node
        returns = "sequence"
        inner = node.args[0]
        if (
            node.args[1] == _LAST_STEP
            and isinstance(inner, torch.fx.Node)
            and inner.target is operator.getitem
        ):
            node, returns = inner, "last"
        rnn, x = _rnn_call(source, node)
        kind = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
        layer = cls.model_validate({"kind": kind, "hidden": rnn.hidden_size, "layers": rnn.num_layers,
                                    "return": returns})  # fmt: skip
        return Mapped(layer, x, rnn)

    def copy_weights(self, source: nn.Module, built: nn.Module) -> None:
        assert isinstance(built, RecurrentBlock)
        built.rnn.load_state_dict(source.state_dict())
