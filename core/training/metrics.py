"""Class-balanced scores of a classifier from its confusion matrix: balanced accuracy and macro-F1.

Accuracy ranks a classifier that always answers the majority class well on an imbalanced split;
these two weigh every class equally. Both come from one confusion matrix accumulated on the
device during evaluation (:func:`confusion_counts` per minibatch, no host sync), read once per
split by :func:`class_scores`. They follow ``sklearn.metrics``' definitions (the unit tests
compare against it):

* balanced accuracy: the mean recall over the classes present in the true labels;
* macro-F1: the mean of ``2 TP / (2 TP + FP + FN)`` over the classes present in the true or
  the predicted labels (a class predicted but never true scores 0; sklearn's ``zero_division``
  warning case).
"""

from __future__ import annotations

import torch

__all__ = ["class_scores", "confusion_counts"]


def confusion_counts(target: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The ``(n_classes, n_classes)`` counts of one minibatch: row the true class, column the
    predicted one (int64, on the labels' device)."""
    flat = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_scores(confusion: torch.Tensor) -> tuple[float | None, float | None]:
    """``(balanced accuracy, macro-F1)`` of a confusion matrix; ``(None, None)`` when it is empty."""
    counts = confusion.double()
    hits = counts.diagonal()
    true, predicted = counts.sum(dim=1), counts.sum(dim=0)
    present = true > 0
    if not bool(present.any()):
        return None, None
    balanced = (hits[present] / true[present]).mean().item()
    seen = present | (predicted > 0)
    macro_f1 = (2 * hits[seen] / (true[seen] + predicted[seen])).mean().item()
    return balanced, macro_f1
