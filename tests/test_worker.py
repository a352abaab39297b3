"""The worker against the real embedded broker and the real redis-server: exactly-once counting
through replays, crashes, bad messages, a Redis restart and a clean shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from fintweet.core.config import Settings
from fintweet.core.store import ResultStore
from fintweet.models import load
from fintweet.worker.app import BatchLimit, Worker
from fintweet.worker.consumer import FAST_GROUP_SETTINGS
from tests.helpers import (
    make_tweets,
    publish,
    wait_for,
    worker_env,
)
from tests.rule_model import RuleModel


def settings_for(stack, topic: str, group: str | None = None, **extra) -> Settings:
    return Settings().override(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url,
                               topic=topic, group=group or f"{topic}-g", **extra)


def run_in_process(stack, topic, models_dir, expected: int, **extra):
    """Run a worker in this process until it has consumed ``expected`` records."""
    model = load(models_dir / "ann")

    def done(stats) -> None:
        if stats.consumed >= expected:
            worker.stopping.set()

    worker = Worker(settings_for(stack, topic, **extra), model,
                    consumer_options=FAST_GROUP_SETTINGS, on_batch=done, until_idle=30)
    return worker.run()


def store_for(stack) -> ResultStore:
    return ResultStore.from_url(stack.redis_url)


def test_replay_counts_each_tweet_once_even_when_replayed_again(stack, topic, redis_client,
                                                                 models_dir):
    tweets = make_tweets(300)
    publish(stack.kafka_bootstrap, topic, tweets)
    stats = run_in_process(stack, topic, models_dir, 300)
    assert stats.classified == 300
    store = store_for(stack)
    first = store.stats()
    assert first["processed"] == 300
    assert sum(first["topics"].values()) == 300
    assert first["labelled"] == 300 and first["accuracy"] is not None
    result = store.result("t7")
    assert result is not None
    assert result["id"] == "t7" and len(result["top3"]) == 3
    assert result["top3"][0]["topic"] == result["topic"]
    assert result["top3"][0]["p"] >= result["top3"][1]["p"] >= result["top3"][2]["p"]
    assert result["model"].startswith("ann@")
    assert first["models"] == {result["model"]: 300}
    assert "links" in result and result["label_id"] == 6  # sample 7 % 5 = 2: the oil tweet

    publish(stack.kafka_bootstrap, topic, tweets)  # the same replay again
    again = run_in_process(stack, topic, models_dir, 300)
    assert again.classified == 0 and again.duplicates == 300
    second = store.stats()
    assert second["processed"] == 300
    assert second["topics"] == first["topics"]
    assert second["duplicates"] == 300


def test_links_are_extracted_into_the_result(stack, topic, redis_client, models_dir):
    from fintweet.core.schema import Tweet, utcnow

    tweet = Tweet(id="links1", created_at=utcnow(), source="x",
                  text="$TSLA and $aapl up &amp; @CNBCPro says #stocks https://t.co/abc",
                  urls=["https://www.cnbc.com/story"])
    publish(stack.kafka_bootstrap, topic, [tweet])
    run_in_process(stack, topic, models_dir, 1)
    result = store_for(stack).result("links1")
    assert result["links"] == {
        "urls": ["https://www.cnbc.com/story"],
        "cashtags": ["TSLA", "AAPL"],
        "mentions": ["CNBCPro"],
        "hashtags": ["stocks"],
    }
    assert "&amp;" not in result["text"]
    assert result["source"] == "x" and "label" not in result


MALFORMED = {
    "not_json": b"this is not json",
    "missing_text": json.dumps({"id": "m2", "created_at": "2026-01-01T00:00:00Z",
                                "source": "replay"}).encode(),
    "empty_text": json.dumps({"id": "m3", "text": "   ", "created_at": "2026-01-01T00:00:00Z",
                              "source": "replay"}).encode(),
    "text_too_long": json.dumps({"id": "m4", "text": "x" * 10_001,
                                 "created_at": "2026-01-01T00:00:00Z",
                                 "source": "replay"}).encode(),
    "invalid_utf8": b'{"id": "m5", "text": "\xff\xfe bad", "source": "replay"}',
    "invalid_field": json.dumps({"id": "m6", "text": "ok", "created_at": "yesterday-ish",
                                 "source": "replay", "label": "seven"}).encode(),
    "not_an_object": b"[1, 2, 3]",
}


def test_malformed_messages_go_to_the_dlq_and_the_worker_carries_on(stack, topic, redis_client,
                                                                     models_dir):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for i, value in enumerate(MALFORMED.values()):
        producer.send(topic, key=f"m{i}".encode(), value=value, partition=0)
    producer.flush()
    producer.close()
    good = make_tweets(1, prefix="after-bad-")
    publish(stack.kafka_bootstrap, topic, good)
    stats = run_in_process(stack, topic, models_dir, len(MALFORMED) + 1)
    assert stats.dead_letters == len(MALFORMED)
    summary = store_for(stack).stats()
    assert summary["dlq"] == len(MALFORMED)
    assert summary["dlq_reasons"] == dict.fromkeys(MALFORMED, 1)
    assert summary["processed"] == 1
    assert store_for(stack).result("after-bad-0") is not None

    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert sorted(letter["reason"] for letter in letters) == sorted(MALFORMED)
    import base64

    by_reason = {letter["reason"]: letter for letter in letters}
    assert base64.b64decode(by_reason["invalid_utf8"]["value_b64"]) == MALFORMED["invalid_utf8"]
    assert by_reason["not_json"]["topic"] == topic and by_reason["not_json"]["offset"] == 0
    assert by_reason["missing_text"]["error"]


@pytest.mark.slow
def test_sigkilled_worker_loses_nothing_and_counts_nothing_twice(stack, topic, redis_client,
                                                                  models_dir, tmp_path, workers):
    total = 3000
    env = worker_env(stack, topic, models_dir, group=f"{topic}-kill")
    log = tmp_path / "worker.log"
    store = store_for(stack)
    publisher = threading.Thread(
        target=lambda: [publish(stack.kafka_bootstrap, topic, chunk) for chunk in
                        (make_tweets(total)[i:i + 500] for i in range(0, total, 500))])
    publisher.start()
    for kill_at in (400, 1200):
        worker = workers.start(env, "--batch-size", "64", log=log)
        wait_for(lambda at=kill_at: store.stats()["processed"] >= at, 120,
                 f"{kill_at} tweets processed")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    publisher.join()
    final = workers.start(env, "--until-idle", "6", log=log)
    assert final.wait(timeout=180) == 0, log.read_text()[-3000:]
    stats = store.stats()
    assert stats["processed"] == total
    assert sum(stats["topics"].values()) == total
    assert stats["labelled"] == total


@pytest.mark.slow
def test_worker_survives_a_redis_restart_without_losing_tweets(stack, topic, redis_client,
                                                               models_dir, tmp_path, workers):
    total = 2000
    env = worker_env(stack, topic, models_dir, group=f"{topic}-redis")
    log = tmp_path / "worker.log"
    store = store_for(stack)
    publish(stack.kafka_bootstrap, topic, make_tweets(total // 2))
    worker = workers.start(env, "--until-idle", "8", "--batch-size", "50", log=log)
    wait_for(lambda: store.stats()["processed"] >= 200, 120, "200 tweets processed")
    stack.stop_redis()
    publish(stack.kafka_bootstrap, topic, make_tweets(total, prefix="t")[total // 2:])
    # the worker is now retrying against a dead Redis: seen in its log, or nothing was tested
    wait_for(lambda: "retrying in" in log.read_text(errors="replace"), 60,
             "the worker to retry a write against the stopped Redis")
    stack.start_redis()
    assert worker.wait(timeout=180) == 0, log.read_text()[-3000:]
    stats = store_for(stack).stats()
    assert stats["processed"] == total
    assert sum(stats["topics"].values()) == total


def test_sigterm_finishes_commits_and_exits_cleanly(stack, topic, redis_client, models_dir,
                                                   tmp_path, workers):
    total = 500
    group = f"{topic}-term"
    env = worker_env(stack, topic, models_dir, group=group)
    log = tmp_path / "worker.log"
    publish(stack.kafka_bootstrap, topic, make_tweets(total))
    worker = workers.start(env, log=log)
    store = store_for(stack)
    wait_for(lambda: store.stats()["processed"] >= total, 120, "all tweets processed")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]

    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                             enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    committed = {tp: consumer.committed(tp) or 0 for tp in partitions}
    # Each partition's end, read rather than asked for: Tansu answers ListOffsets(latest) with a
    # batch count, not a record offset (fetch high watermarks are right).
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    read, deadline = 0, time.monotonic() + 60
    while read < total and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        read += sum(len(records) for records in polled.values())
    assert read == total, f"read {read} of {total} records back"
    ends = {tp: consumer.position(tp) for tp in partitions}
    consumer.close(autocommit=False)
    assert committed == ends
    assert sum(ends.values()) == total


def test_worker_exits_with_a_clear_error_when_the_model_is_missing(stack, topic, tmp_path):
    env = worker_env(stack, topic, tmp_path / "no-models", group="g-missing")
    result = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "worker", "--until-idle", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no-models" in result.stderr


class SlowModel(RuleModel):
    """The rule model at a transformer's CPU pace: 4 ms per tweet."""

    def predict_proba(self, texts):
        time.sleep(0.004 * len(texts))
        return super().predict_proba(texts)


