"""Classification metrics, vectorised with NumPy (no Python loop over samples).

Conventions follow scikit-learn: confusion matrix rows are true classes and columns predicted
classes; a precision/recall/F1 whose denominator is zero is reported as 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy", "classification_report", "confusion_matrix"]


def accuracy(pred: Any, true: Any) -> float:
    """Fraction (0..1) of predictions equal to the true labels; 0.0 for no samples."""
    p, t = _pair(pred, true)
    return float(np.mean(p == t)) if p.size else 0.0


def confusion_matrix(pred: Any, true: Any, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts: ``[i, j]`` = samples of class i predicted j."""
    p, t = _pair(pred, true)
    if num_classes < 1:
        raise ValueError("num_classes must be at least 1")
    for name, labels in (("predicted", p), ("true", t)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def classification_report(
    pred: Any, true: Any, num_classes: int, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, averages and the confusion matrix.

    Returns plain Python types (JSON-ready)::

        {"accuracy": float, "num_samples": int,
         "per_class": [{"class": i, "name": str, "precision", "recall", "f1", "support"}, ...],
         "macro_avg": {"precision", "recall", "f1", "support"},
         "weighted_avg": {...}, "confusion_matrix": [[int, ...], ...]}
    """
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    matrix = confusion_matrix(pred, true, num_classes)
    correct = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _ratio(correct, predicted)
    recall = _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(support.sum())
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    per_class = [
        {
            "class": i,
            "name": str(names[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(num_classes)
    ]
    weights = support / total if total else np.zeros(num_classes)
    return {
        "accuracy": float(correct.sum() / total) if total else 0.0,
        "num_samples": total,
        "per_class": per_class,
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": total,
        },
        "weighted_avg": {
            "precision": float(precision @ weights),
            "recall": float(recall @ weights),
            "f1": float(f1 @ weights),
            "support": total,
        },
        "confusion_matrix": matrix.tolist(),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(den), where=den != 0)


def _labels(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {array.shape}")
    whole = np.issubdtype(array.dtype, np.integer) or np.all(np.mod(array, 1) == 0)
    if array.size and not whole:
        raise ValueError("labels must be whole class indices")
    return array.astype(np.int64, copy=False)


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _labels(pred), _labels(true)
    if p.shape != t.shape:
        raise ValueError(f"{p.size} predictions for {t.size} true labels")
    return p, t
