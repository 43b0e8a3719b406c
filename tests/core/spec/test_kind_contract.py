"""The contract every registered layer kind keeps, walked over the registry.

For each kind's ``contract_cases``: inference agrees with the built module (output shape and
parameter count), the module holds parameters only in the kind's declared ``param_modules``,
and Alrao's grouping covers every parameter exactly once. A kind without cases fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archscreen.core.alrao import alrao_param_groups
from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import DEFAULT_LIMITS, LAYER_KINDS, parse_spec, spec_json_schema
from archscreen.core.spec.infer import Walker
from archscreen.core.spec.registry import BuildContext, ContractCase, LayerKind, kind_classes, kind_names

CASES = [
    pytest.param(cls, case, id=f"{cls.__name__}-{index}")
    for cls in kind_classes()
    for index, case in enumerate(cls.contract_cases)
]


def _info(case: ContractCase) -> DatasetInfo:
    return DatasetInfo(
        name="contract",
        task="classification",
        input_shape=case.input_shape,
        input_kind=case.input_kind,
        num_classes=3,
        vocab_size=case.vocab_size,
    )


def test_every_kind_name_has_a_contract_case() -> None:
    covered = set()
    for cls in kind_classes():
        for case in cls.contract_cases:
            item = case.item
            covered.add(item if isinstance(item, str) else next(iter(item)))
    assert covered == set(LAYER_KINDS), set(LAYER_KINDS) - covered


def test_layer_kinds_and_schema_derive_from_the_registry() -> None:
    assert set(LAYER_KINDS) == {name for cls in kind_classes() for name in kind_names(cls)}
    schema_kinds = {
        kind
        for definition in spec_json_schema()["$defs"].values()
        if "kind" in definition.get("properties", {})
        for kind in _literal_values(definition["properties"]["kind"])
    }
    assert schema_kinds == set(LAYER_KINDS)


def _literal_values(prop: dict[str, object]) -> list[str]:
    if "const" in prop:
        return [str(prop["const"])]
    enum = prop.get("enum")
    assert isinstance(enum, list), prop
    return [str(v) for v in enum]


@pytest.mark.parametrize(("cls", "case"), CASES)
def test_kind_contract(cls: type[LayerKind], case: ContractCase) -> None:
    info = _info(case)
    spec = parse_spec({"layers": [case.item], "head": "classifier"})
    layer = spec.layers[0]
    assert isinstance(layer, cls)
    # The walk alone (no head): the kind's own inference, rows and node.
    walker = Walker(info, DEFAULT_LIMITS)
    out_shape, _, nodes = walker.sequence(
        spec.layers, "layers", case.input_shape, case.input_kind == "tokens"
    )
    assert not walker.issues and out_shape is not None
    rows = [row for row in walker.rows if row is not None]
    torch.manual_seed(0)
    body = BuildContext(info).module(nodes[0]).eval()
    batch = 2
    if case.input_kind == "tokens":
        assert case.vocab_size is not None
        x = torch.randint(0, case.vocab_size, (batch, *case.input_shape))
    else:
        x = torch.randn(batch, *case.input_shape)
    with torch.no_grad():
        y = body(x)
    assert tuple(y.shape) == (batch, *rows[0].output_shape) == (batch, *out_shape)
    params = list(body.parameters())
    assert sum(p.numel() for p in params) == sum(row.params for row in rows)
    owners = {type(m) for m in body.modules() if any(True for _ in m.parameters(recurse=False))}
    kinds = [cls, *(type(inner) for inner in layer.sublayers())]
    declared = {module for kind in kinds for module in kind.param_modules}
    assert owners <= declared, owners - declared
    grouped = [id(p) for group in alrao_param_groups(body) for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in params)  # every parameter exactly once


def test_every_kind_is_documented() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "spec.md").read_text()
    table = text[text.index("## Layers") : text.index("### Attention")]
    assert [name for name in LAYER_KINDS if f"`{name}`" not in table] == []
