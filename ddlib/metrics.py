"""Accuracy metrics of PROTOCOL 1.6 computed from confusion matrices."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = test images of class i predicted as j."""
    return np.bincount(num_classes * np.asarray(y_true) + np.asarray(y_pred),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(confusion: np.ndarray) -> float:
    """Top-1 accuracy in %, rounded to 2 decimals."""
    return round(100.0 * float(np.trace(confusion)) / max(int(confusion.sum()), 1), 2)


def per_class_accuracy(confusion: np.ndarray) -> list[float]:
    """Accuracy (%) of each true class."""
    totals = np.maximum(confusion.sum(axis=1), 1)
    return [round(v, 2) for v in (100.0 * np.diag(confusion) / totals).tolist()]


def average_incremental_accuracy(accs: list[float], *, include_first: bool = True) -> float:
    """Mean of the per-round accuracies (round 1 included by default, PROTOCOL 1.6)."""
    values = accs if include_first else accs[1:]
    return round(float(np.mean(values)), 2) if values else float("nan")
