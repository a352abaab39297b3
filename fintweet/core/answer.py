"""What a classification says about one text, built in one place from the two probability rows:
the worker's stored result, ``POST /v1/classify`` and ``fintweet classify`` carry the same fields,
names, tie order and rounding by construction, not by a test comparing two copies.

Batches are reduced to plain Python lists first (:func:`rank`) because per-element NumPy scalars
cost more than the rest of the worker's per-tweet loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.text import PreparedText

TOP_TOPICS = 3  # entries of an answer's "top3"
DECIMALS = 4  # probabilities in answers: 0.7, not float32's 0.699999988


@dataclass(frozen=True)
class Ranked:
    """A batch's two heads as lists, one entry per text."""

    topic_ids: list[list[int]]  # the TOP_TOPICS most probable topics, best first
    topic_ps: list[list[float]]
    sentiment_ids: list[int]
    sentiment_ps: list[float]


def rank(topic_proba: np.ndarray, sentiment_proba: np.ndarray) -> Ranked:
    """Top topics and the sentiment of each row. Ties go to the lower class id (a stable sort,
    which on 20 columns is also faster than argpartition + sort). Rounded in float64, so the
    JSON holds the shortest decimal of the rounded value."""
    topic = np.asarray(topic_proba, dtype=np.float32)
    sentiment = np.asarray(sentiment_proba, dtype=np.float32)
    if (topic.ndim != 2 or topic.shape[1] != NUM_TOPICS or sentiment.ndim != 2
            or sentiment.shape[1] != NUM_SENTIMENTS or len(topic) != len(sentiment)):
        raise ValueError(f"expected (n, {NUM_TOPICS}) topic and (n, {NUM_SENTIMENTS}) sentiment "
                         f"probabilities, got {topic.shape} and {sentiment.shape}")
    top = np.argsort(-topic, axis=1, kind="stable")[:, :TOP_TOPICS]
    top_p = np.take_along_axis(topic, top, axis=1)
    best = sentiment.argmax(axis=1)
    best_p = sentiment[np.arange(len(sentiment)), best]
    return Ranked(
        topic_ids=top.tolist(),
        topic_ps=np.round(top_p.astype(np.float64), DECIMALS).tolist(),
        sentiment_ids=best.tolist(),
        sentiment_ps=np.round(best_p.astype(np.float64), DECIMALS).tolist(),
    )


def answer_fields(prepared: PreparedText, topic_ids: list[int], topic_ps: list[float],
                  sentiment_id: int, sentiment_p: float) -> dict[str, Any]:
    """The fields every answer about a text has, in the stored result's order (the worker adds
    the id before them, and the model, source, times and true labels after)."""
    return {
        "text": prepared.text,
        "topic_id": topic_ids[0],
        "topic": TOPIC_NAMES[topic_ids[0]],
        "confidence": topic_ps[0],
        "top3": [{"topic_id": k, "topic": TOPIC_NAMES[k], "p": p}
                 for k, p in zip(topic_ids, topic_ps, strict=True)],
        "sentiment": {"id": sentiment_id, "label": SENTIMENT_NAMES[sentiment_id],
                      "confidence": sentiment_p},
        "links": prepared.links.as_dict(),
    }


def answers(prepared: list[PreparedText], ranked: Ranked) -> list[dict[str, Any]]:
    """:func:`answer_fields` for each text of a batch, in order."""
    return [answer_fields(p, ids, ps, s, s_p) for p, ids, ps, s, s_p in zip(
        prepared, ranked.topic_ids, ranked.topic_ps, ranked.sentiment_ids, ranked.sentiment_ps,
        strict=True)]
