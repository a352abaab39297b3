"""Seeding Redis with results the way the worker's one Lua write stores them, for the read-side
tests (core/reader.py, the web API, ``show``/``tail``), written from the key table in
fintweet/core/keys.py and the result JSON in the project notes.

It goes through the real writer (``ResultStore.write_batch``), so what the readers are tested
on is what the worker writes; the end-to-end test in tests/test_web_api.py also goes through the
real worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.text import prepare


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
    """Write ``results`` as one batch through the worker's own writer
    (``ResultStore.write_batch``, the one Lua script), its per-minute buckets those of epoch
    second ``at`` (now by default). Returns the ids it newly counted."""
    from fintweet.core.store import ResultStore, StoredResult

    when = time.time() if at is None else at
    store = ResultStore(client, prefix, clock=lambda: when)
    stored = [StoredResult(id=r["id"], payload=json.dumps(r), topic=r["topic"],
                           sentiment=r["sentiment"]["label"],
                           tickers=tuple(r["links"]["cashtags"])) for r in results]
    outcome = store.write_batch(stored, model=results[0]["model"] if results else "")
    return [r["id"] for r, new in zip(results, outcome.new, strict=True) if new]
