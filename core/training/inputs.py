"""The input module of an exported model: a table's preprocessing, or an image upload's
normalisation (:class:`ImageInput`), as torch buffers.

:class:`TableInput` does what :meth:`TablePreprocessor.transform
<archscreen.core.data.preprocess.TablePreprocessor.transform>` does, with the same float32
operations in the same order, so an exported model that starts with it takes the raw rows
(:meth:`~archscreen.core.data.preprocess.TablePreprocessor.encode_raw`: numbers as they are,
``NaN`` for a gap, a category's vocabulary index) and computes the features it was trained on
bit for bit. Its buffers live in the model's ``state_dict`` under ``input.``; the column names
and vocabularies (strings) travel beside it in the file (``f["preprocessing"]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archscreen.core.data.images import IMAGE_STATE_KIND
from archscreen.core.data.preprocess import TablePreprocessor


class TableInput(nn.Module):
    """Raw encoded rows ``(N, R)`` -> features ``(N, F)``: impute, standardise, flag, one-hot."""

    numeric_index: torch.Tensor
    median: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    indicator_index: torch.Tensor
    categorical_index: torch.Tensor
    onehot_width: torch.Tensor
    onehot_offset: torch.Tensor

    def __init__(self, prep: TablePreprocessor) -> None:
        super().__init__()
        numeric = prep.numeric
        categorical = prep.categorical
        widths = [len(c.categories) + 1 for _, c in categorical]
        self.num_features = len(prep.feature_names())
        self.register_buffer("numeric_index", torch.tensor([i for i, _ in numeric], dtype=torch.long))
        self.register_buffer("median", torch.tensor([c.median for _, c in numeric], dtype=torch.float32))
        self.register_buffer("mean", torch.tensor([c.mean for _, c in numeric], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([c.scale for _, c in numeric], dtype=torch.float32))
        flagged = [k for k, (_, c) in enumerate(numeric) if c.missing_indicator]
        self.register_buffer("indicator_index", torch.tensor(flagged, dtype=torch.long))
        self.register_buffer("categorical_index", torch.tensor([i for i, _ in categorical], dtype=torch.long))
        self.register_buffer("onehot_width", torch.tensor(widths, dtype=torch.long))
        offsets = [sum(widths[:k]) for k in range(len(widths))]
        self.register_buffer("onehot_offset", torch.tensor(offsets, dtype=torch.long))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        blocks = []
        if len(self.numeric_index):
            num = raw[:, self.numeric_index]
            gaps = torch.isnan(num)
            filled = torch.where(gaps, self.median, num)
            blocks.append((filled - self.mean) / self.scale)
            blocks.append(gaps[:, self.indicator_index].to(raw.dtype))
        if len(self.categorical_index):
            codes = raw[:, self.categorical_index]
            last = (self.onehot_width - 1).to(raw.dtype)
            known = (codes >= 0) & (codes < last)
            slot = torch.where(known, codes, last).long() + self.onehot_offset
            onehot = torch.zeros(len(raw), int(self.onehot_width.sum()), dtype=raw.dtype, device=raw.device)
            blocks.append(onehot.scatter_(1, slot, 1.0))
        return torch.cat(blocks, dim=1)


class ImageInput(nn.Module):
    """Raw pixels ``(N, C, H, W)``, 0..255 -> the normalised inputs the network was trained on:
    times ``scale`` (1/255), minus the train split's per-channel ``mean``, divided by its ``std``
    (:func:`~archscreen.core.data.images.normalise_images`, the same float32 operations)."""

    scale: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(state["scale"]), dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(state["mean"], dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(state["std"], dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw.to(torch.float32) * self.scale - self.mean) / self.std


def input_module(preprocessing: dict[str, Any]) -> nn.Module:
    """The input module for a dataset's stored preprocessing state: an image upload's
    normalisation, or a table's preprocessing."""
    if preprocessing.get("kind") == IMAGE_STATE_KIND:
        return ImageInput(preprocessing)
    return TableInput(TablePreprocessor.from_state(preprocessing))
