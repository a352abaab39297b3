"""Exploratory report on a labelled CSV: what the topics look like before any model sees them.

One pass over the rows (the same ``clean``/``tokenize`` the worker and models use, so the report
describes the text as the pipeline sees it) builds a :class:`Profile`; the figures, ``index.html``
and ``summary.json`` are all drawn from that profile.

Top terms per topic are ranked by ``p_t * log(p_t / p)``, where ``p_t`` is the share of the
topic's tweets containing the term and ``p`` the share of all tweets: the term's contribution to
the KL divergence of the topic from the corpus. Raw frequency would put "stock" and "market" at the
top of every topic; pure lift would crown words seen twice. This weighs both, and terms in fewer
than ``min_count`` of the topic's tweets are not ranked at all.
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fintweet.core.data import LabelledData
from fintweet.core.labels import NUM_TOPICS, label_key, topic_name
from fintweet.core.text import URL_TOKEN, clean, model_text, tokenize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LINK_KINDS = ("urls", "cashtags", "mentions", "hashtags")
LINK_LABELS = {"urls": "URL", "cashtags": "cashtag", "mentions": "mention", "hashtags": "hashtag"}
# Direction words are stopwords in general English but carry the "Stock Movement" topic here.
KEPT_STOPWORDS = frozenset({"up", "down", "above", "below", "over", "under", "off"})
TERMS_PER_TOPIC = 10
TERMS_PER_PANEL = 8

FIGURES = {
    "label_distribution.png": "Tweets per topic, most common first. The training CSV is very "
    "imbalanced, which is why the models use class weights and why macro-F1 is reported beside "
    "accuracy.",
    "text_length.png": "Tweet length in characters (after decoding entities and collapsing "
    "whitespace) and in model tokens (URLs counted as one token). Dashed line: median.",
    "wordcloud.png": "Most frequent terms across all topics, sized by count. Stopwords are "
    "wordcloud's built-in list minus direction words (up, down, …); URLs are left out.",
    "top_terms.png": "Most distinctive terms per topic: bar length is the share of the topic's "
    "tweets containing the term, ranked by p_topic·log(p_topic / p_all).",
    "link_stats.png": "Share of tweets carrying at least one URL, cashtag ($TSLA), mention "
    "(@CNBCPro) or hashtag (#FOMC), overall and per topic, as extracted by "
    "fintweet.core.text.clean.",
}


def _stopwords() -> frozenset[str]:
    from wordcloud import STOPWORDS

    return frozenset(word.lower() for word in STOPWORDS) - KEPT_STOPWORDS | {URL_TOKEN, "rt"}


@dataclass(frozen=True)
class TopTerm:
    term: str
    share: float  # of the topic's tweets that contain the term
    corpus_share: float  # of all tweets that contain it
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"term": self.term, "share": self.share, "corpus_share": self.corpus_share,
                "score": self.score}


@dataclass(frozen=True)
class Profile:
    source: str
    fingerprint: str
    labels: np.ndarray  # (n,)
    char_lengths: np.ndarray  # (n,)
    token_lengths: np.ndarray  # (n,)
    has_link: np.ndarray  # (n, len(LINK_KINDS)) bool
    term_counts: Counter[str]  # occurrences over all tweets, for the word cloud
    top_terms: dict[int, list[TopTerm]]
    top_entities: dict[str, list[tuple[str, int]]]  # most tweeted cashtags, mentions, hashtags
    duplicate_texts: int  # distinct texts that occur more than once
    duplicate_rows: int  # rows beyond the first copy of their text
    conflicting_texts: int  # distinct texts seen with more than one label

    @property
    def n(self) -> int:
        return len(self.labels)

    def label_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_TOPICS)

    def imbalance_ratio(self) -> float:
        """Largest over smallest topic, among the topics present."""
        present = self.label_counts()[self.label_counts() > 0]
        return float(present.max() / present.min())

    def present_topics(self) -> list[int]:
        return [int(t) for t in np.flatnonzero(self.label_counts())]

    def link_shares(self) -> np.ndarray:
        return self.has_link.mean(axis=0)

    def link_shares_by_topic(self) -> np.ndarray:
        """(20, 4) shares; NaN for a topic with no tweets (absent, not zero)."""
        shares = np.full((NUM_TOPICS, len(LINK_KINDS)), np.nan)
        for topic in self.present_topics():
            shares[topic] = self.has_link[self.labels == topic].mean(axis=0)
        return shares

    def summary(self) -> dict[str, Any]:
        counts = self.label_counts()
        by_topic = self.link_shares_by_topic()
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "n": self.n,
            "topics_present": len(self.present_topics()),
            "imbalance_ratio": self.imbalance_ratio(),
            "labels": [
                {"id": t, "key": label_key(t), "name": topic_name(t), "count": int(counts[t]),
                 "share": float(counts[t] / self.n)}
                for t in range(NUM_TOPICS)
            ],
            "lengths": {
                "chars": _describe(self.char_lengths),
                "tokens": _describe(self.token_lengths),
            },
            "links": {
                "overall": dict(zip(LINK_KINDS, map(float, self.link_shares()), strict=True)),
                "per_topic": [
                    {"id": t, "name": topic_name(t),
                     **dict(zip(LINK_KINDS, map(float, by_topic[t]), strict=True))}
                    for t in self.present_topics()
                ],
                "top": {kind: [{"value": v, "tweets": c} for v, c in items]
                        for kind, items in self.top_entities.items()},
            },
            "top_terms": [
                {"id": t, "name": topic_name(t), "terms": [x.as_dict() for x in terms]}
                for t, terms in sorted(self.top_terms.items())
            ],
            "duplicates": {
                "texts_repeated": self.duplicate_texts,
                "extra_rows": self.duplicate_rows,
                "texts_with_conflicting_labels": self.conflicting_texts,
            },
        }


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def _is_term(token: str, stopwords: frozenset[str]) -> bool:
    """Words, cashtags, handles and hashtags; not numbers, punctuation or stopwords."""
    body = token.lstrip("$@#")
    return len(body) >= 2 and any(ch.isalpha() for ch in body) and token not in stopwords


def rank_terms(
    topic_df: Counter[str], topic_size: int, corpus_df: Counter[str], corpus_size: int,
    limit: int = TERMS_PER_TOPIC, min_count: int = 3,
) -> list[TopTerm]:
    """The topic's most distinctive terms: in at least ``min_count`` of its tweets and more
    common there than in the corpus as a whole (a term everywhere says nothing about a topic)."""
    ranked = []
    for term, count in topic_df.items():
        share = count / topic_size
        corpus_share = corpus_df[term] / corpus_size
        if count < min_count or share <= corpus_share:
            continue
        ranked.append(TopTerm(term, share, corpus_share, share * math.log(share / corpus_share)))
    ranked.sort(key=lambda t: (-t.score, t.term))
    return ranked[:limit]


def profile(data: LabelledData, progress: bool = True, min_count: int = 3) -> Profile:
    """One pass over the rows; everything else in the report is derived from its result."""
    from tqdm import tqdm

    if data.labels.min() < 0:
        raise ValueError(f"{data.source}: EDA needs a label on every row")
    stopwords = _stopwords()
    n = len(data)
    char_lengths = np.zeros(n, dtype=np.int64)
    token_lengths = np.zeros(n, dtype=np.int64)
    has_link = np.zeros((n, len(LINK_KINDS)), dtype=bool)
    term_counts: Counter[str] = Counter()
    corpus_df: Counter[str] = Counter()
    topic_df: dict[int, Counter[str]] = {t: Counter() for t in range(NUM_TOPICS)}
    entity_tweets: dict[str, Counter[str]] = {k: Counter() for k in LINK_KINDS if k != "urls"}
    labels_by_text: dict[str, set[int]] = {}
    copies: Counter[str] = Counter()

    rows = zip(data.texts, data.labels.tolist(), strict=True)
    for i, (text, label) in enumerate(
        tqdm(rows, total=n, desc="profiling", unit="tweet", file=sys.stderr, disable=not progress)
    ):
        cleaned = clean(text)
        tokens = tokenize(model_text(text))
        char_lengths[i] = len(cleaned.text)
        token_lengths[i] = len(tokens)
        links = cleaned.links
        has_link[i] = [bool(getattr(links, kind)) for kind in LINK_KINDS]
        for kind, counter in entity_tweets.items():
            counter.update(getattr(links, kind))
        terms = [t for t in tokens if _is_term(t, stopwords)]
        term_counts.update(terms)
        distinct = set(terms)
        corpus_df.update(distinct)
        topic_df[label].update(distinct)
        copies[cleaned.text] += 1
        labels_by_text.setdefault(cleaned.text, set()).add(label)

    sizes = np.bincount(data.labels, minlength=NUM_TOPICS)
    top_terms = {
        t: rank_terms(topic_df[t], int(sizes[t]), corpus_df, n, min_count=min_count)
        for t in range(NUM_TOPICS) if sizes[t]
    }
    prefixes = {"cashtags": "$", "mentions": "@", "hashtags": "#"}
    return Profile(
        source=data.source,
        fingerprint=data.fingerprint(),
        labels=data.labels,
        char_lengths=char_lengths,
        token_lengths=token_lengths,
        has_link=has_link,
        term_counts=term_counts,
        top_terms=top_terms,
        top_entities={
            kind: [(prefixes[kind] + value, count) for value, count in counter.most_common(15)]
            for kind, counter in entity_tweets.items()
        },
        duplicate_texts=sum(1 for c in copies.values() if c > 1),
        duplicate_rows=sum(c - 1 for c in copies.values()),
        conflicting_texts=sum(1 for labels in labels_by_text.values() if len(labels) > 1),
    )


# --- figures -----------------------------------------------------------------------------------


def label_distribution_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    counts = p.label_counts()
    order = sorted(range(NUM_TOPICS), key=lambda t: (-counts[t], t))
    figure = plots.new_figure(9, 7)
    ax = figure.add_subplot()
    plots.horizontal_bars(
        ax, [f"{topic_name(t)} ({t})" for t in order], counts[order],
        value_labels=[f"{counts[t]:,} ({counts[t] / p.n:.1%})" for t in order],
    )
    ax.set_xlabel("tweets")
    ax.set_title(f"Tweets per topic (n={p.n:,}; largest/smallest present = "
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


def write_wordcloud(p: Profile, path: Path) -> Path:
    from wordcloud import WordCloud

    from fintweet.trainer import plots

    if not p.term_counts:  # every tweet was numbers, punctuation or stopwords
        figure = plots.new_figure(8, 4)
        figure.text(0.5, 0.5, "no terms to show", ha="center", va="center")
        return plots.save(figure, path)
    cloud = WordCloud(
        width=1400, height=700, background_color="white", max_words=150, random_state=0,
        collocations=False, prefer_horizontal=0.95, colormap="viridis", relative_scaling=0.4,
    ).generate_from_frequencies(dict(p.term_counts.most_common(400)))
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud.to_file(str(path))
    return path


def top_terms_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    topics = p.present_topics()
    columns = min(4, len(topics))
    rows = math.ceil(len(topics) / columns)
    counts = p.label_counts()
    figure = plots.new_figure(4.2 * columns, 2.9 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, topic in zip(axes, topics, strict=False):
        terms = p.top_terms[topic][:TERMS_PER_PANEL]
        ax.set_title(f"{topic_name(topic)} (n={counts[topic]:,})", fontsize=9)
        if not terms:
            ax.text(0.5, 0.5, "too few tweets to rank terms", ha="center", va="center",
                    fontsize=8, transform=ax.transAxes)
            ax.set_axis_off()
            continue
        plots.horizontal_bars(ax, [t.term for t in terms], [t.share for t in terms],
                              value_format="{:.0%}", fontsize=8)
        ax.set_xticks([])
    for ax in axes[len(topics):]:
        ax.set_axis_off()
    figure.suptitle("Most distinctive terms per topic (bar: share of the topic's tweets)")
    return figure


def link_stats_figure(p: Profile) -> Figure:
    from fintweet.trainer import plots

    topics = p.present_topics()
    figure = plots.new_figure(12, 0.32 * len(topics) + 2.5)
    overall_ax, topic_ax = figure.subplots(1, 2, width_ratios=(1, 2))
    plots.horizontal_bars(overall_ax, [LINK_LABELS[k] for k in LINK_KINDS], p.link_shares(),
                          value_format="{:.1%}")
    overall_ax.set_xlim(0, 1.15)
    overall_ax.set_title(f"all {p.n:,} tweets: share with at least one")
    counts = p.label_counts()
    plots.annotated_heatmap(
        topic_ax, p.link_shares_by_topic()[topics],
        row_labels=[f"{topic_name(t)} (n={counts[t]:,})" for t in topics],
        column_labels=[LINK_LABELS[k] for k in LINK_KINDS], rotate_columns=False,
    )
    topic_ax.set_title("per topic: share of its tweets with at least one")
    return figure


# --- report --------------------------------------------------------------------------------------


def _html_report(p: Profile, summary: dict[str, Any]) -> str:
    esc = html.escape
    lengths = summary["lengths"]
    facts = [
        ("source", esc(p.source)),
        ("tweets", f"{p.n:,}"),
        ("topics present", f"{summary['topics_present']} of {NUM_TOPICS}"),
        ("largest / smallest topic", f"{summary['imbalance_ratio']:.1f}×"),
        ("median length", f"{lengths['chars']['median']:.0f} characters, "
                          f"{lengths['tokens']['median']:.0f} tokens"),
        ("tweets with a URL", f"{summary['links']['overall']['urls']:.1%}"),
        ("repeated texts", f"{p.duplicate_texts:,} distinct texts occur more than once "
                           f"({p.duplicate_rows:,} extra rows); {p.conflicting_texts:,} of them "
                           "with conflicting labels"),
        ("data fingerprint", f"<code>{p.fingerprint[:16]}</code>"),
    ]
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>fintweet EDA: {esc(Path(p.source).name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:2em 0}figcaption{color:#555;margin-top:.4em}"
        "table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;"
        "border-bottom:1px solid #eee;text-align:left;vertical-align:top}</style>",
        "</head><body>",
        f"<h1>Exploratory analysis of {esc(Path(p.source).name)}</h1>",
        "<table>",
        *(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in facts),
        "</table>",
    ]
    for name, caption in FIGURES.items():
        parts.append(f"<figure><img src='{name}' alt='{esc(name)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts += ["<h2>Top terms per topic</h2>", "<table><tr><th>topic</th><th>tweets</th>"
              "<th>terms (share of the topic's tweets)</th></tr>"]
    counts = p.label_counts()
    for topic, terms in sorted(p.top_terms.items()):
        listed = ", ".join(f"{esc(t.term)} ({t.share:.0%})" for t in terms) or "–"
        parts.append(f"<tr><td>{esc(topic_name(topic))}</td><td>{counts[topic]:,}</td>"
                     f"<td>{listed}</td></tr>")
    parts += ["</table>", "<h2>Most tweeted entities</h2>", "<table>"]
    for kind, items in p.top_entities.items():
        listed = ", ".join(f"{esc(v)} ({c:,})" for v, c in items) or "–"
        parts.append(f"<tr><th>{esc(kind)}</th><td>{listed}</td></tr>")
    parts += ["</table>", "<p>Numbers behind every figure: <a href='summary.json'>summary.json"
              "</a>.</p>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(p: Profile, out_dir: Path, progress: bool = True) -> list[Path]:
    """All figures, ``summary.json`` and ``index.html`` into ``out_dir``; returns their paths."""
    from fintweet.trainer import plots

    say: Callable[[str], None] = (
        (lambda message: print(f"eda: {message}", file=sys.stderr, flush=True))
        if progress else (lambda message: None)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[Profile], Figure]] = {
        "label_distribution.png": label_distribution_figure,
        "text_length.png": text_length_figure,
        "top_terms.png": top_terms_figure,
        "link_stats.png": link_stats_figure,
    }
    written = []
    for name, build in figures.items():
        say(f"drawing {name}")
        written.append(plots.save(build(p), out_dir / name))
    say("drawing wordcloud.png")
    written.append(write_wordcloud(p, out_dir / "wordcloud.png"))
    summary = p.summary()
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    index_path = out_dir / "index.html"
    index_path.write_text(_html_report(p, summary), encoding="utf-8")
    written += [summary_path, index_path]
    say(f"wrote {len(written)} files to {out_dir}")
    return written
