"""The spec parser's bounds against hostile text: alias bombs, deep nesting, NUL, huge values."""

from __future__ import annotations

import time

import pytest

from archscreen.core.spec import SpecError, parse_spec
from archscreen.core.spec.parse import MAX_DOCUMENT_NODES, load_spec_text


def bomb(levels: int) -> str:
    lines = ["a0: &a0 [x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)
    ]
    return "\n".join([*lines, f"name: *a{levels}", "head: classifier", "layers: []"])


def test_alias_bomb_is_refused_before_expansion() -> None:
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="aliases expand to more than"):
        parse_spec(bomb(9))  # 10^9 leaves
    assert time.perf_counter() - t0 < 0.5


def test_aliases_within_the_bound_still_work_and_errors_quote_a_prefix() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(bomb(3))  # 10^3 leaves: allowed, but `name` is not a string
    message = str(err.value)
    assert "name: expected a string" in message and len(message) < 400


def test_self_referencing_alias_is_bounded() -> None:
    with pytest.raises(SpecError, match="refers to its own anchor"):
        parse_spec("a: &a [*a]\nhead: classifier\nlayers: []")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"a": ' * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_a_spec_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(SpecError, match="nested deeper"):
        load_spec_text(text)


def test_deep_dict_and_nul_strings_are_refused() -> None:
    deep: object = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(SpecError, match="nested deeper"):
        parse_spec({"head": "classifier", "layers": deep})
    with pytest.raises(SpecError, match="NUL"):
        parse_spec({"head": "classifier", "layers": [], "name": "a\x00b"})
    with pytest.raises(SpecError, match="NUL"):
        parse_spec('name: "a\\0b"\nhead: classifier\nlayers: []')


def test_node_count_bound() -> None:
    wide = "layers: [" + ",".join(["r"] * (MAX_DOCUMENT_NODES + 1)) + "]\nhead: classifier"
    with pytest.raises(SpecError, match="nodes"):
        load_spec_text(wide)