def test_a_slow_model_gets_batches_that_fit_the_poll_interval(stack, topic, redis_client):
    """At 4 ms a tweet a 2,048-tweet batch takes 8 s, most of the 10 s poll interval the fast
    group settings give; the limit keeps each batch near a quarter of it (2.5 s, ~600 tweets),
    so the worker is never evicted and nothing is redelivered."""
    publish(stack.kafka_bootstrap, topic, make_tweets(3000))
    sizes: list[int] = []
    worker = Worker(settings_for(stack, topic, batch_size=2048), SlowModel(),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=30,
                    on_batch=lambda stats: sizes.append(worker.batch_limit.size)
                    if stats.consumed < 3000 else worker.stopping.set())
    stats = worker.run()
    assert stats.classified == 3000 and stats.duplicates == 0
    assert sizes and sizes[0] <= 700 and max(sizes) <= 700  # 2.5 s / 4 ms = 625
    assert stats.batches >= 3000 / 700


def test_batch_limit_follows_the_measured_cost_per_record() -> None:
    limit = BatchLimit(2048, budget_s=15.0)
    assert limit.size == 256  # untimed: a small first batch
    limit.observe(256, 0.05)  # the ANN: ~0.2 ms a tweet
    assert limit.size == 2048
    limit.observe(2048, 30.0)  # the transformer: ~15 ms a tweet
    assert limit.size == 1024
    limit.observe(1024, 2000.0)  # 2 s a record: 7 would fit
    assert limit.size == 16  # never below 16
    limit.observe(0, 1.0)
    assert limit.size == 16


