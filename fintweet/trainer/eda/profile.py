"""One pass over a labelled CSV's rows (through :func:`fintweet.core.text.prepare`, the same
preparation the worker and models use, so the report describes the text as the pipeline sees
it) into a :class:`Profile`, from which every figure and number of the report is drawn.

Top terms per class are ranked by ``p_c * log(p_c / p)``, where ``p_c`` is the share of the
class's tweets containing the term and ``p`` the share of all tweets: the term's contribution to
the KL divergence of the class from the corpus. Raw frequency would put "stock" and "market" at
the top of every class; pure lift would crown words seen twice. This weighs both, and terms in
fewer than ``min_count`` of the class's tweets are not ranked at all.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from fintweet.core.data import LabelledData
from fintweet.core.labels import NUM_SENTIMENTS, class_names
from fintweet.core.text import URL_TOKEN, prepare, tokenize

LINK_KINDS = ("urls", "cashtags", "mentions", "hashtags")
# Direction words are stop words in general English but carry "Stock Movement" and sentiment.
KEPT_STOPWORDS = frozenset({"up", "down", "above", "below", "over", "under", "off"})
# Newswire filler that scikit-learn's list lacks and that topped the word cloud.
EXTRA_STOPWORDS = frozenset({URL_TOKEN, "rt", "says", "said", "new"})
TERMS_PER_CLASS = 10


def stopwords() -> frozenset[str]:
    """scikit-learn's English stop words (offline, unlike nltk's corpus) minus direction words,
    plus newswire filler. Cashtags, handles and hashtags keep their sigil, so ``$us`` or ``#up``
    never match a stop word."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return (frozenset(ENGLISH_STOP_WORDS) - KEPT_STOPWORDS) | EXTRA_STOPWORDS


def guess_task(labels: np.ndarray) -> str:
    """"sentiment" when every label fits the three sentiment ids, else "topic" (a topic CSV
    with only topics 0–2 would be misread: ``--task`` says it explicitly)."""
    return "sentiment" if len(labels) and int(labels.max()) < NUM_SENTIMENTS else "topic"


@dataclass(frozen=True)
class TopTerm:
    term: str
    share: float  # of the class's tweets that contain the term
    corpus_share: float  # of all tweets that contain it
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"term": self.term, "share": self.share, "corpus_share": self.corpus_share,
                "score": self.score}


