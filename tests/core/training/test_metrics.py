"""Balanced accuracy and macro-F1 (core/training/metrics.py, evaluate()) against sklearn.metrics."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score
from torch import nn

from archscreen.core.training.loop import evaluate
from archscreen.core.training.metrics import class_scores, confusion_counts

# Imbalanced toy labels: class 0 is 80 % of the split. The cases cover a majority-class guesser,
# a class never predicted, and a class predicted but never true (sklearn's zero_division case).
TRUE = [0] * 16 + [1] * 3 + [2]
CASES = {
    "majority guesser": [0] * 20,
    "mixed": [0] * 14 + [1, 2] + [1, 0, 1] + [2],
    "predicts an absent class": [0] * 15 + [3] + [1, 1, 3] + [0],
}


def sklearn_scores(true: list[int], pred: list[int]) -> tuple[float, float]:
    return balanced_accuracy_score(true, pred), f1_score(true, pred, average="macro", zero_division=0)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("pred", CASES.values(), ids=list(CASES))
def test_scores_match_sklearn_on_imbalanced_labels(pred: list[int]) -> None:
    y, p = torch.tensor(TRUE), torch.tensor(pred)
    # accumulated over minibatches, as evaluate() does
    confusion = sum(confusion_counts(y[i : i + 7], p[i : i + 7], 4) for i in range(0, len(y), 7))
    assert isinstance(confusion, torch.Tensor) and int(confusion.sum()) == len(TRUE)
    balanced, macro_f1 = class_scores(confusion)
    want_balanced, want_f1 = sklearn_scores(TRUE, pred)
    assert balanced == pytest.approx(want_balanced, abs=1e-12)
    assert macro_f1 == pytest.approx(want_f1, abs=1e-12)


def test_an_empty_split_has_no_scores() -> None:
    assert class_scores(torch.zeros(3, 3, dtype=torch.long)) == (None, None)


class FixedPredictions(nn.Module):
    """Predicts ``PRED[i]`` for row ``i`` (x holds the row index): the averaged prediction of an
    Alrao model is its ``avg_log_prob`` as here, so evaluate() scores what ``val_accuracy`` does."""

    task = "classification"

    def __init__(self, pred: list[int], n_classes: int) -> None:
        super().__init__()
        self.table = torch.nn.functional.one_hot(torch.tensor(pred), n_classes).float().log_softmax(-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        log_prob = self.table[x.long()]
        nll = -log_prob.gather(1, y[:, None]).mean()
        return SimpleNamespace(avg_nll=nll, avg_log_prob=log_prob)


def test_evaluate_reports_them_beside_accuracy() -> None:
    pred = CASES["mixed"]
    m = evaluate(FixedPredictions(pred, 3), torch.arange(len(TRUE)), torch.tensor(TRUE), batch_size=6)
    want_balanced, want_f1 = sklearn_scores(TRUE, pred)
    assert m.accuracy == pytest.approx(sum(t == p for t, p in zip(TRUE, pred, strict=True)) / len(TRUE))
    assert m.balanced_accuracy == pytest.approx(want_balanced) and m.macro_f1 == pytest.approx(want_f1)
    # on these imbalanced labels the two disagree with accuracy: that is why they are offered
    assert m.balanced_accuracy is not None and m.balanced_accuracy < m.accuracy
