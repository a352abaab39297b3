"""Scoring a saved model on labelled tweets: batched prediction with progress, the plain-text
report and the report figures. The numbers themselves come from
:func:`fintweet.models.scoring.score`, the function that also writes each artifact's
``metrics.json``, so ``evaluate`` on the holdout reproduces what the trainer recorded.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fintweet.core.config import DEFAULT_BATCH_SIZE
from fintweet.core.labels import TASKS, class_names
from fintweet.models.base import Classifier, Proba, TwoHeadModel, checked_proba
from fintweet.models.scoring import INTERVAL_LEVEL, TOP_K, Difference, Evaluation

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Prediction:
    proba: Proba
    seconds: float

    @property
    def tweets_per_second(self) -> float:
        return len(self.proba) / self.seconds if self.seconds > 0 else float("inf")


def predict_in_batches(
    model: Classifier, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    desc: str = "predicting",
) -> Prediction:
    """Both heads' probabilities for ``texts`` (model texts) computed ``batch_size`` at a time,
    so memory stays flat on any input size and a tqdm bar on stderr shows how far along a long
    run is (only when there is more than one batch; the bar never touches stdout, which
    ``--json`` keeps clean)."""
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    chunks: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
    with tqdm(total=len(texts), desc=desc, unit="tweet", file=sys.stderr,
              disable=not progress or len(texts) <= batch_size) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            proba = checked_proba(model, batch)
            for task in TASKS:
                chunks[task].append(proba.task(task))
            bar.update(len(batch))
    seconds = time.perf_counter() - started
    if not texts:
        return Prediction(Proba.empty(), seconds)
    return Prediction(Proba(*(np.concatenate(chunks[task]) for task in TASKS)), seconds)


def interval(bounds: tuple[float, float]) -> str:
    return f"({INTERVAL_LEVEL:.0%} bootstrap interval {bounds[0]:.4f}–{bounds[1]:.4f})"


def model_summary(model: TwoHeadModel, path: Path) -> dict[str, Any]:
    """Which model a JSON report is about."""
    return {"name": model.name, "version": model.version, "path": str(path),
            "refit_on_holdout": bool(model.info and model.info.refit_on_holdout)}


@dataclass(frozen=True)
class Comparison:
    """A baseline scored on the same rows as the evaluated model, and the paired difference."""

    baseline: TwoHeadModel
    path: Path
    seen_by_baseline: bool
    evaluation: Evaluation
    difference: Difference  # model - baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": model_summary(self.baseline, self.path),
            "seen_by_model": self.seen_by_baseline,
            "accuracy": self.evaluation.accuracy,
            "accuracy_interval": list(self.evaluation.accuracy_interval),
            "macro_f1": self.evaluation.macro_f1,
            "macro_f1_interval": list(self.evaluation.macro_f1_interval),
            "difference": self.difference.as_dict(),
        }

    def report(self) -> str:
        """The baseline's headline figures and the difference, under the model's report."""
        base, diff = self.evaluation, self.difference

        def signed(bounds: tuple[float, float]) -> str:
            return (f"({INTERVAL_LEVEL:.0%} paired bootstrap interval "
                    f"{bounds[0]:+.4f} to {bounds[1]:+.4f})")

        return "\n".join([
            f"{'baseline':<12} {self.baseline.name} {self.baseline.version} ({self.path})",
            f"{'accuracy':<12} {base.accuracy:.4f}  {interval(base.accuracy_interval)}",
            f"{'macro-F1':<12} {base.macro_f1:.4f}{base.macro_scope()}  "
            f"{interval(base.macro_f1_interval)}",
            "model - baseline, on the same rows:",
            f"{'accuracy':<12} {diff.accuracy:+.4f}  {signed(diff.accuracy_interval)}",
            f"{'macro-F1':<12} {diff.macro_f1:+.4f}  {signed(diff.macro_f1_interval)}",
        ])


def format_report(evaluation: Evaluation, header: list[tuple[str, str]] | None = None) -> str:
    """The plain-text report: a few header lines, the headline numbers, then one row per class."""
    name_width = max(len(name) for name in class_names(evaluation.task))
    lines = [f"{key:<12} {value}" for key, value in header or []]
    lines += [
        f"{'task':<12} {evaluation.task}",
        f"{'n':<12} {evaluation.n}",
        f"{'accuracy':<12} {evaluation.accuracy:.4f}  {interval(evaluation.accuracy_interval)}",
        *([f"{'top-' + str(TOP_K) + ' acc':<12} {evaluation.top_k_accuracy:.4f}"]
          if len(evaluation.per_class) > TOP_K else []),  # 1.0 by definition with 3 classes
        f"{'macro-F1':<12} {evaluation.macro_f1:.4f}{evaluation.macro_scope()}  "
        f"{interval(evaluation.macro_f1_interval)}",
        f"{'weighted-F1':<12} {evaluation.weighted_f1:.4f}",
        "",
        f"{'id':>3}  {evaluation.task:<{name_width}}  {'precision':>9}  {'recall':>6}  {'F1':>6}"
        f"  {'support':>7}  {'predicted':>9}",
    ]
    for c in evaluation.per_class:
        lines.append(
            f"{c.class_id:>3}  {c.name:<{name_width}}  {c.precision:>9.3f}  {c.recall:>6.3f}"
            f"  {c.f1:>6.3f}  {c.support:>7}  {c.predicted:>9}"
        )
    return "\n".join(lines)


def confusion_figure(evaluation: Evaluation, title: str) -> Figure:
    """Row-normalised confusion matrix: each row shows where one true class's tweets went, so a
    rare class's mistakes are as visible as a common one's. Rows are labelled with their
    support."""
    from fintweet.trainer import plots

    counts = evaluation.confusion.astype(float)
    row_totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    size = 13 if len(counts) > 5 else 6
    figure = plots.new_figure(size, size * 11 / 13)
    ax = figure.add_subplot()
    plots.annotated_heatmap(
        ax, normalised,
        row_labels=[f"{c.name} (n={c.support})" for c in evaluation.per_class],
        column_labels=list(class_names(evaluation.task)),
    )
    ax.set_xlabel(f"predicted {evaluation.task}")
    ax.set_ylabel(f"true {evaluation.task} (support)")
    # Three short lines, wrapped if still too long: on the 3-class figure one line of it ran off
    # the right edge.
    ax.set_title(f"{title}\n{evaluation.task} confusion matrix, rows normalised to 1\n(accuracy "
                 f"{evaluation.accuracy:.3f}, n={evaluation.n:,})", wrap=True)
    return figure


def per_class_f1_figure(evaluation: Evaluation, title: str) -> Figure:
    """F1 per class, worst first, with the macro-F1 as a reference line."""
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
    ax.set_title(f"{title}\nF1 per {evaluation.task}, worst first")
    return figure


def write_report_figures(evaluation: Evaluation, out_dir: Path, title: str) -> list[Path]:
    """``<task>_confusion_matrix.png`` and ``<task>_per_class_f1.png`` in ``out_dir``."""
    from fintweet.trainer import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    task = evaluation.task
    return [
        plots.save(confusion_figure(evaluation, title), out_dir / f"{task}_confusion_matrix.png"),
        plots.save(per_class_f1_figure(evaluation, title), out_dir / f"{task}_per_class_f1.png"),
    ]
