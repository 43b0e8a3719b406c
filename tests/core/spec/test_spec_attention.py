"""attention, positional and transformer_block: shapes, parameters, masking, errors, Alrao groups."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.alrao import alrao_param_groups
from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import (
    PositionalEmbedding,
    SelfAttention,
    SpecError,
    SpecLimits,
    TransformerLayer,
    build_body,
    parse_spec,
    spec_hash,
    validate_spec,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "char_transformer.yaml"
# A float (T, F) sequence dataset that is not a language model (causal defaults to false).
SEQ = DatasetInfo(name="seq", task="classification", input_shape=(12, 8), num_classes=3)


def spec(*layers: Any, head: str = "classifier") -> Any:
    return parse_spec({"head": head, "layers": list(layers)})


def issues(source: Any, info: DatasetInfo | None = None) -> list[str]:
    """Every ``path: message`` line of parsing (and, given ``info``, validating) ``source``."""
    with pytest.raises(SpecError) as caught:
        parsed = parse_spec(source)
        if info is not None:
            validate_spec(parsed, info)
    return [str(issue) for issue in caught.value.issues]


def own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- shapes and parameter counts -------------------------------------------------------


def test_attention_maps_features_to_dim_and_counts_its_four_linears() -> None:
    s = spec({"attention": {"heads": 2, "dim": 6}}, "flatten")
    report = validate_spec(s, SEQ)
    row = report.rows[0]
    assert (row.input_shape, row.output_shape) == ((12, 8), (12, 6))
    # q, k, v: Linear(8, 6); out: Linear(6, 6); all with bias
    assert row.params == 3 * (8 * 6 + 6) + 6 * 6 + 6
    body = build_body(s, SEQ)
    assert own_params(body[0]) == row.params == report.body_params
    assert tuple(body(torch.randn(5, 12, 8)).shape) == (5, 72)


def test_transformer_block_keeps_the_shape_and_mlp_defaults_to_four_times_dim() -> None:
    s = spec({"transformer_block": {"heads": 2, "dim": 8}}, "flatten")
    block = s.layers[0]
    assert block.mlp == 32
    report = validate_spec(s, SEQ)
    dim, mlp = 8, 32
    expected = 4 * dim + 4 * (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim)
    assert report.rows[0].output_shape == (12, 8)
    assert report.rows[0].params == expected
    body = build_body(s, SEQ)
    assert isinstance(body[0], TransformerLayer)
    assert own_params(body[0]) == expected
    assert tuple(body(torch.randn(2, 12, 8)).shape) == (2, 96)


@pytest.mark.parametrize(
    "layers",
    [
        [{"embedding": 16}, "positional", {"transformer_block": {"heads": 4, "dim": 16, "mlp": 24}}],
        [{"embedding": 12}, {"positional": 80}, {"attention": {"heads": 3, "dim": 9}}, "gelu"],
        [{"embedding": 8}, {"transformer_block": {"heads": 1, "dim": 8, "dropout": 0.1}}, {"linear": 5}],
        [
            {"embedding": 8},
            "positional",
            {"residual": [{"layernorm": None}, {"attention": {"heads": 2, "dim": 8}}]},
            {"transformer_block": {"heads": 2, "dim": 8}},
        ],
    ],
    ids=["block", "attention-dim-change", "block-linear", "residual-attention"],
)
def test_report_rows_match_the_built_modules(layers: list[Any], infos: dict[str, DatasetInfo]) -> None:
    info = infos["chartext"]
    s = spec(*layers)
    report = validate_spec(s, info)
    body = build_body(s, info)
    total = sum(p.numel() for p in body.parameters())
    assert report.body_params == total == sum(row.params for row in report.rows)
    top = [row for row in report.rows if row.path.count("[") == 1]
    for module, row in zip(body, top, strict=True):
        if row.kind != "residual":
            assert own_params(module) == row.params, row
    out = body(torch.randint(0, 60, (2, 64)))
    assert tuple(out.shape) == (2, *report.feature_shape)
    assert report.feature_shape[0] == 64  # per-step features for the language-model head


def test_positional_adds_a_learned_table_and_defaults_max_len_to_the_sequence() -> None:
    s = spec("positional", "flatten")
    assert s.layers[0].max_len is None
    report = validate_spec(s, SEQ)
    assert report.rows[0].params == 12 * 8
    body = build_body(s, SEQ)
    pos = body[0]
    assert isinstance(pos, PositionalEmbedding)
    assert isinstance(pos.table, nn.Embedding) and tuple(pos.table.weight.shape) == (12, 8)
    x = torch.randn(3, 12, 8)
    assert torch.equal(pos(x), x + pos.table.weight)
    longer = validate_spec(spec({"positional": {"max_len": 20}}, "flatten"), SEQ)
    assert longer.rows[0].params == 20 * 8


# ---- the attention itself --------------------------------------------------------------


def reference_attention(module: SelfAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / √d + mask) v per head, written out, then the output projection."""
    batch, steps, _ = x.shape
    heads = module.heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, steps, heads, -1).transpose(1, 2)

    q, k, v = split(module.q(x)), split(module.k(x)), split(module.v(x))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        future = torch.ones(steps, steps, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    y = scores.softmax(-1) @ v
    return module.out(y.transpose(1, 2).reshape(batch, steps, -1))


@pytest.mark.parametrize("causal", [True, False])
def test_self_attention_equals_the_written_out_formula(causal: bool) -> None:
    torch.manual_seed(0)
    module = SelfAttention(8, 12, heads=3, causal=causal, dropout=0.0).double()
    x = torch.randn(4, 10, 8, dtype=torch.float64)
    torch.testing.assert_close(module(x), reference_attention(module, x, causal))


def perturb_after(x: torch.Tensor, t: int) -> torch.Tensor:
    """``x`` with every step after ``t`` replaced by fresh noise."""
    y = x.clone()
    y[:, t + 1 :] = torch.randn_like(y[:, t + 1 :])
    return y


@pytest.mark.parametrize("kind", ["attention", "transformer_block"])
def test_causal_mask_hides_future_steps(kind: str) -> None:
    torch.manual_seed(1)
    args = {"heads": 2, "dim": 8}
    # the layer itself (body[0]): its (B, T, dim) output, before the flatten the head needs
    causal = build_body(spec({kind: {**args, "causal": True}}, "flatten"), SEQ)[0].eval()
    open_ = build_body(spec({kind: {**args, "causal": False}}, "flatten"), SEQ)[0].eval()
    open_.load_state_dict(causal.state_dict())
    x = torch.randn(3, 12, 8)
    t = 5
    later = perturb_after(x, t)
    # causal: steps 0..t are unchanged by anything after t; step t+1 does change
    assert torch.equal(causal(x)[:, : t + 1], causal(later)[:, : t + 1])
    assert not torch.allclose(causal(x)[:, t + 1], causal(later)[:, t + 1])
    # the same weights without the mask see the future (so the check above can fail)
    assert not torch.allclose(open_(x)[:, : t + 1], open_(later)[:, : t + 1])


def test_char_transformer_example_never_looks_ahead(infos: dict[str, DatasetInfo]) -> None:
    info = infos["chartext"]
    torch.manual_seed(2)
    body = build_body(parse_spec(EXAMPLE), info).eval()
    tokens = torch.randint(0, 60, (2, 64))
    changed = tokens.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 60
    assert torch.equal(body(tokens)[:, :40], body(changed)[:, :40])
    assert not torch.allclose(body(tokens)[:, 40], body(changed)[:, 40])


def test_causal_null_follows_the_task(infos: dict[str, DatasetInfo]) -> None:
    lm = build_body(spec({"embedding": 8}, {"attention": {"heads": 2, "dim": 8}}), infos["chartext"])
    assert lm[1].causal is True
    other = build_body(spec({"transformer_block": {"heads": 2, "dim": 8}}, "flatten"), SEQ)
    assert other[0].attn.causal is False
    explicit = build_body(spec({"attention": {"heads": 2, "dim": 8, "causal": True}}, "flatten"), SEQ)
    assert explicit[0].causal is True


def test_dropout_drops_attention_only_while_training() -> None:
    torch.manual_seed(3)
    body = build_body(spec({"attention": {"heads": 2, "dim": 8, "dropout": 0.5}}, "flatten"), SEQ)
    x = torch.randn(2, 12, 8)
    body.train()
    assert not torch.equal(body(x), body(x))
    body.eval()
    assert torch.equal(body(x), body(x))


# ---- errors ----------------------------------------------------------------------------


def test_heads_must_divide_dim_with_the_path(infos: dict[str, DatasetInfo]) -> None:
    s = spec({"embedding": 64}, "positional", "layernorm", {"attention": {"heads": 5, "dim": 64}})
    with pytest.raises(SpecError) as caught:
        validate_spec(s, infos["chartext"])
    assert str(caught.value) == "layers[3].attention.heads: must divide dim (64), got 5"


ATT = {"heads": 2, "dim": 8}


@pytest.mark.parametrize(
    ("kind", "args", "where", "message"),
    [
        ("attention", {"heads": 2.0, "dim": 8}, ".heads", "expected an integer, got 2.0"),
        ("attention", {"heads": "2", "dim": 8}, ".heads", "expected an integer, got '2'"),
        ("attention", {"heads": True, "dim": 8}, ".heads", "expected an integer, got True"),
        ("attention", {"heads": 0, "dim": 8}, ".heads", "must be greater than 0, got 0"),
        ("attention", {"dim": 8}, ".heads", "missing required field"),
        ("attention", 4, "", "expected a mapping of arguments (heads, dim, causal, dropout), got 4"),
        ("attention", {**ATT, "causal": "yes"}, ".causal", "expected true or false, got 'yes'"),
        ("attention", {**ATT, "dropout": 1.0}, ".dropout", "must be less than 1.0, got 1.0"),
        ("transformer_block", {**ATT, "mlp": -1}, ".mlp", "must be greater than 0, got -1"),
        ("transformer_block", {**ATT, "width": 3}, ".width", "unknown field"),
        ("positional", {"max_len": 0}, ".max_len", "must be greater than 0, got 0"),
        ("positional", "long", ".max_len", "expected an integer, got 'long'"),
    ],
)
def test_bad_values_are_refused_while_parsing(kind: str, args: Any, where: str, message: str) -> None:
    found = issues({"head": "classifier", "layers": [{kind: args}]})
    assert found == [f"layers[0].{kind}{where}: {message}"]


@pytest.mark.parametrize(
    ("layers", "dataset", "expected"),
    [
        (
            [{"attention": {"heads": 1, "dim": 8}}],
            "digits",
            "layers[0].attention: attention needs a sequence input (T, F), got (1, 8, 8)",
        ),
        (
            ["flatten", {"transformer_block": {"heads": 1, "dim": 8}}],
            "mnist1d",
            "layers[1].transformer_block: transformer_block needs a sequence input (T, F), got (40,)",
        ),
        (
            ["flatten", "positional"],
            "mnist1d",
            "layers[1].positional: positional needs a sequence input (T, F), got (40,)",
        ),
        (
            [{"embedding": 16}, {"transformer_block": {"heads": 2, "dim": 32}}],
            "chartext",
            "layers[1].transformer_block.dim: must equal the input features (16): the residual stream "
            "keeps its width (add linear: 32 before the block), got 32",
        ),
        (
            [{"embedding": 16}, {"positional": 32}],
            "chartext",
            "layers[1].positional.max_len: 32 is shorter than the input sequence length 64",
        ),
        (
            [{"embedding": 16}, {"attention": {"heads": 2, "dim": 16, "causal": False}}],
            "chartext",
            "layers[1].attention.causal: false on the language_model dataset 'chartext' lets step t see "
            "step t+1, its own target: use causal: true (or omit it)",
        ),
        (
            [{"attention": {"heads": 2, "dim": 16}}],
            "chartext",
            "layers[0].attention: input is integer token ids of shape (64,): the first layer must be "
            "embedding",
        ),
    ],
    ids=["rank3", "rank1", "positional-rank1", "block-width", "max-len", "lm-not-causal", "tokens"],
)
def test_shape_and_task_errors_name_the_layer(
    layers: list[Any], dataset: str, expected: str, infos: dict[str, DatasetInfo]
) -> None:
    assert issues({"head": "classifier", "layers": [*layers, "flatten"]}, infos[dataset])[0] == expected


def test_width_limits_cover_dim_and_mlp() -> None:
    s = spec({"transformer_block": {"heads": 2, "dim": 8, "mlp": 100}}, "flatten")
    with pytest.raises(SpecError) as caught:
        validate_spec(s, SEQ, SpecLimits(max_width=64))
    assert str(caught.value) == "layers[0].transformer_block.mlp: 100 exceeds the width limit of 64"
    with pytest.raises(SpecError) as caught:
        validate_spec(spec({"attention": {"heads": 2, "dim": 80}}, "flatten"), SEQ, SpecLimits(max_width=64))
    assert str(caught.value) == "layers[0].attention.dim: 80 exceeds the width limit of 64"


# ---- canonical form --------------------------------------------------------------------


def test_omitted_defaults_hash_like_written_ones() -> None:
    short = spec({"transformer_block": {"heads": 2, "dim": 8}}, "positional")
    full = spec(
        {"transformer_block": {"heads": 2, "dim": 8, "mlp": 32, "causal": None, "dropout": 0.0}},
        {"positional": {"max_len": None}},
    )
    assert spec_hash(short) == spec_hash(full)
    assert parse_spec(short.canonical()) == short
    assert spec_hash(spec({"transformer_block": {"heads": 2, "dim": 8, "causal": True}})) != spec_hash(
        spec({"transformer_block": {"heads": 2, "dim": 8}})
    )


# ---- Alrao grouping --------------------------------------------------------------------


def test_every_parameter_lands_in_exactly_one_alrao_group(infos: dict[str, DatasetInfo]) -> None:
    body = build_body(parse_spec(EXAMPLE), infos["chartext"])
    groups = alrao_param_groups(body)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in body.parameters()}

    by_param = {id(p): (g, i) for g in groups for i, p in enumerate(g["params"])}
    for name, module in body.named_modules():
        if isinstance(module, SelfAttention):
            # q, k, v and out: one rate per output feature (a weight row and its bias entry)
            for proj in (module.q, module.k, module.v, module.out):
                group, _ = by_param[id(proj.weight)]
                assert group["kind"] == "linear" and group["num_features"] == proj.out_features == 32
                assert group["params"] == [proj.weight, proj.bias] and group["feature_dims"] == [0, 0]
        if isinstance(module, nn.LayerNorm):
            group, _ = by_param[id(module.weight)]
            assert group["kind"] == "layernorm" and group["num_features"] == 32, name
        if isinstance(module, PositionalEmbedding):
            group, index = by_param[id(module.table.weight)]
            # a position table column = one feature, like a token embedding's
            assert group["kind"] == "embedding" and group["feature_dims"][index] == 1
            assert group["num_features"] == 32


# ---- end to end: the example language model ----------------------------------------------


def test_char_transformer_trains_one_epoch_below_the_unigram_baseline() -> None:
    """One short Alrao epoch of the example beats predicting every character by its frequency."""
    from archscreen.core.data import load_dataset
    from archscreen.core.screening import AlraoScreener
    from archscreen.core.training.loop import TrainConfig

    data = load_dataset("chartext", seed=0)
    counts = torch.bincount(data.y_train.flatten(), minlength=data.info.num_classes).double()
    frequencies = counts / counts.sum()
    unigram_bpc = float(-frequencies[data.y_val.flatten()].log2().mean())

    result = AlraoScreener(num_copies=4).screen(
        parse_spec(EXAMPLE), data, TrainConfig(max_epochs=1, batch_size=32, seed=0)
    )
    assert result.epochs == 1 and result.val_bpc is not None
    assert math.isfinite(result.val_bpc)
    assert result.val_bpc < unigram_bpc - 0.2, (result.val_bpc, unigram_bpc)
