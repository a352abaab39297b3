"""Seeding Redis with results the way the worker's one Lua write stores them, for the read-side
tests (core/reader.py, the web API, ``show``/``tail``), written from the key table in
fintweet/core/keys.py and the result JSON in the project notes.

At merge this helper is meant to switch to the real writer (``ResultStore.write_batch``); the
end-to-end test in tests/test_web_api.py already goes through the real worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from fintweet.core.keys import Keys
from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.text import prepare

INDEX_LENGTH = 1000
EVENTS_MAXLEN = 10_000
RETENTION_S = 7 * 24 * 3600


def make_result(tweet_id: str, text: str, topic_id: int, sentiment_id: int,
                confidence: float = 0.9, created_at: str | None = None) -> dict[str, Any]:
    """A stored result of the agreed shape for ``text`` with the given predictions."""
    prepared = prepare(text)
    others = [k for k in range(len(TOPIC_NAMES)) if k != topic_id][:2]
    now = created_at or datetime.now(UTC).isoformat()
    return {
        "id": tweet_id,
        "text": prepared.text,
        "topic_id": topic_id,
        "topic": TOPIC_NAMES[topic_id],
        "confidence": confidence,
        "top3": [{"topic_id": topic_id, "topic": TOPIC_NAMES[topic_id], "p": confidence}]
        + [{"topic_id": k, "topic": TOPIC_NAMES[k], "p": round((1 - confidence) / 2, 4)}
           for k in others],
        "sentiment": {"id": sentiment_id, "label": SENTIMENT_NAMES[sentiment_id],
                      "confidence": 0.8},
        "links": prepared.links.as_dict(),
        "model": "keyword@test",
        "source": "replay",
        "created_at": now,
        "ingested_at": now,
        "processed_at": now,
    }


def seed(client: redis.Redis, results: Sequence[dict[str, Any]], prefix: str = "fintweet",
         at: float | None = None) -> list[str]:
    """Write ``results`` as one batch written at epoch second ``at`` (now by default): result
    JSON (SET NX), counters, capped index lists (newest first), the per-minute buckets of that
    minute and one ``{p}:events`` entry with the newly written ids. Returns those ids."""
    keys = Keys(prefix)
    minute = int((time.time() if at is None else at) // 60)
    fresh: list[dict[str, Any]] = []
    for result in results:
        if client.set(keys.tweet(result["id"]), json.dumps(result), nx=True):
            fresh.append(result)
    if not fresh:
        return []
    pipe = client.pipeline(transaction=True)
    buckets = {what: keys.minute(minute, what)
               for what in ("topics", "sentiments", "tickers", "ticker_sentiment")}
    lists = {keys.recent}
    for result in fresh:
        topic, sentiment = result["topic"], result["sentiment"]["label"]
        tickers = result["links"]["cashtags"]
        pipe.hincrby(keys.counts, topic, 1)
        pipe.hincrby(keys.sentiments, sentiment, 1)
        pipe.hincrby(keys.topic_sentiment, f"{topic}|{sentiment}", 1)
        pipe.hincrby(buckets["topics"], topic, 1)
        pipe.hincrby(buckets["sentiments"], sentiment, 1)
        pipe.lpush(keys.recent, result["id"])
        for key in (keys.index("topic", topic), keys.index("sentiment", sentiment)):
            pipe.lpush(key, result["id"])
            lists.add(key)
        for ticker in tickers:
            pipe.zincrby(keys.tickers, 1, ticker)
            pipe.hincrby(keys.ticker(ticker), sentiment, 1)
            pipe.hincrby(buckets["tickers"], ticker, 1)
            pipe.hincrby(buckets["ticker_sentiment"], f"{ticker}|{sentiment}", 1)
            pipe.lpush(keys.index("ticker", ticker), result["id"])
            lists.add(keys.index("ticker", ticker))
    for key in lists:
        pipe.ltrim(key, 0, INDEX_LENGTH - 1)
    for key in buckets.values():
        pipe.expire(key, RETENTION_S)
    pipe.incrby(keys.processed, len(fresh))
    pipe.hincrby(keys.models, fresh[0]["model"], len(fresh))
    ids = [r["id"] for r in fresh]
    pipe.xadd(keys.events, {"ids": json.dumps(ids)}, maxlen=EVENTS_MAXLEN, approximate=True)
    pipe.execute()
    return ids