@dataclass(frozen=True)
class Profile:
    task: str
    source: str
    fingerprint: str
    labels: np.ndarray  # (n,)
    char_lengths: np.ndarray  # (n,)
    token_lengths: np.ndarray  # (n,)
    has_link: np.ndarray  # (n, len(LINK_KINDS)) bool
    term_counts: Counter[str]  # occurrences over all tweets, for the word cloud
    top_terms: dict[int, list[TopTerm]]
    top_entities: dict[str, list[tuple[str, int]]]  # most tweeted cashtags, mentions, hashtags
    # Texts as the model reads them (lower case, each URL one token): what a model cannot tell
    # apart is one text to it, whatever its t.co path.
    duplicate_texts: int  # distinct texts that occur more than once
    duplicate_rows: int  # rows beyond the first copy of their text
    conflicting_texts: int  # distinct texts seen with more than one label

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        return class_names(self.task)

    def label_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.names))

    def imbalance_ratio(self) -> float:
        """Largest over smallest class, among the classes present."""
        present = self.label_counts()[self.label_counts() > 0]
        return float(present.max() / present.min())

    def present_classes(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.label_counts())]

    def link_shares(self) -> np.ndarray:
        return self.has_link.mean(axis=0)

    def link_shares_by_class(self) -> np.ndarray:
        """(classes, 4) shares; NaN for a class with no tweets (absent, not zero)."""
        shares = np.full((len(self.names), len(LINK_KINDS)), np.nan)
        for cls in self.present_classes():
            shares[cls] = self.has_link[self.labels == cls].mean(axis=0)
        return shares

    def summary(self) -> dict[str, Any]:
        counts = self.label_counts()
        by_class = self.link_shares_by_class()
        return {
            "task": self.task,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "n": self.n,
            "classes_present": len(self.present_classes()),
            "imbalance_ratio": self.imbalance_ratio(),
            "labels": [
                {"id": c, "key": f"LABEL_{c}", "name": name, "count": int(counts[c]),
                 "share": float(counts[c] / self.n)}
                for c, name in enumerate(self.names)
            ],
            "lengths": {
                "chars": _describe(self.char_lengths),
                "tokens": _describe(self.token_lengths),
            },
            "links": {
                "overall": dict(zip(LINK_KINDS, map(float, self.link_shares()), strict=True)),
                "per_class": [
                    {"id": c, "name": self.names[c],
                     **dict(zip(LINK_KINDS, map(float, by_class[c]), strict=True))}
                    for c in self.present_classes()
                ],
                "top": {kind: [{"value": v, "tweets": n} for v, n in items]
                        for kind, items in self.top_entities.items()},
            },
            "top_terms": [
                {"id": c, "name": self.names[c], "terms": [x.as_dict() for x in terms]}
                for c, terms in sorted(self.top_terms.items())
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


def _is_term(token: str, stop: frozenset[str]) -> bool:
    """Words, cashtags, handles and hashtags; not numbers, punctuation or stop words."""
    body = token.lstrip("$@#")
    return len(body) >= 2 and any(ch.isalpha() for ch in body) and token not in stop


def rank_terms(
    class_df: Counter[str], class_size: int, corpus_df: Counter[str], corpus_size: int,
    limit: int = TERMS_PER_CLASS, min_count: int = 3,
) -> list[TopTerm]:
    """The class's most distinctive terms: in at least ``min_count`` of its tweets and more
    common there than in the corpus as a whole (a term everywhere says nothing about a class)."""
    ranked = []
    for term, count in class_df.items():
        share = count / class_size
        corpus_share = corpus_df[term] / corpus_size
        if count < min_count or share <= corpus_share:
            continue
        ranked.append(TopTerm(term, share, corpus_share, share * math.log(share / corpus_share)))
    ranked.sort(key=lambda t: (-t.score, t.term))
    return ranked[:limit]


def profile(data: LabelledData, task: str | None = None, progress: bool = True,
            min_count: int = 3) -> Profile:
    """One pass over the rows; everything else in the report is derived from its result.
    ``task`` None: :func:`guess_task` from the labels."""
    from tqdm import tqdm

    if data.labels.min() < 0:
        raise ValueError(f"{data.source}: EDA needs a label on every row")
    task = task or guess_task(data.labels)
    n_classes = len(class_names(task))
    if data.labels.max() >= n_classes:
        raise ValueError(f"{data.source}: label {data.labels.max()} is not a {task} class")
    stop = stopwords()
    n = len(data)
    char_lengths = np.zeros(n, dtype=np.int64)
    token_lengths = np.zeros(n, dtype=np.int64)
    has_link = np.zeros((n, len(LINK_KINDS)), dtype=bool)
    term_counts: Counter[str] = Counter()
    corpus_df: Counter[str] = Counter()
    class_df: dict[int, Counter[str]] = {c: Counter() for c in range(n_classes)}
    entity_tweets: dict[str, Counter[str]] = {k: Counter() for k in LINK_KINDS if k != "urls"}
    labels_by_text: dict[str, set[int]] = {}
    copies: Counter[str] = Counter()

    rows = zip(data.texts, data.labels.tolist(), strict=True)
    for i, (text, label) in enumerate(
        tqdm(rows, total=n, desc="profiling", unit="tweet", file=sys.stderr, disable=not progress)
    ):
        prepared = prepare(text)
        tokens = tokenize(prepared.model_text)
        char_lengths[i] = len(prepared.text)
        token_lengths[i] = len(tokens)
        links = prepared.links
        has_link[i] = [bool(getattr(links, kind)) for kind in LINK_KINDS]
        for kind, counter in entity_tweets.items():
            counter.update(getattr(links, kind))
        terms = [t for t in tokens if _is_term(t, stop)]
        term_counts.update(terms)
        distinct = set(terms)
        corpus_df.update(distinct)
        class_df[label].update(distinct)
        copies[prepared.model_text] += 1  # as the model reads it: one token per URL
        labels_by_text.setdefault(prepared.model_text, set()).add(label)

    sizes = np.bincount(data.labels, minlength=n_classes)
    prefixes = {"cashtags": "$", "mentions": "@", "hashtags": "#"}
    return Profile(
        task=task,
        source=data.source,
        fingerprint=data.fingerprint(),
        labels=data.labels,
        char_lengths=char_lengths,
        token_lengths=token_lengths,
        has_link=has_link,
        term_counts=term_counts,
        top_terms={
            c: rank_terms(class_df[c], int(sizes[c]), corpus_df, n, min_count=min_count)
            for c in range(n_classes) if sizes[c]
        },
        top_entities={
            kind: [(prefixes[kind] + value, count) for value, count in counter.most_common(15)]
            for kind, counter in entity_tweets.items()
        },
        duplicate_texts=sum(1 for c in copies.values() if c > 1),
        duplicate_rows=sum(c - 1 for c in copies.values()),
        conflicting_texts=sum(1 for labels in labels_by_text.values() if len(labels) > 1),
    )