class BlasThreadsModel(RuleModel):
    """Records how many threads the BLAS pools may use while the worker classifies."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def predict_proba(self, texts):
        from threadpoolctl import threadpool_info

        self.seen.update(pool["num_threads"] for pool in threadpool_info()
                         if pool["user_api"] == "blas")
        return super().predict_proba(texts)


@pytest.mark.parametrize("blas_threads", [1, 0])
def test_the_worker_caps_blas_threads_while_it_runs(stack, topic, redis_client,
                                                    blas_threads: int) -> None:
    from threadpoolctl import threadpool_info

    def blas() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    from threadpoolctl import threadpool_limits

    # A BLAS already at one thread (one core, OMP_NUM_THREADS=1) could not show a missing cap.
    with threadpool_limits(2, user_api="blas"):
        _check_the_cap(stack, topic, blas, blas_threads)


def _check_the_cap(stack, topic, blas, blas_threads: int) -> None:
    before = blas()
    assert before and before != {1}, f"NumPy's BLAS is loaded, not at one thread: {before}"
    publish(stack.kafka_bootstrap, topic, make_tweets(20))
    model = BlasThreadsModel()
    worker = Worker(settings_for(stack, topic, blas_threads=blas_threads), model,
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=30,
                    on_batch=lambda stats: stats.consumed >= 20 and worker.stopping.set())
    assert worker.run().classified == 20
    assert model.seen == ({1} if blas_threads else before)
    assert blas() == before  # lifted on close: the process that hosted the worker gets it back


def test_the_worker_s_rate_counts_the_time_it_had_records_not_the_idle_time_between() -> None:
    """A worker left running between two replays reported 25 tweets/s where it had classified
    thousands a second: its rate divided by the whole time since its first record. The calls
    follow the worker's order: a batch is polled and classified while the one before is
    written, so a slow model's batch (4 s here) is accounted only after the next is polled."""
    from fintweet.worker.app import WorkerStats

    stats = WorkerStats()

    def batch(polled: float, previous_written: float | None) -> None:
        stats.records_arrived(polled)
        if previous_written is not None:  # the batch before, accounted after this one's classify
            stats.consumed += 100
            stats.last_record = previous_written

    batch(100.0, None)
    batch(104.0, 104.1)
    batch(108.0, 108.1)
    stats.consumed += 100  # the last one, accounted on the quiet poll after it
    stats.last_record = 112.1
    stats.went_idle(112.2)
    assert stats.busy_seconds() == pytest.approx(12.1)
    assert stats.rate() == pytest.approx(300 / 12.1)
    stats.went_idle(200.0)  # still idle: it counts from the first empty poll
    batch(700.0, None)  # ten minutes later, the next replay
    stats.consumed += 100
    stats.last_record = 701.0
    stats.went_idle(701.1)
    assert stats.busy_seconds() == pytest.approx(13.1)
    assert stats.rate() == pytest.approx(400 / 13.1)
