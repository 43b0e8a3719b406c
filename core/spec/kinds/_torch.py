"""Helpers the kinds share to map traced torch code (``torch.fx`` nodes) onto layers."""

from __future__ import annotations

from typing import Any

import torch.fx

from ..registry import ImportRefused, TorchSource


def require(source: TorchSource, condition: bool, reason: str) -> None:
    """Refuse ``source``'s node with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise ImportRefused(source.node.name, reason)


def tensor_input(source: TorchSource) -> torch.fx.Node:
    """The node's first argument, which must be the one tensor it transforms."""
    first = source.node.args[0] if source.node.args else None
    if not isinstance(first, torch.fx.Node):
        raise ImportRefused(source.node.name, "its first argument is not a traced tensor")
    return first


def call_args(source: TorchSource, names: tuple[str, ...]) -> dict[str, Any]:
    """Positional args after the tensor plus keyword args, by the function's parameter ``names``.

    Refuses a further traced tensor among them (a second input the layer could not take).
    """
    node = source.node
    values = dict(zip(names, node.args[1:], strict=False))
    values.update(node.kwargs)
    unknown = sorted(set(values) - set(names))
    require(source, not unknown, f"arguments {unknown} are not expressible")
    for name, value in values.items():
        require(
            source, not isinstance(value, torch.fx.Node), f"argument {name!r} is computed, not a constant"
        )
    return values


def module_of(source: TorchSource) -> Any:
    """The ``call_module`` node's module (the kinds' ``from_torch`` only get such nodes for modules)."""
    if source.module is None:
        raise ImportRefused(source.node.name, "expected a module call")
    return source.module
