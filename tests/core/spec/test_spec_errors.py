"""Bad specs are rejected with exact, path-named ``path: message`` lines."""

# The bad-spec table keeps one case per line, so its lines run long.
# ruff: noqa: E501

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import SpecError, SpecIssue, SpecLimits, parse_spec, validate_spec

# (dataset, layers as YAML flow text, head, regex matched from the start of str(SpecError))
BAD_SPECS: list[tuple[str, str, str, str]] = [
    # --- parse-time: names, fields, values -------------------------------------------
    (
        "mnist1d",
        "[flatten, relu, {conv3d: 3}]",
        "classifier",
        r"layers\[2\]: unknown layer 'conv3d' \(known: .*conv2d.*\)",
    ),
    ("mnist1d", "[{linear: {out: 3, outt: 3}}]", "classifier", r"layers\[0\]\.linear\.outt: unknown field"),
    (
        "mnist1d",
        "[flatten, {linear: {bias: false}}]",
        "classifier",
        r"layers\[1\]\.linear\.out: missing required field",
    ),
    (
        "mnist1d",
        "[flatten, {linear: -3}]",
        "classifier",
        r"layers\[1\]\.linear\.out: must be greater than 0, got -3",
    ),
    (
        "mnist1d",
        "[flatten, {linear: true}]",
        "classifier",
        r"layers\[1\]\.linear\.out: expected an integer, got True",
    ),
    (
        "mnist1d",
        "[flatten, {linear: 2.5}]",
        "classifier",
        r"layers\[1\]\.linear\.out: expected an integer, got 2\.5",
    ),
    (
        "mnist1d",
        "[{dropout: 1.0}, flatten]",
        "classifier",
        r"layers\[0\]\.dropout\.p: must be less than 1(\.0)?, got 1\.0",
    ),
    ("mnist1d", "[{relu: 3}, flatten]", "classifier", r"layers\[0\]\.relu: takes no arguments, got 3"),
    (
        "digits",
        "[{conv2d: 3}]",
        "classifier",
        r"layers\[0\]\.conv2d: expected a mapping of arguments \(out, kernel, .*\), got 3",
    ),
    (
        "digits",
        "[{conv2d: {out: 4, kernel: [3, 3, 3]}}]",
        "classifier",
        r"layers\[0\]\.conv2d\.kernel: expected a positive integer or a pair",
    ),
    (
        "digits",
        "[{conv2d: {out: 4, kernel: 3, padding: -1}}]",
        "classifier",
        r"layers\[0\]\.conv2d\.padding: expected a non-negative integer",
    ),
    (
        "chartext",
        "[{embedding: 8}, {lstm: {hidden: 8, return: final}}]",
        "classifier",
        r"layers\[1\]\.lstm\.return: expected 'sequence' or 'last', got 'final'",
    ),
    (
        "chartext",
        "[{embedding: 8}, {lstm: {hidden: 8, returns: last}}]",
        "classifier",
        r"layers\[1\]\.lstm\.returns: unknown field$",
    ),
    (
        "mnist1d",
        "[{linear: {out: 3, kind: conv1d}}]",
        "classifier",
        r"layers\[0\]\.linear\.kind: unknown field$",
    ),
    (
        "mnist1d",
        "[{linear: 3, relu: null}]",
        "classifier",
        r"layers\[0\]: a layer is a name or a one-key mapping \{kind: args\}, got keys: linear, relu",
    ),
    (
        "mnist1d",
        "[{residual: {layers: [relu, {linear: {out: 1, outt: 1}}]}}, flatten]",
        "classifier",
        r"layers\[0\]\.residual\.layers\[1\]\.linear\.outt: unknown field",
    ),
    (
        "mnist1d",
        "[{residual: {layers: []}}, flatten]",
        "classifier",
        r"layers\[0\]\.residual\.layers: must not be empty",
    ),
    (
        "mnist1d",
        "[{residual: {layers: [relu], projection: maybe}}, flatten]",
        "classifier",
        r"layers\[0\]\.residual\.projection: expected 'auto', 'none', 'linear' or 'conv', got 'maybe'",
    ),
    ("mnist1d", "[flatten]", "softmax", r"head: expected 'classifier' or 'regression', got 'softmax'"),
    # --- validate-time: shapes --------------------------------------------------------
    (
        "digits",
        "[{conv2d: {out: 6, kernel: 5}}, {conv2d: {out: 6, kernel: 5}}, flatten]",
        "classifier",
        r"layers\[1\]\.conv2d\.kernel: kernel 5 larger than input height 4(?s:.*)input width 4",
    ),
    (
        "mnist1d",
        "[{maxpool1d: 8}, {conv1d: {out: 4, kernel: 9}}, flatten]",
        "classifier",
        r"layers\[1\]\.conv1d\.kernel: kernel 9 larger than input length 5$",
    ),
    (
        "mnist1d",
        "[{maxpool1d: 8}, {conv1d: {out: 4, kernel: 8, padding: 1}}, flatten]",
        "classifier",
        r"layers\[1\]\.conv1d\.kernel: kernel 8 larger than input length 7 \(padding 1 included\)$",
    ),
    (
        "mnist1d",
        "[{conv1d: {out: 4, kernel: 3}}, {conv1d: {out: 6, kernel: 3, groups: 4}}, flatten]",
        "classifier",
        r"layers\[1\]\.conv1d\.groups: out 6 not divisible by groups 4",
    ),
    (
        "mnist1d",
        "[{conv1d: {out: 4, kernel: 3, groups: 2}}, flatten]",
        "classifier",
        r"layers\[0\]\.conv1d\.groups: input channels 1 not divisible by groups 2",
    ),
    (
        "digits",
        "[{conv1d: {out: 4, kernel: 3}}, flatten]",
        "classifier",
        r"layers\[0\]\.conv1d: conv1d needs input \(C, L\), got \(1, 8, 8\)",
    ),
    (
        "digits",
        "[{conv2d: {out: 16, kernel: 3}}, {linear: 10}]",
        "classifier",
        r"layers\[1\]\.linear: linear needs input \(F,\) or \(T, F\), got \(16, 6, 6\): add flatten",
    ),
    (
        "digits",
        "[{conv2d: {out: 16, kernel: 4}}, {avgpool2d: 2}]",
        "classifier",
        r"head: classifier needs flat features, got \(16, 2, 2\): add flatten",
    ),
    (
        "digits",
        "[{maxpool2d: {kernel: 3, padding: 2}}, flatten]",
        "classifier",
        r"layers\[0\]\.maxpool2d\.padding: padding 2 must be at most half the kernel",
    ),
    (
        "mnist1d",
        "[{permute: [0, 0]}, flatten]",
        "classifier",
        r"layers\[0\]\.permute\.dims: \[0, 0\] is not a permutation of \[0, 1\] for input \(1, 40\)",
    ),
    (
        "mnist1d",
        "[flatten, {gru: 8}]",
        "classifier",
        r"layers\[1\]\.gru: gru needs input \(T, F\), got \(40,\)",
    ),
    (
        "mnist1d",
        "[flatten, {global_avgpool: null}]",
        "classifier",
        r"layers\[1\]\.global_avgpool: global_avgpool needs input \(C, L\) or \(C, H, W\), got \(40,\)",
    ),
    (
        "mnist1d",
        "[{embedding: 8}, flatten]",
        "classifier",
        r"layers\[0\]\.embedding: needs integer token ids, but the input \(1, 40\) is float",
    ),
    (
        "chartext",
        "[{linear: 10}]",
        "classifier",
        r"layers\[0\]\.linear: input is integer token ids of shape \(64,\): the first layer must be embedding",
    ),
    ("chartext", "[]", "classifier", r"head: features are still integer token ids \(64,\): add embedding"),
    (
        "chartext",
        "[{embedding: 8}, {lstm: {hidden: 8, return: last}}]",
        "classifier",
        r"head: classifier on a language_model dataset needs per-step features \(64, F\), got \(8,\)",
    ),
    (
        "mnist1d",
        "[{residual: {layers: [{conv1d: {out: 4, kernel: 3}}], projection: none}}, flatten]",
        "classifier",
        r"layers\[0\]\.residual\.projection: body output \(4, 38\) differs from input \(1, 40\): use projection auto",
    ),
    (
        "mnist1d",
        "[flatten, {residual: {layers: [{linear: 8}], projection: conv}}]",
        "classifier",
        r"layers\[1\]\.residual\.projection: conv projection needs input \(C, L\) or \(C, H, W\), got \(40,\)",
    ),
    (
        "digits",
        "[{residual: [flatten]}]",
        "classifier",
        r"layers\[0\]\.residual\.projection: body changes the rank from \(1, 8, 8\) to \(64,\)",
    ),
    # --- validate-time: heads vs tasks ------------------------------------------------
    (
        "mnist1d",
        "[flatten]",
        "regression",
        r"head: regression needs a regression dataset, but 'mnist1d' is a classification task",
    ),
    (
        "regression",
        "[]",
        "classifier",
        r"head: classifier needs a classification or language_model dataset, but 'regression' is a regression task",
    ),
    # --- limits -----------------------------------------------------------------------
    (
        "mnist1d",
        "[flatten, {linear: 9000}]",
        "classifier",
        r"layers\[1\]\.linear\.out: 9,000 exceeds the width limit of 8,192",
    ),
    (
        "mnist1d",
        "[{conv1d: {out: 4, kernel: 33, padding: 16}}, flatten]",
        "classifier",
        r"layers\[0\]\.conv1d\.kernel: kernel 33 exceeds the limit of 32",
    ),
    (
        "mnist1d",
        "[flatten, {linear: 5000}, {linear: 5000}]",
        "classifier",
        r"spec: 25,260,010 parameters exceed the limit of 20,000,000",
    ),
]


