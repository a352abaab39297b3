"""Batch classification: each tweet's text prepared once, one ``predict_proba`` call per batch for
both heads, then each stored result built from :mod:`fintweet.core.answer` (the fields the page
and the CLI answer with too) plus what only a stored result has: the id, the model, the times and
the true labels of a replay."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson

from fintweet.core.answer import TOP_TOPICS, answer_fields, rank
from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.schema import DeadLetterReason, Tweet
from fintweet.core.store import StoredResult
from fintweet.core.text import prepare
from fintweet.models.base import Classifier, checked_proba, model_tag
from fintweet.worker.decode import Decoded, Rejected, rejected_as

__all__ = ["CLASSIFY_ERROR", "Classified", "Classifier", "classify", "classify_isolating"]

log = logging.getLogger(__name__)

CLASSIFY_ERROR = DeadLetterReason.CLASSIFY_ERROR  # the reason of a tweet the model fails on
# A tweet any working model answers: tells a model that fails on everything from a bad tweet.
PLAIN_TWEET = Decoded(Tweet(id="plain", text="Stocks close higher as tech rallies; Nasdaq up 1.2%",
                            created_at=datetime(2026, 1, 1, tzinfo=UTC), source="replay"),
                      record=None)


@dataclass(frozen=True)
class Classified:
    results: list[StoredResult]
    model: str  # "name@version" of the model that classified the batch
    topic_predicted: np.ndarray  # topic id per tweet
    topic_truth: np.ndarray  # true topic id per tweet, -1 when unlabelled
    ingested_ts: np.ndarray  # epoch seconds per tweet, for end-to-end latency
    sentiment_predicted: np.ndarray  # sentiment id per tweet
    sentiment_truth: np.ndarray  # true sentiment id per tweet, -1 when unlabelled


def classify(model: Classifier, batch: list[Decoded]) -> Classified:
    tweets = [d.tweet for d in batch]
    prepared = [prepare(t.text, t.urls or None) for t in tweets]
    proba = checked_proba(model, [p.model_text for p in prepared])
    ranked = rank(proba.topic, proba.sentiment)
    truth = np.asarray([-1 if t.label is None else t.label for t in tweets], dtype=np.int64)
    sentiment_truth = np.asarray(
        [-1 if t.sentiment_label is None else t.sentiment_label for t in tweets], dtype=np.int64)
    tag = model_tag(model)
    processed_at = datetime.now(UTC)
    results: list[StoredResult] = []
    for tweet, text, ids, ps, s, s_p, true_id, true_s in zip(
        tweets, prepared, ranked.topic_ids, ranked.topic_ps, ranked.sentiment_ids,
        ranked.sentiment_ps, truth.tolist(), sentiment_truth.tolist(), strict=True,
    ):
        payload = {"id": tweet.id, **answer_fields(text, ids, ps, s, s_p),
                   "model": tag, "source": tweet.source, "created_at": tweet.created_at,
                   "ingested_at": tweet.ingested_at, "processed_at": processed_at}
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
                topic=TOPIC_NAMES[ids[0]],
                sentiment=SENTIMENT_NAMES[s],
                tickers=text.links.cashtags,
                true_topic=true_topic,
                true_sentiment=true_sentiment,
            )
        )
    ingested_ts = np.asarray([t.ingested_at.timestamp() for t in tweets], dtype=np.float64)
    predicted = np.asarray(ranked.topic_ids, dtype=np.int64).reshape(-1, TOP_TOPICS)[:, 0]
    return Classified(results, tag, predicted, truth, ingested_ts,
                      np.asarray(ranked.sentiment_ids, dtype=np.int64), sentiment_truth)


def classify_isolating(model: Classifier, batch: list[Decoded]
                       ) -> tuple[Classified | None, list[Rejected]]:
    """:func:`classify`; if the batch fails, its halves, and theirs, down to the tweets that fail
    alone, which become dead letters (reason ``classify_error``). Why: a tweet the model cannot
    take would otherwise stop the worker, and every restart, on the same uncommitted batch.
    Halving finds k bad tweets in about 2k·log2(n) calls instead of n, which keeps a slow model
    inside the poll interval. Only if the model still answers a plain tweet: a model that fails
    on everything (a broken runtime, no memory) is the fault, and its error is raised at once
    with nothing dead-lettered. (A fault that comes and goes can still dead-letter a good tweet:
    its letter keeps the whole record, to be replayed.)"""
    try:
        return classify(model, batch), []
    except Exception as exc:
        failure = exc
    log.warning("classifying a batch of %d failed; looking for the tweets that fail alone",
                len(batch), exc_info=failure)
    try:
        classify(model, [PLAIN_TWEET])
    except Exception:
        raise failure from None
    parts: list[Classified] = []
    failed: list[tuple[Decoded, Exception]] = []
    _classify_halves(model, batch, parts, failed)
    letters = []
    for one, error in failed:
        log.error("tweet %s fails classification alone (%s: %s); it becomes a dead letter",
                  one.tweet.id, type(error).__name__, error)
        letters.append(rejected_as(one.record, CLASSIFY_ERROR, f"{type(error).__name__}: {error}"))
    return (_joined(parts) if parts else None), letters


def _classify_halves(model: Classifier, batch: list[Decoded], parts: list[Classified],
                     failed: list[tuple[Decoded, Exception]]) -> None:
    half = len(batch) // 2
    for part in (batch[:half], batch[half:]):
        if not part:
            continue
        try:
            parts.append(classify(model, part))
        except Exception as exc:
            if len(part) == 1:
                failed.append((part[0], exc))
            else:
                _classify_halves(model, part, parts, failed)


def _joined(parts: list[Classified]) -> Classified:
    return Classified(
        results=[result for part in parts for result in part.results],
        model=parts[0].model,
        topic_predicted=np.concatenate([part.topic_predicted for part in parts]),
        topic_truth=np.concatenate([part.topic_truth for part in parts]),
        ingested_ts=np.concatenate([part.ingested_ts for part in parts]),
        sentiment_predicted=np.concatenate([part.sentiment_predicted for part in parts]),
        sentiment_truth=np.concatenate([part.sentiment_truth for part in parts]),
    )
