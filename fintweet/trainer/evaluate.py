"""Scoring a topic model on labelled tweets: the numbers (accuracy, macro/weighted F1, a
per-class table), batched prediction with progress, and the report figures.

The scoring takes labels and probabilities rather than a model so that it is the same code whether
the probabilities came from a saved artifact, a model still in memory during training, or a test.

Macro averages are taken over the topics present in the labels, the convention of
``fintweet.models.metrics`` (which writes each artifact's ``metrics.json``), so that ``evaluate``
on the holdout reproduces the numbers the trainer recorded, and a small file that lacks a rare
topic is not charged a zero for it. The per-class table always lists all twenty topics, so a
missing topic shows as support 0 and a wrongly predicted one as precision 0.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fintweet.core.labels import NUM_TOPICS, TOPIC_NAMES, label_key, topic_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = 3


class TopicClassifier(Protocol):
    """What evaluation needs from a model; ``fintweet.models.load`` returns one."""

    name: str
    version: str

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ClassMetrics:
    topic_id: int
    precision: float
    recall: float
    f1: float
    support: int  # rows whose true label is this topic
    predicted: int  # rows the model assigned to this topic

    @property
    def name(self) -> str:
        return topic_name(self.topic_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.topic_id,
            "key": label_key(self.topic_id),
            "name": self.name,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "predicted": self.predicted,
        }


@dataclass(frozen=True)
class Evaluation:
    n: int
    accuracy: float
    top_k_accuracy: float  # true topic among the TOP_K most probable
    macro_f1: float
    weighted_f1: float
    macro_precision: float
    macro_recall: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray = field(repr=False)  # (20, 20) counts, rows = true, columns = predicted

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            f"top{TOP_K}_accuracy": self.top_k_accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "per_class": [c.as_dict() for c in self.per_class],
            "confusion_matrix": self.confusion.tolist(),
        }


def _check_inputs(labels: np.ndarray, probabilities: np.ndarray) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if probabilities.shape != (len(labels), NUM_TOPICS):
        raise ValueError(
            f"probabilities must have shape ({len(labels)}, {NUM_TOPICS}) for {len(labels)} "
            f"labels, got {probabilities.shape}"
        )
    if len(labels) == 0:
        raise ValueError("nothing to evaluate: no labelled rows")
    if labels.min() < 0 or labels.max() >= NUM_TOPICS:
        raise ValueError(f"labels must lie in 0..{NUM_TOPICS - 1} (unlabelled rows are -1)")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or infinity")


def score(labels: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Every number the reports show, from true labels and an (n, 20) probability matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    _check_inputs(labels, probabilities)
    predictions = probabilities.argmax(axis=1)
    all_topics = list(range(NUM_TOPICS))

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=all_topics, zero_division=0.0
    )
    present = np.unique(labels)
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=present, average="macro", zero_division=0.0
    )
    _, _, weighted_f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=all_topics, average="weighted", zero_division=0.0
    )
    predicted = np.bincount(predictions, minlength=NUM_TOPICS)
    # Top-k by rank: a class is in the top k when fewer than k classes score strictly higher.
    true_scores = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > true_scores[:, None]).sum(axis=1)

    per_class = tuple(
        ClassMetrics(
            topic_id=i,
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
            predicted=int(predicted[i]),
        )
        for i in all_topics
    )
    return Evaluation(
        n=len(labels),
        accuracy=float(np.mean(predictions == labels)),
        top_k_accuracy=float(np.mean(rank < TOP_K)),
        macro_f1=float(macro_f1),
        weighted_f1=float(weighted_f1),
        macro_precision=float(macro_p),
        macro_recall=float(macro_r),
        per_class=per_class,
        confusion=confusion_matrix(labels, predictions, labels=all_topics),
    )


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray
    seconds: float

    @property
    def tweets_per_second(self) -> float:
        return len(self.probabilities) / self.seconds if self.seconds > 0 else float("inf")


def predict_in_batches(
    model: TopicClassifier, texts: list[str], batch_size: int = 512, progress: bool = True
) -> Prediction:
    """Probabilities for ``texts`` computed ``batch_size`` at a time, so memory stays flat on any
    input size and a tqdm bar on stderr shows how far along a long run is (only when there is more
    than one batch; the bar never touches stdout, which ``--json`` keeps clean)."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    chunks: list[np.ndarray] = []
    with tqdm(
        total=len(texts),
        desc="predicting",
        unit="tweet",
        file=sys.stderr,
        disable=not progress or len(texts) <= batch_size,
    ) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            probabilities = np.asarray(model.predict_proba(batch))
            if probabilities.shape != (len(batch), NUM_TOPICS):
                raise ValueError(
                    f"model {model.name!r} returned probabilities of shape {probabilities.shape} "
                    f"for a batch of {len(batch)}; expected ({len(batch)}, {NUM_TOPICS})"
                )
            chunks.append(probabilities.astype(np.float32, copy=False))
            bar.update(len(batch))
    seconds = time.perf_counter() - started
    empty = np.empty((0, NUM_TOPICS), dtype=np.float32)
    return Prediction(np.concatenate(chunks) if chunks else empty, seconds)


