"""Batch classification: one ``predict_proba`` call per batch, then results built from the
probability matrix with numpy (top-3 by ``argpartition``), not per-tweet model calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import orjson

from fintweet.core.labels import TOPIC_NAMES
from fintweet.core.store import StoredResult
from fintweet.core.text import clean
from fintweet.worker.decode import Decoded


class Classifier(Protocol):
    name: str
    version: str

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Classified:
    results: list[StoredResult]
    model: str  # "name@version" of the model that classified the batch
    predicted: np.ndarray  # topic id per tweet
    truth: np.ndarray  # true topic id per tweet, -1 when unlabelled
    ingested_ts: np.ndarray  # epoch seconds per tweet, for end-to-end latency


def classify(model: Classifier, batch: list[Decoded]) -> Classified:
    tweets = [d.tweet for d in batch]
    cleaned = [clean(t.text, t.urls or None) for t in tweets]
    proba = np.asarray(model.predict_proba([c.text for c in cleaned]), dtype=np.float32)
    top3 = np.argpartition(-proba, 3, axis=1)[:, :3]
    top3_p = np.take_along_axis(proba, top3, axis=1)
    order = np.argsort(-top3_p, axis=1)
    top3 = np.take_along_axis(top3, order, axis=1)
    top3_p = np.take_along_axis(top3_p, order, axis=1)
    predicted = top3[:, 0]
    truth = np.asarray([-1 if t.label is None else t.label for t in tweets], dtype=np.int64)
    model_tag = f"{model.name}@{model.version}"
    processed_at = datetime.now(UTC)
    # Plain Python lists once per batch: per-element numpy scalars are slow in the loop below.
    top_ids = top3.tolist()
    top_p = np.round(top3_p, 4).tolist()
    truths = truth.tolist()
    results: list[StoredResult] = []
    for tweet, cleaned_tweet, ids, ps, true_id in zip(
        tweets, cleaned, top_ids, top_p, truths, strict=True
    ):
        topic = TOPIC_NAMES[ids[0]]
        payload: dict[str, Any] = {
            "id": tweet.id,
            "text": cleaned_tweet.text,
            "topic_id": ids[0],
            "topic": topic,
            "confidence": ps[0],
            "top3": [
                {"topic_id": k, "topic": TOPIC_NAMES[k], "p": p}
                for k, p in zip(ids, ps, strict=True)
            ],
            "links": cleaned_tweet.links.as_dict(),
            "model": model_tag,
            "source": tweet.source,
            "created_at": tweet.created_at,
            "ingested_at": tweet.ingested_at,
            "processed_at": processed_at,
        }
        true_topic = None
        correct = None
        if true_id >= 0:
            true_topic = TOPIC_NAMES[true_id]
            correct = true_id == ids[0]
            payload["label_id"] = true_id
            payload["label"] = true_topic
        results.append(
            StoredResult(
                id=tweet.id,
                payload=orjson.dumps(payload),
                topic=topic,
                true_topic=true_topic,
                correct=correct,
            )
        )
    ingested_ts = np.asarray([t.ingested_at.timestamp() for t in tweets], dtype=np.float64)
    return Classified(results, model_tag, predicted, truth, ingested_ts)
