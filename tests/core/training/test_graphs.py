"""The CUDA-graphs switch (core/training/graphs.py) on a machine without CUDA: a logged no-op that
changes nothing in the result; on CUDA it compiles the body in place (gpu_tests/ runs it for real)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.screening import AlraoScreener
from archscreen.core.training import graphs
from archscreen.core.training.loop import TrainConfig
from archscreen.settings import Settings

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)


def test_on_the_cpu_it_is_a_noop_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    model = Model()
    with caplog.at_level(logging.INFO, logger=graphs.__name__):
        line = graphs.enable_cuda_graphs(model, "cpu")
    assert line == "CUDA graphs off: CUDA graphs need a CUDA device; this job trains on cpu"
    assert line in caplog.text
    assert model.body._compiled_call_impl is None  # nothing compiled


def test_cuda_asked_without_a_device_is_a_noop_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the machine without a GPU
    assert graphs.cuda_graphs_unavailable("cuda") == "CUDA graphs need a CUDA device; torch sees none"


def test_on_cuda_it_compiles_the_body_in_place_for_cuda_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[nn.Module, dict[str, Any]]] = []
    monkeypatch.setattr(graphs, "cuda_graphs_unavailable", lambda device: None)
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: calls.append((self, kw)))
    model = Model()
    keys = list(model.state_dict())
    line = graphs.enable_cuda_graphs(model, "cuda")
    assert calls == [(model.body, {"mode": "reduce-overhead", "dynamic": False})]
    assert line == "CUDA graphs on: Sequential compiled with torch.compile(mode='reduce-overhead')"
    assert list(model.state_dict()) == keys  # checkpoints keep their keys


def test_a_screener_with_the_switch_on_the_cpu_screens_exactly_as_without() -> None:
    config = TrainConfig(max_epochs=2, patience=5, batch_size=32, max_steps_per_epoch=4, seed=3)
    plain = AlraoScreener(base="sgd").screen(MLP, "mnist1d", config).to_dict()
    switched = graphs.with_cuda_graphs(AlraoScreener(base="sgd"), "cpu")
    result = switched.screen(MLP, "mnist1d", config).to_dict()
    assert switched.cuda_graphs.startswith("CUDA graphs off: ")  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(switched) and type(switched) is AlraoScreener
    for key in ("seconds", "curves"):
        plain.pop(key), result.pop(key)
    assert result == plain


def test_the_setting_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().cuda_graphs is False
    monkeypatch.setenv("ARCHSCREEN_CUDA_GRAPHS", "1")
    assert Settings().cuda_graphs is True
