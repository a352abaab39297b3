"""The numbers every report in this project quotes, computed one way."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from fintweet.core.labels import NUM_TOPICS, topic_name


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(accuracy_score(y_true, y_pred))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y_true`` (as scikit-learn's default would do on
    the full label set, a class absent from a tiny subsample would otherwise count as 0)."""
    present = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def holdout_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The model-selection score: mean of accuracy and macro-F1, because the targets are on both
    and selecting on loss alone tends to pick an epoch that trades minority classes away."""
    return 0.5 * (accuracy(y_true, y_pred) + macro_f1(y_true, y_pred))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    labels = list(range(NUM_TOPICS))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1(y_true, y_pred),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "per_class": {
            str(i): {
                "name": topic_name(i),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in labels
        },
    }
