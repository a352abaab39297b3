"""The numbers every report in this project quotes, computed one way: the trainer's
``metrics.json``, ``fintweet evaluate`` and the epoch selection all call :func:`score` (or its
two headline parts).

Macro averages are taken over the classes present in the labels, so a small file that lacks a
rare topic is not charged a zero for it; the per-class table always lists every class, so a
missing one shows as support 0 and a wrongly predicted one as precision 0.

Accuracy and macro-F1 come with 95% bootstrap intervals because most model comparisons in this
project differ by less than the holdout's own noise (a point of sentiment accuracy on 1,431
tweets is about one standard error); a report that shows the interval says so by itself. That is
the interval of one model's figure. Two models scored on the same tweets err on many of the same
ones, so their difference is less noisy than their two intervals side by side suggest:
:func:`paired_difference` resamples the tweets once for both models, which is the interval a
comparison of variants needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fintweet.core.labels import class_names

TOP_K = 3
INTERVAL_LEVEL = 0.95
INTERVAL_RESAMPLES = 2000
INTERVAL_SEED = 0  # fixed, so the same predictions always report the same interval


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    present = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def selection_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The model-selection score: mean of accuracy and macro-F1, because the targets are on both
    and selecting on loss alone tends to pick an epoch that trades minority classes away."""
    return 0.5 * (accuracy(y_true, y_pred) + macro_f1(y_true, y_pred))


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(confusion: np.ndarray, resamples: int = INTERVAL_RESAMPLES,
                        level: float = INTERVAL_LEVEL, seed: int = INTERVAL_SEED,
                        ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile-bootstrap intervals of (accuracy, macro-F1) from the confusion matrix alone.

    Why from the matrix: resampling rows with replacement only moves counts between its cells
    (rows in one cell are interchangeable for every metric here), so each resample is one
    multinomial draw over the cells; this costs the same for 2,000 rows as for 2 million. Each
    resample's macro average is :func:`macro_f1`'s of the resample: over the classes it holds.
    (Counting a class it happens to lack as F1 0 put a file of rare classes, every one right,
    at macro-F1 1.0 with an interval of 0.50-0.85.)"""
    counts = np.asarray(confusion, dtype=np.int64)
    n = int(counts.sum())
    k = counts.shape[0]
    draws = np.random.default_rng(seed).multinomial(
        n, counts.ravel() / n, size=resamples).reshape(resamples, k, k)
    hits = np.einsum("rii->ri", draws).astype(np.float64)
    support = draws.sum(axis=2)
    denominators = support + draws.sum(axis=1)  # support + predicted, per class
    f1 = np.divide(2 * hits, denominators, out=np.zeros_like(hits), where=denominators > 0)
    return (_percentile_interval(hits.sum(axis=1) / n, level),
            _percentile_interval(_macro_over_present(f1, support), level))


def _macro_over_present(f1: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Per resample (row), the mean F1 of the classes with support in it."""
    held = support > 0
    return (f1 * held).sum(axis=1) / np.maximum(held.sum(axis=1), 1)


@dataclass(frozen=True)
class Difference:
    """``model - baseline`` in accuracy and macro-F1 on the same rows, with paired bootstrap
    intervals: an interval that excludes 0 says the holdout can tell the two apart."""

    n: int
    accuracy: float
    accuracy_interval: tuple[float, float]
    macro_f1: float
    macro_f1_interval: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy, "accuracy_interval": list(self.accuracy_interval),
            "macro_f1": self.macro_f1, "macro_f1_interval": list(self.macro_f1_interval),
            "interval_level": INTERVAL_LEVEL,
        }