def _yaml(layers: str, head: str) -> str:
    return f"name: bad\nhead: {head}\nlayers: {layers}\n"


@pytest.mark.parametrize(("dataset", "layers", "head", "expected"), BAD_SPECS, ids=lambda v: str(v)[:40])
def test_bad_spec_gives_path_named_error(
    dataset: str, layers: str, head: str, expected: str, infos: dict[str, DatasetInfo]
) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec(parse_spec(_yaml(layers, head)), infos[dataset])
    message = str(caught.value)
    assert re.match(expected, message), message
    assert message.count("\n") + 1 == len(caught.value.issues)
    # `path: message` lines map 1:1 to the structured issues.
    assert message.splitlines() == [f"{i.path}: {i.message}" for i in caught.value.issues]


def test_all_problems_are_reported_together(infos: dict[str, DatasetInfo]) -> None:
    text = _yaml(
        "[{conv1d: {out: 6, kernel: 3, groups: 4}}, {conv1d: {out: 4, kernel: 50}}, "
        "{linear: 9000}, {lstm: 9000}]",
        "regression",
    )
    with pytest.raises(SpecError) as caught:
        validate_spec(parse_spec(text), infos["mnist1d"])
    lines = str(caught.value).splitlines()
    assert lines == [
        "layers[0].conv1d.groups: input channels 1 not divisible by groups 4",
        "layers[0].conv1d.groups: out 6 not divisible by groups 4",
        "layers[1].conv1d.kernel: kernel 50 exceeds the limit of 32",
        "layers[1].conv1d.kernel: kernel 50 larger than input length 38",
        # shape unknown from here on: only shape-free checks run
        "layers[2].linear.out: 9,000 exceeds the width limit of 8,192",
        "layers[3].lstm.hidden: 9,000 exceeds the width limit of 8,192",
        "head: regression needs a regression dataset, but 'mnist1d' is a classification task: "
        "use head: classifier",
    ]


