"""Helpers shared by the tests: driving real workers against the real broker and Redis, waiting
for a condition, and plain HTTP GETs of the metrics endpoints."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from fintweet.core.producer import TweetProducer
from fintweet.core.schema import Tweet, utcnow

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
    """A ``fintweet worker`` subprocess writing to ``log`` (appended) or nowhere. Tests start
    them through the ``workers`` fixture, which reaps every one, so none outlives its test."""
    argv = [sys.executable, "-m", "fintweet.cli.main", "worker", *FAST_WORKER_FLAGS, *extra]
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    # The child writes through its own copy of the descriptor: ours is closed at once, not left
    # open for as long as the test session runs.
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out)


class Workers:
    """Worker subprocesses started for one test (the ``workers`` fixture). :meth:`stop_all`
    runs at teardown whether the test passed or not: a worker left running after a timed-out
    wait would keep writing into the session's Redis and corrupt later tests' counts."""

    def __init__(self, grace_s: float = 15.0) -> None:
        self.grace_s = grace_s
        self.started: list[subprocess.Popen] = []

    def start(self, env: dict[str, str], *extra: str, log: Path | None = None
              ) -> subprocess.Popen:
        worker = start_worker(env, *extra, log=log)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        """SIGTERM every live worker (each finishes its batch and leaves the group), wait up to
        ``grace_s`` for them all, then SIGKILL whichever is still running."""
        alive = [worker for worker in self.started if worker.poll() is None]
        for worker in alive:
            with contextlib.suppress(ProcessLookupError):
                worker.terminate()
        deadline = time.monotonic() + self.grace_s
        for worker in alive:
            try:
                worker.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                worker.wait()
        self.started.clear()


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


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0,
            settle: float = 1.0) -> list[dict]:
    """Every message on the topic: waits for ``expected``, then ``settle`` seconds more so that
    an extra copy, if one was published, is caught too."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=200)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages: list[dict] = []
        deadline, settled_at = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    assert record.key.decode() == value["id"]
                    messages.append(value)
            if len(messages) >= expected:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
        return messages
    finally:
        consumer.close()
