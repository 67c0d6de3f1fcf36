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


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int = 5) -> float:
    """% of rows of `scores` (M, N) whose true class is among their k highest scores,
    rounded to 2 decimals; k is capped at N (top-5 of 3 classes counts every image)."""
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return round(100.0 * float((top == np.asarray(y_true)[:, None]).any(axis=1).mean()), 2)


def per_class_accuracy(confusion: np.ndarray) -> list[float]:
    """Accuracy (%) of each true class."""
    totals = np.maximum(confusion.sum(axis=1), 1)
    return [round(v, 2) for v in (100.0 * np.diag(confusion) / totals).tolist()]


def average_incremental_accuracy(accs: list[float], *, include_first: bool = True) -> float:
    """Mean of the per-round accuracies (round 1 included by default, PROTOCOL 1.6)."""
    values = accs if include_first else accs[1:]
    return round(float(np.mean(values)), 2) if values else float("nan")


ERROR_TYPES = ("confusion", "forgetting", "other", "old_same", "old_diff", "new_same", "new_diff")


def error_split(confusion: np.ndarray, coarse: np.ndarray, num_old: int) -> dict[str, int]:
    """Misclassified test images of one round, split by superclass (PROTOCOL 5.1, Table 2).

    `confusion` (N, N): counts[i, j] = images of class i predicted j; `coarse` (>= N,):
    superclass of each class; classes 0..num_old-1 are the old ones (labels are class-order
    positions). Returns the seed's counts - confusion (same superclass, any image),
    forgetting (other superclass, old-class image), other (other superclass, new-class
    image) - and the four-way split old/new image x same/diff superclass.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    n = counts.shape[0]
    if counts.shape != (n, n):
        raise ValueError(f"confusion must be square, got shape {counts.shape}")
    if not 0 <= num_old <= n:
        raise ValueError(f"num_old={num_old} must lie in 0..{n}")
    sup = np.asarray(coarse)[:n]
    if len(sup) < n:
        raise ValueError(f"coarse has {len(sup)} entries, the confusion matrix {n} classes")
    errors = counts * (1 - np.eye(n, dtype=np.int64))   # off-diagonal = misclassified
    same = sup[:, None] == sup[None, :]                 # (N, N): coarse(y) == coarse(ŷ)
    old = np.arange(n) < num_old                        # rows of old-class images
    split = {"old_same": errors[old][same[old]].sum(), "old_diff": errors[old][~same[old]].sum(),
             "new_same": errors[~old][same[~old]].sum(),
             "new_diff": errors[~old][~same[~old]].sum()}
    split = {k: int(v) for k, v in split.items()}
    return {"confusion": split["old_same"] + split["new_same"], "forgetting": split["old_diff"],
            "other": split["new_diff"], **split}