def test_all_parse_problems_are_reported_together() -> None:
    text = (
        "name: 3\nhead: softmax\nextra: 1\n"
        "layers: [{linear: -1}, {conv3d: 3}, {residual: [{dropout: 2}]}, {linear: {outt: 1, out: 1}}]"
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    assert [issue.path for issue in caught.value.issues] == [
        "name",
        "head",
        "extra",
        "layers[0].linear.out",
        "layers[1]",
        "layers[2].residual.layers[0].dropout.p",
        "layers[3].linear.outt",
    ]


def test_pydantic_errors_never_leak() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"head": "classifier", "layers": [{"linear": "wide"}]})
    error: ValueError = caught.value
    assert not isinstance(error, ValidationError)
    assert "pydantic" not in str(caught.value)
    assert caught.value.issues == [SpecIssue("layers[0].linear.out", "expected an integer, got 'wide'")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "head: classifier\nlayers:\n  - linear: 3\n   - relu\n",
            r"spec: invalid YAML at line 4, column \d+: ",
        ),
        (
            "head: classifier\nhead: regression\nlayers: []\n",
            r"spec: invalid YAML at line 2, column 1: duplicate key 'head'",
        ),
        ("[relu]", r"spec: expected a mapping with 'layers' and 'head', got list"),
        ("", r"spec: empty spec"),
        ("head: classifier\n", r"layers: missing required field"),
        ("layers: []\n", r"head: missing required field"),
        ("head: classifier\nlayers: relu\n", r"layers: expected a list of layers, got str 'relu'"),
    ],
)
def test_document_level_errors(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    assert re.match(expected, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^spec: file not found: "):
        parse_spec(str(tmp_path / "missing.yaml"))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"head": "classifier",\n "layers": [}')
    with pytest.raises(SpecError, match=r"^spec: invalid JSON at line 2, column \d+: "):
        parse_spec(bad_json)
    good_json = tmp_path / "good.json"
    good_json.write_text('{"head": "classifier", "layers": ["flatten"]}')
    assert (
        parse_spec(good_json)
        == parse_spec(str(good_json))
        == parse_spec("head: classifier\nlayers: [flatten]")
    )


def test_self_referencing_yaml_alias_is_rejected() -> None:
    text = "head: classifier\nlayers: &body\n  - residual:\n      layers: *body\n"
    with pytest.raises(SpecError, match=r"refers to its own anchor"):
        parse_spec(text)


def test_layer_count_limit_counts_nested_layers(infos: dict[str, DatasetInfo]) -> None:
    block = "{residual: [relu, relu, relu]}"  # 4 layers each
    spec = parse_spec(_yaml("[flatten, " + ", ".join([block] * 20) + "]", "classifier"))  # 81 layers
    with pytest.raises(SpecError) as caught:
        validate_spec(spec, infos["mnist1d"])
    assert str(caught.value) == "layers: 81 layers exceed the limit of 64"
    # The same spec passes under a looser limit, and 80 top-level layers fail.
    assert validate_spec(spec, infos["mnist1d"], SpecLimits(max_layers=81)).num_layers == 81
    flat = parse_spec(_yaml("[" + ", ".join(["relu"] * 79) + ", flatten]", "classifier"))
    with pytest.raises(SpecError, match=r"^layers: 80 layers exceed the limit of 64$"):
        validate_spec(flat, infos["mnist1d"])


def test_param_limit_includes_one_head(infos: dict[str, DatasetInfo]) -> None:
    spec = parse_spec(_yaml("[flatten, {linear: 100}]", "classifier"))
    report = validate_spec(spec, infos["mnist1d"])
    assert report.num_params == (40 * 100 + 100) + (100 * 10 + 10)
    validate_spec(spec, infos["mnist1d"], SpecLimits(max_params=report.num_params))
    with pytest.raises(SpecError, match=r"^spec: 5,110 parameters exceed the limit of 5,109$"):
        validate_spec(spec, infos["mnist1d"], SpecLimits(max_params=report.num_params - 1))


def test_spec_error_pickles_and_serialises() -> None:
    error = SpecError([SpecIssue("layers[0].linear.out", "bad"), SpecIssue("head", "worse")])
    clone = pickle.loads(pickle.dumps(error))
    assert clone.issues == error.issues
    assert str(clone) == "layers[0].linear.out: bad\nhead: worse"
    assert error.as_dicts() == [
        {"path": "layers[0].linear.out", "message": "bad"},
        {"path": "head", "message": "worse"},
    ]
