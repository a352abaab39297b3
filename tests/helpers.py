"""Helpers shared by the tests: driving real workers against the real broker and Redis, waiting
for a condition, and plain HTTP GETs of the metrics endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from fintweet.core.schema import Tweet, utcnow
from fintweet.ingest.producer import TweetProducer

# Fast group membership for tests: a join must not wait for a long rebalance timeout.
FAST_WORKER_FLAGS = ["--max-poll-interval-ms", "10000", "--session-timeout-ms", "3000"]


def make_tweets(n: int, prefix: str = "t", labelled: bool = True) -> list[Tweet]:
    samples = [
        ("Fed raises rates by 25 basis points, signals more hikes ahead", 1),
        ("$AAPL beats Q3 earnings estimates, revenue up 8% https://t.co/x1", 5),
        ("Oil prices jump as OPEC+ agrees to deeper output cuts", 6),
        ("Stocks close higher as tech rallies; Nasdaq up 1.2%", 15),
        ("Acme Corp to acquire Widget Inc for $2.1B in cash", 13),
    ]
    tweets = []
    for i in range(n):
        text, label = samples[i % len(samples)]
        now = utcnow()
        tweets.append(Tweet(id=f"{prefix}{i}", text=f"{text} #{i}", created_at=now,
                            source="replay", label=label if labelled else None, ingested_at=now))
    return tweets


def publish(bootstrap: str, topic: str, tweets: list[Tweet]) -> None:
    with TweetProducer(bootstrap, topic) as producer:
        for tweet in tweets:
            producer.publish(tweet)


def worker_env(stack, topic: str, models_dir: Path, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "FINTWEET_REDIS_URL": stack.redis_url,
        "FINTWEET_TOPIC": topic,
        "FINTWEET_GROUP": group,
        "FINTWEET_MODELS_DIR": str(models_dir),
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def start_worker(env: dict[str, str], *extra: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "worker", *FAST_WORKER_FLAGS, *extra],
        env=env, stdout=out, stderr=out,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    """Status and body; (0, reason) when nothing answers, so callers can poll a starting server."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)
