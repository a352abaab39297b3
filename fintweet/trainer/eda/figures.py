"""The EDA report's figures, each drawn from a :class:`~.profile.Profile`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fintweet.trainer.eda.profile import LINK_KINDS, Profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINK_LABELS = {"urls": "URL", "cashtags": "cashtag", "mentions": "mention", "hashtags": "hashtag"}
TERMS_PER_PANEL = 8

# file → caption, in the order the report shows them
FIGURES = {
    "label_distribution.png": "Tweets per class, most common first. The training CSVs are "
    "imbalanced, which is why the models use class weights and why macro-F1 is reported beside "
    "accuracy.",
    "text_length.png": "Tweet length in characters (after decoding entities and collapsing "
    "whitespace) and in model tokens (URLs counted as one token). Dashed line: median.",
    "wordcloud.png": "Most frequent terms across all classes, sized by count. scikit-learn's "
    "English stop words are left out (direction words such as up and down kept), and so are "
    "URLs; cashtags, mentions and hashtags stay.",
    "top_terms.png": "Most distinctive terms per class, longest bar first: bar length is the "
    "share of the class's tweets containing the term; terms are chosen by "
    "p_class·log(p_class / p_all).",
    "link_stats.png": "Share of tweets carrying at least one URL, cashtag ($TSLA), mention "
    "(@CNBCPro) or hashtag (#FOMC), overall and per class, as extracted by "
    "fintweet.core.text.prepare. Every cell is written, 0% included.",
}


def label_distribution_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    counts = p.label_counts()
    order = sorted(range(len(p.names)), key=lambda c: (-counts[c], c))
    figure = plots.new_figure(9, 0.3 * len(order) + 1.4)
    ax = figure.add_subplot()
    plots.horizontal_bars(
        ax, [f"{p.names[c]} ({c})" for c in order], counts[order],
        value_labels=[f"{counts[c]:,} ({counts[c] / p.n:.1%})" for c in order],
    )
    ax.set_xlabel("tweets")
    ax.set_title(f"Tweets per {p.task} (n={p.n:,}; largest/smallest present = "
                 f"{p.imbalance_ratio():.0f}×)")
    return figure


def text_length_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    figure = plots.new_figure(12, 4.5)
    for ax, values, unit in zip(
        figure.subplots(1, 2), (p.char_lengths, p.token_lengths), ("characters", "tokens"),
        strict=True,
    ):
        bins = min(60, int(values.max() - values.min()) + 1)
        ax.hist(values, bins=bins, color=plots.BAR_COLOR)
        median = float(np.median(values))
        ax.axvline(median, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_title(f"length in {unit}: median {median:.0f}, "
                     f"95th percentile {np.percentile(values, 95):.0f}, max {values.max()}")
        ax.set_xlabel(unit)
        ax.set_ylabel("tweets")
        ax.spines[["top", "right"]].set_visible(False)
    return figure


def wordcloud_figure(p: Profile) -> Figure:
    from wordcloud import WordCloud

    from fintweet.trainer import plots

    figure = plots.new_figure(14, 7.6)
    ax = figure.add_subplot()
    ax.set_axis_off()
    title = (f"Most frequent terms in {Path(p.source).name} ({p.n:,} tweets; English stop "
             "words removed, cashtags kept)")
    ax.set_title(title, fontsize=13)
    if not p.term_counts:  # every tweet was numbers, punctuation or stop words
        ax.text(0.5, 0.5, "no terms to show", ha="center", va="center")
        return figure
    cloud = WordCloud(
        width=1400, height=700, background_color="white", max_words=150, random_state=0,
        collocations=False, prefer_horizontal=0.95, colormap="viridis", relative_scaling=0.4,
    ).generate_from_frequencies(dict(p.term_counts.most_common(400)))
    ax.imshow(cloud.to_array(), interpolation="bilinear")
    return figure


def top_terms_figure(p: Profile) -> Figure:
    from matplotlib.ticker import PercentFormatter

    from fintweet.trainer import plots

    classes = p.present_classes()
    columns = min(4, len(classes))
    rows = math.ceil(len(classes) / columns)
    counts = p.label_counts()
    figure = plots.new_figure(4.2 * columns, 2.9 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, cls in zip(axes, classes, strict=False):
        terms = sorted(p.top_terms[cls][:TERMS_PER_PANEL], key=lambda t: (-t.share, t.term))
        ax.set_title(f"{p.names[cls]} (n={counts[cls]:,})", fontsize=9)
        if not terms:
            ax.text(0.5, 0.5, "too few tweets to rank terms", ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
            ax.set_axis_off()
            continue
        plots.horizontal_bars(ax, [t.term for t in terms], [t.share for t in terms],
                              value_format="{:.0%}", fontsize=8)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[len(classes):]:
        ax.set_axis_off()
    figure.suptitle(f"Most distinctive terms per {p.task} (bar: share of the class's tweets "
                    "containing the term)")
    return figure


def link_stats_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    classes = p.present_classes()
    figure = plots.new_figure(12, 0.32 * len(classes) + 2.5)
    overall_ax, class_ax = figure.subplots(1, 2, width_ratios=(1, 2))
    plots.horizontal_bars(overall_ax, [LINK_LABELS[k] for k in LINK_KINDS], p.link_shares(),
                          value_format="{:.1%}")
    overall_ax.set_xlim(0, 1.15)
    overall_ax.set_title(f"all {p.n:,} tweets: share with at least one")
    counts = p.label_counts()
    plots.annotated_heatmap(
        class_ax, p.link_shares_by_class()[classes],
        row_labels=[f"{p.names[c]} (n={counts[c]:,})" for c in classes],
        column_labels=[LINK_LABELS[k] for k in LINK_KINDS], rotate_columns=False,
        hide_below=None,
    )
    class_ax.set_title(f"per {p.task}: share of its tweets with at least one")
    return figure