def paired_difference(labels: np.ndarray, predicted: np.ndarray, baseline: np.ndarray,
                      resamples: int = INTERVAL_RESAMPLES, level: float = INTERVAL_LEVEL,
                      seed: int = INTERVAL_SEED) -> Difference:
    """Accuracy and macro-F1 of ``predicted`` minus those of ``baseline`` (class ids, one per
    row of ``labels``), each resample drawing the same rows for both models.

    As in :func:`bootstrap_intervals`, rows with the same (label, prediction, baseline
    prediction) are interchangeable, so each resample is one multinomial draw over the triples
    that occur (at most one per row, usually a few hundred): the cost does not grow with the
    rows. Each resample's macro average is over the classes it holds, as in
    :func:`bootstrap_intervals`."""
    labels, predicted, baseline = (np.asarray(a, dtype=np.int64)
                                   for a in (labels, predicted, baseline))
    if not len(labels) == len(predicted) == len(baseline):
        raise ValueError(f"{len(labels)} labels but {len(predicted)} and {len(baseline)} "
                         "predictions: the two models must be scored on the same rows")
    if len(labels) == 0:
        raise ValueError("nothing to compare: no labelled rows")
    k = int(max(labels.max(), predicted.max(), baseline.max())) + 1
    triples, counts = np.unique((labels * k + predicted) * k + baseline, return_counts=True)
    truth, rest = np.divmod(triples, k * k)
    n = len(labels)
    draws = np.random.default_rng(seed).multinomial(
        n, counts / n, size=resamples).astype(np.float64)  # resamples x triples
    truth_onehot = np.eye(k)[truth]
    support = draws @ truth_onehot

    def resampled(guess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = (guess == truth).astype(np.float64)
        tp = draws @ (truth_onehot * hit[:, None])
        denominators = support + draws @ np.eye(k)[guess]
        f1 = np.divide(2 * tp, denominators, out=np.zeros_like(tp), where=denominators > 0)
        return draws @ hit / n, _macro_over_present(f1, support)

    model_acc, model_f1 = resampled(rest // k)
    base_acc, base_f1 = resampled(rest % k)
    return Difference(
        n=n,
        accuracy=accuracy(labels, predicted) - accuracy(labels, baseline),
        accuracy_interval=_percentile_interval(model_acc - base_acc, level),
        macro_f1=macro_f1(labels, predicted) - macro_f1(labels, baseline),
        macro_f1_interval=_percentile_interval(model_f1 - base_f1, level),
    )


@dataclass(frozen=True)
class ClassMetrics:
    class_id: int
    name: str
    precision: float
    recall: float
    f1: float
    support: int  # rows whose true label is this class
    predicted: int  # rows the model assigned to this class

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.class_id, "key": f"LABEL_{self.class_id}", "name": self.name,
            "precision": self.precision, "recall": self.recall, "f1": self.f1,
            "support": self.support, "predicted": self.predicted,
        }


@dataclass(frozen=True)
class Evaluation:
    task: str
    n: int
    accuracy: float
    top_k_accuracy: float  # true class among the TOP_K most probable
    macro_f1: float
    weighted_f1: float
    macro_precision: float
    macro_recall: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray = field(repr=False)  # counts, rows = true, columns = predicted
    accuracy_interval: tuple[float, float]  # INTERVAL_LEVEL bootstrap interval
    macro_f1_interval: tuple[float, float]

    @property
    def classes_present(self) -> int:
        """How many classes the macro averages are over (module notes): those with support."""
        return sum(1 for c in self.per_class if c.support)

    def macro_scope(self) -> str:
        """What a report adds after a macro figure when some classes are absent: the per-class
        table beside it shows them at F1 0 (predicted but absent), which the average leaves out."""
        present, every = self.classes_present, len(self.per_class)
        if present == every:
            return ""
        return f" (over the {present} class{'es' if present > 1 else ''} present of {every})"

    def as_dict(self, confusion: bool = True) -> dict[str, Any]:
        result = {
            "task": self.task,
            "n": self.n,
            "accuracy": self.accuracy,
            f"top{TOP_K}_accuracy": self.top_k_accuracy,
            "macro_f1": self.macro_f1,
            "macro_f1_classes": self.classes_present,  # of len(per_class); module notes
            "accuracy_interval": list(self.accuracy_interval),
            "macro_f1_interval": list(self.macro_f1_interval),
            "interval_level": INTERVAL_LEVEL,
            "weighted_f1": self.weighted_f1,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "per_class": [c.as_dict() for c in self.per_class],
        }
        if confusion:
            result["confusion_matrix"] = self.confusion.tolist()
        return result


def check_scores(task: str, labels: np.ndarray, probabilities: np.ndarray) -> None:
    n_classes = len(class_names(task))
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if probabilities.shape != (len(labels), n_classes):
        raise ValueError(
            f"{task} probabilities must have shape ({len(labels)}, {n_classes}) for "
            f"{len(labels)} labels, got {probabilities.shape}"
        )
    if len(labels) == 0:
        raise ValueError("nothing to evaluate: no labelled rows")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"{task} labels must lie in 0..{n_classes - 1} (unlabelled rows are -1)")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or infinity")


def score(task: str, labels: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Every number the reports show, from true labels and an (n, classes) probability matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    check_scores(task, labels, probabilities)
    names = class_names(task)
    predictions = probabilities.argmax(axis=1)
    every = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=every, zero_division=0.0
    )
    macro_p, macro_r, macro, _ = precision_recall_fscore_support(
        labels, predictions, labels=np.unique(labels), average="macro", zero_division=0.0
    )
    _, _, weighted, _ = precision_recall_fscore_support(
        labels, predictions, labels=every, average="weighted", zero_division=0.0
    )
    predicted = np.bincount(predictions, minlength=len(names))
    # Top-k by rank: a class is in the top k when fewer than k classes score strictly higher.
    true_scores = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > true_scores[:, None]).sum(axis=1)
    confusion = confusion_matrix(labels, predictions, labels=every)
    accuracy_interval, macro_f1_interval = bootstrap_intervals(confusion)
    return Evaluation(
        task=task,
        n=len(labels),
        accuracy=accuracy(labels, predictions),
        top_k_accuracy=float(np.mean(rank < TOP_K)),
        macro_f1=float(macro),
        weighted_f1=float(weighted),
        macro_precision=float(macro_p),
        macro_recall=float(macro_r),
        per_class=tuple(
            ClassMetrics(i, names[i], float(precision[i]), float(recall[i]), float(f1[i]),
                         int(support[i]), int(predicted[i]))
            for i in every
        ),
        confusion=confusion,
        accuracy_interval=accuracy_interval,
        macro_f1_interval=macro_f1_interval,
    )
