"""Split a pre-classifier ("body") into Alrao feature sets, one parameter group each.

Alrao (Blier, Wolinski, Ollivier, 2019) draws one learning rate per *feature*: the
incoming parameters of one unit share one rate. This module only decides *which
slices of which tensors* form a feature; the rates themselves are drawn by the
optimizers in :mod:`archscreen.core.alrao.optim`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["alrao_param_groups", "group_rule_for", "rate_shape", "register_group_rule"]

ParamGroup = dict[str, Any]


def rate_shape(
    param: torch.Tensor, feature_dim: int | None, gate_count: int, num_features: int
) -> tuple[int, ...]:
    """Shape of the per-feature rate tensor that broadcasts against ``param``.

    ``num_features * gate_count`` along ``feature_dim`` and 1 elsewhere; ``feature_dim=None``
    means one feature per element (multi-dimensional LayerNorm), i.e. the rate tensor has
    ``param``'s shape. Raises ``ValueError`` when the parameter does not have that many
    entries along the feature dimension.
    """
    width = num_features * gate_count
    if feature_dim is None:
        if param.numel() != width:
            raise ValueError(
                f"Invalid feature set: elementwise parameter of shape {tuple(param.shape)} has "
                f"{param.numel()} entries, expected num_features*gate_count={width}"
            )
        return tuple(param.shape)
    if not -param.dim() <= feature_dim < param.dim():
        raise ValueError(f"Invalid feature_dim: {feature_dim} for a parameter of shape {tuple(param.shape)}")
    dim = feature_dim % param.dim()
    if param.shape[dim] != width:
        raise ValueError(
            f"Invalid feature set: parameter of shape {tuple(param.shape)} has {param.shape[dim]} "
            f"entries along dim {dim}, expected num_features*gate_count={width}"
        )
    shape = [1] * param.dim()
    shape[dim] = width
    return tuple(shape)


def _group(
    params: list[torch.Tensor], feature_dims: list[int | None], gate_count: int, num_features: int, kind: str
) -> ParamGroup:
    return {
        "params": params,
        "feature_dims": feature_dims,
        "gate_counts": [gate_count] * len(params),
        "num_features": num_features,
        "kind": kind,
    }


def _direct(module: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in module.named_parameters(recurse=False) if p is not None}


def _weight_bias(module: nn.Module, feature_dim: int | None, num_features: int, kind: str) -> ParamGroup:
    params: list[torch.Tensor] = []
    for name in ("weight", "bias"):
        p = getattr(module, name, None)
        if isinstance(p, nn.Parameter):
            params.append(p)
    # the bias (when present) always has the feature on dim 0 (or is elementwise)
    dims: list[int | None] = [feature_dim] + [0 if feature_dim is not None else None] * (len(params) - 1)
    return _group(params, dims[: len(params)], 1, num_features, kind)


def _recurrent_groups(module: nn.LSTM | nn.GRU) -> list[ParamGroup]:
    gates = 4 if isinstance(module, nn.LSTM) else 3
    kind = "lstm" if isinstance(module, nn.LSTM) else "gru"
    hidden = module.hidden_size
    direct = _direct(module)
    groups: list[ParamGroup] = []
    suffixes = ["", "_reverse"] if module.bidirectional else [""]
    for layer in range(module.num_layers):
        for sfx in suffixes:
            names = [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
            if module.bias:
                names += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"]
            params: list[torch.Tensor] = [direct[n] for n in names]
            groups.append(_group(params, [0] * len(params), gates, hidden, kind))
            proj_name = f"weight_hr_l{layer}{sfx}"
            if proj_name in direct:  # LSTM(proj_size>0): the projection is a linear layer of its own
                proj = direct[proj_name]
                groups.append(_group([proj], [0], 1, proj.shape[0], "lstm_proj"))
    return groups


GroupRule = Callable[[Any], list[ParamGroup]]


def _layernorm_groups(module: nn.LayerNorm) -> list[ParamGroup]:
    shape = tuple(module.normalized_shape)
    if len(shape) == 1:
        return [_weight_bias(module, 0, shape[0], "layernorm")]
    return [_weight_bias(module, None, math.prod(shape), "layernorm")]


# torch module type -> its feature rule. Subclasses inherit their base's rule. Layer kinds that
# build other parameterised modules add theirs with :func:`register_group_rule` (the registry
# does it for a kind's ``alrao_rules``), so a new kind never edits this file.
_GROUP_RULES: dict[type[nn.Module], GroupRule] = {
    nn.Linear: lambda m: [_weight_bias(m, 0, m.out_features, "linear")],
    nn.Conv1d: lambda m: [_weight_bias(m, 0, m.out_channels, "conv")],
    nn.Conv2d: lambda m: [_weight_bias(m, 0, m.out_channels, "conv")],
    nn.Conv3d: lambda m: [_weight_bias(m, 0, m.out_channels, "conv")],
    nn.BatchNorm1d: lambda m: [_weight_bias(m, 0, m.num_features, "batchnorm")],
    nn.BatchNorm2d: lambda m: [_weight_bias(m, 0, m.num_features, "batchnorm")],
    nn.BatchNorm3d: lambda m: [_weight_bias(m, 0, m.num_features, "batchnorm")],
    nn.LayerNorm: _layernorm_groups,
    nn.Embedding: lambda m: [_group([m.weight], [1], 1, m.embedding_dim, "embedding")],
    nn.LSTM: _recurrent_groups,
    nn.GRU: _recurrent_groups,
}


def register_group_rule(module_type: type[nn.Module], rule: GroupRule) -> None:
    """Give ``module_type`` (and its subclasses) the Alrao feature rule ``rule``.

    ``rule(module)`` returns the module's groups (see :func:`alrao_param_groups`). Registering
    a second, different rule for one type raises ``ValueError``: two kinds must agree.
    """
    known = _GROUP_RULES.get(module_type)
    if known is not None and known is not rule:
        raise ValueError(f"an Alrao feature rule for {module_type.__name__} is already registered")
    _GROUP_RULES[module_type] = rule


def group_rule_for(module_type: type[nn.Module]) -> GroupRule | None:
    """The rule that applies to ``module_type`` (its own or its nearest base's), or ``None``."""
    for base in module_type.__mro__:
        rule = _GROUP_RULES.get(base)
        if rule is not None:
            return rule
    return None


def _module_groups(module: nn.Module) -> list[ParamGroup]:
    rule = group_rule_for(type(module))
    if rule is not None:
        return rule(module)
    supported = ", ".join(sorted(t.__name__ for t in _GROUP_RULES))
    raise TypeError(
        f"alrao_param_groups: no Alrao feature rule for module type {type(module).__name__} "
        f"(it has direct parameters {sorted(_direct(module))}); supported: {supported}"
    )


def alrao_param_groups(body: nn.Module) -> list[ParamGroup]:
    """One optimizer parameter group per Alrao feature set of ``body``.

    Walks ``body.modules()`` and, for every module with direct parameters, returns groups
    ``{"params", "feature_dims", "gate_counts", "num_features", "kind"}``. A feature (one
    learning rate) is:

    * ``nn.Linear``: one output unit (row ``i`` of the weight, dim 0, and bias entry ``i``);
    * ``nn.Conv1d/2d/3d`` (grouped and depthwise included): one output filter (dim 0);
    * ``nn.BatchNorm1d/2d/3d``, 1-d ``nn.LayerNorm``: one channel (weight and bias entry);
      a LayerNorm with a multi-dimensional ``normalized_shape`` has one feature per element,
      marked by ``feature_dim=None`` (the rate tensor then has the parameter's shape);
    * ``nn.Embedding``: one embedding dimension (a *column* of the weight, ``feature_dim=1``),
      as in the authors' code: an embedding is a linear layer on a one-hot input;
    * ``nn.LSTM`` / ``nn.GRU``: one hidden unit per layer and direction, the same rate for all
      its gate rows (torch stores gates as blocks of ``hidden_size`` rows, so unit ``u`` owns
      rows ``u, H+u, 2H+u, ...``: ``gate_counts`` is 4 for LSTM, 3 for GRU) in
      ``weight_ih``, ``weight_hh``, ``bias_ih`` and ``bias_hh`` alike; ``_reverse`` weights
      are a separate feature set; an LSTM projection ``weight_hr`` is a linear layer of its own.

    Weight and bias of one unit therefore share their rate. Layer kinds add rules for the
    modules they introduce (:func:`register_group_rule`; e.g. ``nn.GroupNorm``, one rate per
    channel). Any other module type with direct parameters raises ``TypeError``, as does a
    parameter the rule does not cover or a parameter shared by two modules (tied weights have
    no single "incoming feature").
    """
    groups: list[ParamGroup] = []
    seen: dict[int, str] = {}
    for name, module in body.named_modules():
        direct = _direct(module)
        if not direct:
            continue
        module_groups = _module_groups(module)
        covered = {id(p) for g in module_groups for p in g["params"]}
        missing = sorted(n for n, p in direct.items() if id(p) not in covered)
        if missing:
            raise TypeError(
                f"alrao_param_groups: module {name or '<root>'} of type {type(module).__name__} has "
                f"parameters {missing} that no Alrao feature rule covers"
            )
        for g in module_groups:
            for p in g["params"]:
                if id(p) in seen:
                    raise ValueError(
                        f"alrao_param_groups: a parameter of module {name or '<root>'} is shared with "
                        f"{seen[id(p)]}; tied weights are not supported"
                    )
                seen[id(p)] = name or "<root>"
        groups.extend(module_groups)
    return groups


def with_rate_range(groups: list[ParamGroup], lr_min: float, lr_max: float) -> list[ParamGroup]:
    """The ``groups`` with their own log-uniform rate range ``(lr_min, lr_max)``.

    Alrao's optimizers draw a group's per-feature rates from the group's ``lr_min``/``lr_max``
    when it has them, else from the optimizer's range. The paper draws the body from the same
    range as the output copies; this gives the body its own range (``AlraoScreener``'s
    ``body_lr_min``/``body_lr_max`` switch), for nets that need a high rate on every unit.
    """
    if not 0 < lr_min < lr_max:
        raise ValueError(f"body rate range: need 0 < lr_min < lr_max, got ({lr_min:g}, {lr_max:g})")
    return [{**g, "lr_min": float(lr_min), "lr_max": float(lr_max)} for g in groups]
