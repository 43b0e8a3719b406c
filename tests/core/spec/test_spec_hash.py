"""One architecture, many spellings: one hash. A real change: another hash."""

from __future__ import annotations

import pytest

from archscreen.core.spec import ArchSpec, parse_spec, spec_hash

TERSE = """
name: terse
head: classifier
layers:
  - conv1d: {out: 8, kernel: 3}
  - relu
  - maxpool1d: 2
  - residual:
      - conv1d: {out: 8, kernel: 3, padding: 1}
      - relu
  - flatten
  - linear: 120
  - dropout: 0.25
  - leaky_relu
"""

VERBOSE = """
{
  "name": "verbose, with another name",
  "layers": [
    {"conv1d": {"out": 8, "kernel": 3, "stride": 1, "padding": 0, "groups": 1, "bias": true}},
    {"relu": {}},
    {"maxpool1d": {"kernel": 2, "stride": 2, "padding": 0}},
    {"residual": {"projection": "auto", "layers": [
        {"conv1d": {"kernel": 3, "out": 8, "padding": 1}},
        {"relu": null}]}},
    "flatten",
    {"linear": {"out": 120, "bias": true}},
    {"dropout": {"p": 0.25}},
    {"leaky_relu": {"negative_slope": 0.01}}
  ],
  "head": "classifier"
}
"""


def test_two_spellings_hash_equal() -> None:
    terse, verbose = parse_spec(TERSE), parse_spec(VERBOSE)
    assert terse.name != verbose.name
    assert terse.canonical() == verbose.canonical()
    assert spec_hash(terse) == spec_hash(verbose) == terse.spec_hash
    assert len(spec_hash(terse)) == 64 and int(spec_hash(terse), 16) >= 0


def test_pair_and_int_spellings_hash_equal() -> None:
    a = parse_spec({"head": "classifier", "layers": [{"conv2d": {"out": 4, "kernel": 3}}, "flatten"]})
    b = parse_spec(
        {
            "head": "classifier",
            "layers": [{"conv2d": {"out": 4, "kernel": [3, 3], "stride": [1, 1], "padding": 0}}, "flatten"],
        }
    )
    assert spec_hash(a) == spec_hash(b)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("linear: 120", "linear: 121"),
        ("linear: 120", "linear: {out: 120, bias: false}"),
        ("dropout: 0.25", "dropout: 0.3"),
        ("maxpool1d: 2", "avgpool1d: 2"),
        ("maxpool1d: 2", "maxpool1d: {kernel: 2, stride: 1}"),
        ("- relu\n  - maxpool1d", "- gelu\n  - maxpool1d"),
        ("head: classifier", "head: regression"),
        ("  - residual:\n", "  - residual:\n      projection: conv\n      layers:\n"),
    ],
)
def test_real_change_changes_hash(old: str, new: str) -> None:
    assert old in TERSE
    changed = TERSE.replace(old, new, 1)
    assert spec_hash(parse_spec(changed)) != spec_hash(parse_spec(TERSE))


def test_layer_order_matters() -> None:
    a = parse_spec("head: classifier\nlayers: [relu, flatten]")
    b = parse_spec("head: classifier\nlayers: [flatten, relu]")
    assert spec_hash(a) != spec_hash(b)


def test_spec_is_frozen_and_model_round_trips() -> None:
    spec = parse_spec(TERSE)
    with pytest.raises(ValueError, match="frozen"):
        spec.head = "regression"
    assert ArchSpec.model_validate(spec.model_dump()) == spec
    assert ArchSpec.model_validate_json(spec.model_dump_json(by_alias=True)).spec_hash == spec.spec_hash
