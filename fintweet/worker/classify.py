"""Batch classification: each tweet's text prepared once, one ``predict_proba`` call per batch for
both heads, then results built from the two probability matrices with numpy (top-3 by
``argpartition``, argmax per head) and plain Python lists in the per-tweet loop: per-element
numpy scalars cost more than the rest of the loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.store import StoredResult
from fintweet.core.text import prepare
from fintweet.models.base import Classifier
from fintweet.worker.decode import Decoded

__all__ = ["Classified", "Classifier", "classify"]


@dataclass(frozen=True)
class Classified:
    results: list[StoredResult]
    model: str  # "name@version" of the model that classified the batch
    predicted: np.ndarray  # topic id per tweet
    truth: np.ndarray  # true topic id per tweet, -1 when unlabelled
    ingested_ts: np.ndarray  # epoch seconds per tweet, for end-to-end latency
    sentiment_predicted: np.ndarray  # sentiment id per tweet
    sentiment_truth: np.ndarray  # true sentiment id per tweet, -1 when unlabelled


def _top3(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = np.argpartition(-proba, 3, axis=1)[:, :3]
    top_p = np.take_along_axis(proba, top, axis=1)
    order = np.argsort(-top_p, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_p, order, axis=1)


def classify(model: Classifier, batch: list[Decoded]) -> Classified:
    tweets = [d.tweet for d in batch]
    prepared = [prepare(t.text, t.urls or None) for t in tweets]
    proba = model.predict_proba([p.model_text for p in prepared])
    topic_proba = np.asarray(proba.topic, dtype=np.float32)
    sentiment_proba = np.asarray(proba.sentiment, dtype=np.float32)
    if topic_proba.shape[0] != len(tweets) or sentiment_proba.shape[0] != len(tweets):
        raise ValueError(
            f"{model.name}@{model.version} returned {topic_proba.shape[0]} topic and "
            f"{sentiment_proba.shape[0]} sentiment rows for {len(tweets)} tweets")
    top3, top3_p = _top3(topic_proba)
    predicted = top3[:, 0]
    sentiment = sentiment_proba.argmax(axis=1)
    sentiment_p = np.take_along_axis(sentiment_proba, sentiment[:, None], axis=1)[:, 0]
    truth = np.asarray([-1 if t.label is None else t.label for t in tweets], dtype=np.int64)
    sentiment_truth = np.asarray(
        [-1 if t.sentiment_label is None else t.sentiment_label for t in tweets], dtype=np.int64)
    model_tag = f"{model.name}@{model.version}"
    processed_at = datetime.now(UTC)
    # Plain Python lists once per batch: per-element numpy scalars are slow in the loop below.
    # Rounded in float64, so the JSON says 0.7, not float32's 0.699999988.
    top_ids = top3.tolist()
    top_p = np.round(top3_p.astype(np.float64), 4).tolist()
    sentiments = sentiment.tolist()
    sentiment_ps = np.round(sentiment_p.astype(np.float64), 4).tolist()
    truths = truth.tolist()
    sentiment_truths = sentiment_truth.tolist()
    results: list[StoredResult] = []
    for tweet, text, ids, ps, s, s_p, true_id, true_s in zip(
        tweets, prepared, top_ids, top_p, sentiments, sentiment_ps, truths, sentiment_truths,
        strict=True,
    ):
        topic = TOPIC_NAMES[ids[0]]
        sentiment_name = SENTIMENT_NAMES[s]
        links = text.links
        payload: dict[str, Any] = {
            "id": tweet.id,
            "text": text.text,
            "topic_id": ids[0],
            "topic": topic,
            "confidence": ps[0],
            "top3": [
                {"topic_id": k, "topic": TOPIC_NAMES[k], "p": p}
                for k, p in zip(ids, ps, strict=True)
            ],
            "sentiment": {"id": s, "label": sentiment_name, "confidence": s_p},
            "links": links.as_dict(),
            "model": model_tag,
            "source": tweet.source,
            "created_at": tweet.created_at,
            "ingested_at": tweet.ingested_at,
            "processed_at": processed_at,
        }
        true_topic = None
        if true_id >= 0:
            true_topic = TOPIC_NAMES[true_id]
            payload["label_id"] = true_id
            payload["label"] = true_topic
        true_sentiment = None
        if true_s >= 0:
            true_sentiment = SENTIMENT_NAMES[true_s]
            payload["true_sentiment"] = {"id": true_s, "label": true_sentiment}
        results.append(
            StoredResult(
                id=tweet.id,
                payload=orjson.dumps(payload),
                topic=topic,
                sentiment=sentiment_name,
                tickers=links.cashtags,
                true_topic=true_topic,
                true_sentiment=true_sentiment,
            )
        )
    ingested_ts = np.asarray([t.ingested_at.timestamp() for t in tweets], dtype=np.float64)
    return Classified(results, model_tag, predicted, truth, ingested_ts, sentiment,
                      sentiment_truth)
