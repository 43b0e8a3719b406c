"""Build the body of a validated spec as a ``torch.nn.Module``.

The body takes a batch ``(B, *info.input_shape)`` and returns
``(B, *feature_shape)``; the head is added by the training code. Each kind builds its own
module (:meth:`~archscreen.core.spec.registry.LayerKind.build`). Only the parameterised torch
modules the kinds declare ever appear (``ALLOWED_PARAM_MODULES``, every one with an Alrao
feature rule): ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.BatchNorm1d``,
``nn.BatchNorm2d``, ``nn.LayerNorm``, ``nn.Embedding``, ``nn.LSTM``, ``nn.GRU`` and those of
later kinds (``nn.GroupNorm``). Every module defined by a kind is parameter-free itself and
only holds those as children (attention, the transformer block and the positional embedding
included: their weights live in child ``nn.Linear``/``nn.LayerNorm``/``nn.Embedding`` modules).
"""

from __future__ import annotations

from torch import nn

from ..data.base import DatasetInfo
from .errors import SpecError
from .infer import DEFAULT_LIMITS, Shape, SpecLimits, analyse
from .kinds.attention import PositionalEmbedding, SelfAttention, TransformerLayer
from .kinds.pool import GlobalAvgPooling
from .kinds.recurrent import RecurrentBlock
from .kinds.reshape import PermuteDims
from .kinds.residual import ResidualBlock
from .layers import ArchSpec
from .registry import BuildContext, kind_classes

__all__ = [
    "ALLOWED_PARAM_MODULES",
    "GlobalAvgPooling",
    "PermuteDims",
    "PositionalEmbedding",
    "RecurrentBlock",
    "ResidualBlock",
    "SelfAttention",
    "SpecBody",
    "TransformerLayer",
    "build_body",
]

ALLOWED_PARAM_MODULES: tuple[type[nn.Module], ...] = tuple(
    dict.fromkeys(module for cls in kind_classes() for module in cls.param_modules)
)


class SpecBody(nn.Sequential):
    """The built body: a ``Sequential`` that also records its per-sample shapes."""

    def __init__(self, modules: list[nn.Module], input_shape: Shape, feature_shape: Shape) -> None:
        super().__init__(*modules)
        self.input_shape = input_shape
        self.feature_shape = feature_shape


def build_body(spec: ArchSpec, info: DatasetInfo, limits: SpecLimits = DEFAULT_LIMITS) -> SpecBody:
    """Validate ``spec`` on ``info`` (raising :class:`SpecError`) and build its body.

    The result maps ``(B, *info.input_shape)`` to ``(B, *feature_shape)``; its
    parameter count equals ``validate_spec(...).body_params``. Initialisation is
    torch's default, so seed torch before calling for reproducible weights.
    """
    analysis = analyse(spec, info, limits)
    if analysis.report is None:
        raise SpecError(analysis.issues)
    ctx = BuildContext(info)
    modules = [ctx.module(node) for node in analysis.nodes]
    return SpecBody(modules, analysis.report.input_shape, analysis.report.feature_shape)
