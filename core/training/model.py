"""The trainable unit: a spec's body plus an output head.

Two heads share one output contract (``loss``, ``avg_nll``, ``avg_log_prob``):
:class:`PlainHead` (one ordinary output layer, for fixed-rate baselines and
tuners) and :class:`~archscreen.core.alrao.AlraoHead` (N copies averaged by
Switch). ``avg_log_prob`` holds class log-probabilities for classification and
language modelling, and the predicted mean for regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archscreen.core.data.base import DatasetInfo, Task
from archscreen.core.spec import ArchSpec, build_body, feature_shape, parse_spec

LOG_2PI = math.log(2 * math.pi)


@dataclass
class PlainOutput:
    loss: torch.Tensor
    avg_nll: torch.Tensor
    avg_log_prob: torch.Tensor


def head_out_features(info: DatasetInfo) -> int:
    """Classes (classification, language model) or target size (regression)."""
    if info.task == "regression":
        if info.target_dim is None:
            raise ValueError(f"dataset {info.name}: regression needs target_dim")
        return info.target_dim
    if info.num_classes is None:
        raise ValueError(f"dataset {info.name}: {info.task} needs num_classes")
    return info.num_classes


def gaussian_nll(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood of ``y`` under N(mean, exp(log_var)).

    ``out`` is ``(B, 2D)``: means then log-variances.
    """
    mean, log_var = out.chunk(2, dim=-1)
    return 0.5 * (LOG_2PI + log_var + (y - mean).pow(2) * torch.exp(-log_var)).sum(dim=-1)


class PlainHead(nn.Module):
    """One ordinary output layer: softmax classifier or Gaussian regression head."""

    def __init__(self, in_features: int, out_features: int, task: Task) -> None:
        super().__init__()
        self.task = task
        width = 2 * out_features if task == "regression" else out_features
        self.linear = nn.Linear(in_features, width)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> PlainOutput:
        out = self.linear(z)
        if self.task == "regression":
            nll = gaussian_nll(out, y).mean()
            return PlainOutput(loss=nll, avg_nll=nll, avg_log_prob=out.chunk(2, dim=-1)[0])
        log_prob = F.log_softmax(out, dim=-1)
        nll = F.nll_loss(log_prob.reshape(-1, log_prob.shape[-1]), y.reshape(-1))
        return PlainOutput(loss=nll, avg_nll=nll, avg_log_prob=log_prob)


class ScreenModel(nn.Module):
    """``body`` then ``head``; ``forward(x, y)`` returns the head's output object.

    ``raw_input``: an exported model's input module (a table's preprocessing,
    :class:`~archscreen.core.training.inputs.TableInput`) applied before the body; None while
    training, where the dataset already holds the preprocessed features.
    """

    def __init__(
        self, body: nn.Module, head: nn.Module, task: Task, raw_input: nn.Module | None = None
    ) -> None:
        super().__init__()
        if raw_input is not None:
            self.input = raw_input
        self.body = body
        self.head = head
        self.task = task

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raw_input = getattr(self, "input", None)
        return self.body(x if raw_input is None else raw_input(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        return self.head(self._features(x), y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Without targets (a :class:`PlainHead` model): class log-probabilities, or the predicted
        mean for regression."""
        head = self.head
        if not isinstance(head, PlainHead):
            raise TypeError("predict() needs a PlainHead model (an exported tuning model)")
        out = head.linear(self._features(x))
        if self.task == "regression":
            return out.chunk(2, dim=-1)[0]
        return F.log_softmax(out, dim=-1)

    def after_step(self, out: Any) -> None:
        # Alrao: the Switch posterior is updated after the parameter step with
        # the copies' log-likelihoods of that minibatch (paper, Algorithm 1).
        switch = getattr(self.head, "switch", None)
        if switch is not None:
            switch.update(out.copy_loglik)


def build_plain_model(
    spec: Any, info: DatasetInfo, preprocessing: dict[str, Any] | None = None
) -> ScreenModel:
    """The spec's body with a :class:`PlainHead`: the model a tuning job trains and hands over.

    ``spec`` is an :class:`~archscreen.core.spec.ArchSpec` or anything
    :func:`~archscreen.core.spec.parse_spec` takes (the spec dict stored with an exported model).
    ``preprocessing``: a table's :class:`~archscreen.core.data.preprocess.TablePreprocessor`
    state, or an image upload's normalisation; the model then starts with its input module
    (:func:`~archscreen.core.training.inputs.input_module`) and takes raw rows or raw images. Load
    an exported tuning model with::

        f = torch.load("best.pt", weights_only=True)
        model = build_plain_model(f["spec"], DatasetInfo(**f["dataset"]), f.get("preprocessing"))
        model.load_state_dict(f["state_dict"], strict=True)
    """
    arch = spec if isinstance(spec, ArchSpec) else parse_spec(spec)
    body = build_body(arch, info)
    head = PlainHead(feature_shape(arch, info)[-1], head_out_features(info), info.task)
    raw_input = None
    if preprocessing is not None:
        from archscreen.core.training.inputs import input_module

        raw_input = input_module(preprocessing)
    return ScreenModel(body, head, info.task, raw_input)