def format_report(evaluation: Evaluation, header: list[tuple[str, str]] | None = None) -> str:
    """The plain-text report: a few header lines, the headline numbers, then one row per topic."""
    name_width = max(len(name) for name in TOPIC_NAMES)
    lines = [f"{key:<12} {value}" for key, value in header or []]
    lines += [
        f"{'n':<12} {evaluation.n}",
        f"{'accuracy':<12} {evaluation.accuracy:.4f}",
        f"{'top-' + str(TOP_K) + ' acc':<12} {evaluation.top_k_accuracy:.4f}",
        f"{'macro-F1':<12} {evaluation.macro_f1:.4f}",
        f"{'weighted-F1':<12} {evaluation.weighted_f1:.4f}",
        "",
        f"{'id':>3}  {'topic':<{name_width}}  {'precision':>9}  {'recall':>6}  {'F1':>6}"
        f"  {'support':>7}  {'predicted':>9}",
    ]
    for c in evaluation.per_class:
        lines.append(
            f"{c.topic_id:>3}  {c.name:<{name_width}}  {c.precision:>9.3f}  {c.recall:>6.3f}"
            f"  {c.f1:>6.3f}  {c.support:>7}  {c.predicted:>9}"
        )
    return "\n".join(lines)


def confusion_figure(evaluation: Evaluation, title: str) -> Figure:
    """Row-normalised confusion matrix: each row shows where one true topic's tweets went, so a
    rare topic's mistakes are as visible as a common one's. Rows are labelled with their support."""
    from fintweet.trainer import plots

    counts = evaluation.confusion.astype(float)
    row_totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    figure = plots.new_figure(13, 11)
    ax = figure.add_subplot()
    plots.annotated_heatmap(
        ax,
        normalised,
        row_labels=[f"{c.name} (n={c.support})" for c in evaluation.per_class],
        column_labels=list(TOPIC_NAMES),
    )
    ax.set_xlabel("predicted topic")
    ax.set_ylabel("true topic (support)")
    ax.set_title(f"{title}\nconfusion matrix, rows normalised to 1 (accuracy "
                 f"{evaluation.accuracy:.3f}, n={evaluation.n})")
    return figure


def per_class_f1_figure(evaluation: Evaluation, title: str) -> Figure:
    """F1 per topic, worst first, with the macro-F1 as a reference line."""
    from fintweet.trainer import plots

    ranked = sorted((c for c in evaluation.per_class if c.support or c.predicted),
                    key=lambda c: c.f1)
    figure = plots.new_figure(9, 0.32 * max(len(ranked), 4) + 1.4)
    ax = figure.add_subplot()
    plots.horizontal_bars(
        ax, [f"{c.name} (n={c.support})" for c in ranked], [c.f1 for c in ranked],
        value_format="{:.3f}",
    )
    ax.axvline(evaluation.macro_f1, color="#c0392b", linestyle="--", linewidth=1,
               label=f"macro-F1 {evaluation.macro_f1:.3f}")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("F1")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{title}\nF1 per topic, worst first")
    return figure


def write_report_figures(evaluation: Evaluation, out_dir: Path, title: str) -> list[Path]:
    from fintweet.trainer import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plots.save(confusion_figure(evaluation, title), out_dir / "confusion_matrix.png"),
        plots.save(per_class_f1_figure(evaluation, title), out_dir / "per_class_f1.png"),
    ]
