"""Built bodies match the report: shapes, parameters, projections, RNN wrappers."""

# Spec tables keep one case per line, so their lines run long.

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import (
    RecurrentBlock,
    ResidualBlock,
    SpecError,
    build_body,
    feature_shape,
    parse_spec,
    validate_spec,
)

Batch = Callable[..., torch.Tensor]


def _spec(layers: str, head: str = "classifier") -> str:
    return f"head: {head}\nlayers: {layers}\n"


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("dataset", "layers", "skip_type", "stride", "features"),
    [
        # same shape: identity skip, no parameters
        (
            "mnist1d",
            "[{residual: [{conv1d: {out: 1, kernel: 3, padding: 1}}]}, flatten]",
            nn.Identity,
            None,
            (40,),
        ),
        # channels change, length kept: 1x1 conv1d, stride 1
        (
            "mnist1d",
            "[{residual: [{conv1d: {out: 4, kernel: 3, padding: 1}}]}, flatten]",
            nn.Conv1d,
            (1,),
            (160,),
        ),
        # channels and length change: strided 1x1 conv1d
        (
            "mnist1d",
            "[{residual: [{conv1d: {out: 4, kernel: 3, stride: 2, padding: 1}}]}, flatten]",
            nn.Conv1d,
            (2,),
            (80,),
        ),
        # odd sizes: stride 3 maps length 40 to 14, as the body's padded stride-3 conv does
        (
            "mnist1d",
            "[{residual: [{conv1d: {out: 2, kernel: 3, stride: 3, padding: 1}}]}, flatten]",
            nn.Conv1d,
            (3,),
            (28,),
        ),
        # 2-D downsampling block: strided 1x1 conv2d
        (
            "digits",
            "[{residual: [{conv2d: {out: 8, kernel: 3, stride: 2, padding: 1}}, relu]}, global_avgpool]",
            nn.Conv2d,
            (2, 2),
            (8,),
        ),
        # flat features change width: linear projection
        ("mnist1d", "[flatten, {residual: [{linear: 16}, relu]}]", nn.Linear, None, (16,)),
        # explicit linear projection even though shapes match
        ("regression", "[{residual: {layers: [{linear: 16}], projection: linear}}]", nn.Linear, None, (16,)),
        # (T, F) sequence block without convs: linear on the last dim
        (
            "mnist1d",
            "[{permute: [1, 0]}, {residual: [{lstm: 8}]}, {lstm: {hidden: 4, return: last}}]",
            nn.Linear,
            None,
            (4,),
        ),
    ],
)
def test_residual_projection(
    dataset: str,
    layers: str,
    skip_type: type[nn.Module],
    stride: tuple[int, ...] | None,
    features: tuple[int, ...],
    infos: dict[str, DatasetInfo],
    make_batch: Batch,
) -> None:
    head = "regression" if dataset == "regression" else "classifier"
    spec = parse_spec(_spec(layers, head))
    info = infos[dataset]
    report = validate_spec(spec, info)
    body = build_body(spec, info)
    blocks = [m for m in body.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 1
    skip = blocks[0].skip
    assert type(skip) is skip_type
    if stride is not None:
        assert isinstance(skip, nn.Conv1d | nn.Conv2d)
        assert tuple(skip.stride) == stride and tuple(skip.kernel_size) == (1,) * len(stride)
    residual_row = next(row for row in report.rows if row.kind == "residual")
    assert residual_row.params == _params(skip)
    assert report.feature_shape == features == feature_shape(spec, info)
    assert tuple(body(make_batch(info, 2)).shape) == (2, *features)


def test_residual_adds_skip_to_body(infos: dict[str, DatasetInfo]) -> None:
    spec = parse_spec(_spec("[{residual: [{linear: {out: 16, bias: false}}]}]", "regression"))
    body = build_body(spec, infos["regression"])
    block = body[0]
    assert isinstance(block, ResidualBlock)
    nn.init.zeros_(block.body[0].weight)  # body(x) == 0, so the output is exactly x
    x = torch.randn(5, 16)
    torch.testing.assert_close(body(x), x)


@pytest.mark.parametrize(("kind", "rnn_type"), [("lstm", nn.LSTM), ("gru", nn.GRU)])
@pytest.mark.parametrize("returns", ["sequence", "last"])
def test_recurrent_wrapper_exposes_rnn(
    kind: str, rnn_type: type[nn.Module], returns: str, infos: dict[str, DatasetInfo]
) -> None:
    spec = parse_spec(
        _spec(f"[{{permute: [1, 0]}}, {{{kind}: {{hidden: 12, layers: 2, return: {returns}}}}}, flatten]")
    )
    info = infos["mnist1d"]
    body = build_body(spec, info)
    wrapper = body[1]
    assert isinstance(wrapper, RecurrentBlock)
    assert type(wrapper.rnn) is rnn_type and wrapper.rnn.batch_first and wrapper.rnn.num_layers == 2
    assert dict(wrapper.named_children()) == {"rnn": wrapper.rnn}  # a direct child, nothing else
    assert [m for m in body.modules() if isinstance(m, nn.LSTM | nn.GRU)] == [wrapper.rnn]
    out = wrapper(torch.randn(3, 40, 1))
    assert isinstance(out, torch.Tensor)  # only the output, never (output, state)
    assert tuple(out.shape) == ((3, 40, 12) if returns == "sequence" else (3, 12))
    x = torch.randn(3, 40, 1)
    sequence, _ = wrapper.rnn(x)
    torch.testing.assert_close(wrapper(x), sequence if returns == "sequence" else sequence[:, -1])
    report = validate_spec(spec, info)
    assert report.rows[1].params == _params(wrapper.rnn)
    assert report.feature_shape == ((480,) if returns == "sequence" else (12,))


def test_language_model_body_keeps_time_axis(infos: dict[str, DatasetInfo], make_batch: Batch) -> None:
    info = infos["chartext"]
    spec = parse_spec(_spec("[{embedding: 16}, {gru: 32}, layernorm, {linear: 24}, gelu]"))
    report = validate_spec(spec, info)
    assert report.feature_shape == (64, 24)
    assert report.head_outputs == 60 and report.head_params == 24 * 60 + 60
    body = build_body(spec, info)
    tokens = make_batch(info, 4)
    assert tokens.dtype == torch.int64
    features = body(tokens)
    assert tuple(features.shape) == (4, 64, 24)
    logits = nn.Linear(24, 60)(features)  # the trainer's head on the last feature dim
    assert tuple(logits.shape) == (4, 64, 60)


def test_rows_match_each_built_module(infos: dict[str, DatasetInfo]) -> None:
    spec = parse_spec(
        _spec(
            "[{conv2d: {out: 8, kernel: [3, 1], padding: [1, 0]}}, batchnorm, {maxpool2d: {kernel: 2}},"
            " {conv2d: {out: 8, kernel: 3, padding: 1, groups: 8, bias: false}}, flatten, batchnorm,"
            " {linear: 10}, layernorm, {dropout: 0.2}, silu]"
        )
    )
    info = infos["digits"]
    report = validate_spec(spec, info)
    body = build_body(spec, info)
    assert len(report.rows) == len(body)
    for row, module in zip(report.rows, body, strict=True):
        assert row.params == _params(module), row.path
    assert isinstance(body[1], nn.BatchNorm2d) and isinstance(body[5], nn.BatchNorm1d)
    assert [row.output_shape for row in report.rows[:3]] == [(8, 8, 8), (8, 8, 8), (8, 4, 4)]
    body.eval()
    out = body(torch.randn(2, 1, 8, 8))
    assert tuple(out.shape) == (2, 10)


def test_build_validates_first(infos: dict[str, DatasetInfo]) -> None:
    spec = parse_spec(_spec("[{conv2d: {out: 4, kernel: 3}}]"))
    with pytest.raises(
        SpecError, match=r"^head: classifier needs flat features, got \(4, 6, 6\): add flatten$"
    ):
        build_body(spec, infos["digits"])
    with pytest.raises(SpecError):
        feature_shape(spec, infos["digits"])


def test_nested_residual_paths_and_rows(infos: dict[str, DatasetInfo]) -> None:
    spec = parse_spec(
        _spec(
            "[flatten, {residual: [{linear: 8}, {residual: [relu, {linear: 8}]}, {linear: 16}]}, {linear: 4}]"
        )
    )
    report = validate_spec(spec, infos["mnist1d"])
    assert [row.path for row in report.rows] == [
        "layers[0]",
        "layers[1]",
        "layers[1].residual.layers[0]",
        "layers[1].residual.layers[1]",
        "layers[1].residual.layers[1].residual.layers[0]",
        "layers[1].residual.layers[1].residual.layers[1]",
        "layers[1].residual.layers[2]",
        "layers[2]",
    ]
    assert report.num_layers == 8
    body = build_body(spec, infos["mnist1d"])
    assert report.body_params == _params(body)
    assert tuple(body(torch.randn(2, 1, 40)).shape) == (2, 4)
    with pytest.raises(
        SpecError, match=r"^layers\[1\]\.residual\.layers\[1\]\.residual\.layers\[1\]\.linear\.out: "
    ):
        parse_spec(_spec("[flatten, {residual: [{linear: 8}, {residual: [relu, {linear: 0}]}]}]"))
