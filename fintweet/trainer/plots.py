"""Figure helpers shared by the evaluation and EDA reports.

Figures are built with matplotlib's object API on an explicit Agg canvas rather than through
``pyplot``: no global backend switch (importing this never breaks someone's notebook), no figure
registry to leak memory across a long run, and it works on machines without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110
BAR_COLOR = "#3b6ea5"


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def horizontal_bars(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float] | np.ndarray,
    value_format: str = "{:.2f}",
    value_labels: Sequence[str] | None = None,
    color: str = BAR_COLOR,
    fontsize: float = 9,
) -> None:
    """Bars listed top to bottom in the order given, each with its value (or ``value_labels``)
    printed at its end: topic names are long, so horizontal bars are the layout where they stay
    readable."""
    values = np.asarray(values, dtype=float)
    if value_labels is None:
        value_labels = [value_format.format(value) for value in values]
    positions = np.arange(len(labels))
    ax.barh(positions, values, color=color)
    ax.set_yticks(positions, labels=list(labels), fontsize=fontsize)
    ax.invert_yaxis()
    peak = float(values.max()) if len(values) else 0.0
    ax.set_xlim(0, peak * 1.18 if peak > 0 else 1.0)
    for y, value, text in zip(positions, values, value_labels, strict=True):
        ax.text(float(value) + peak * 0.01, float(y), text, va="center", fontsize=fontsize - 1)
    ax.spines[["top", "right"]].set_visible(False)


def annotated_heatmap(
    ax: Axes,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    value_format: str = "{:.0%}",
    hide_below: float | None = 0.005,
    vmax: float = 1.0,
    fontsize: float = 8,
    rotate_columns: bool = True,
) -> None:
    """A 0..vmax heatmap with each cell's value written in it. Cells under ``hide_below`` stay
    blank so the pattern, not a wall of zeros, is what the eye sees (a confusion matrix);
    ``hide_below=None`` writes every cell, for tables where 0% is itself the finding."""
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(np.arange(len(column_labels)), labels=list(column_labels), fontsize=fontsize)
    ax.set_yticks(np.arange(len(row_labels)), labels=list(row_labels), fontsize=fontsize)
    if rotate_columns:
        ax.tick_params(axis="x", labelrotation=60)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    for (row, column), value in np.ndenumerate(matrix):
        if hide_below is not None and value < hide_below:
            continue
        ax.text(column, row, value_format.format(value), ha="center", va="center",
                fontsize=fontsize - 1, color="white" if value > 0.55 * vmax else "black")
    ax.figure.colorbar(image, ax=ax, shrink=0.6)
