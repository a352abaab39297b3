"""A real worker process serving /metrics while a labelled replay streams through the embedded
stack: its counters must agree with ``fintweet stats`` (the same facts, counted in Redis), and a
real Prometheus must be able to scrape and query them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from fintweet.core.store import ResultStore
from fintweet.devstack.process import free_port
from tests.helpers import http_get, make_tweets, publish, wait_for, worker_env
from tests.prometheus_helper import running_prometheus
from tests.test_worker import MALFORMED


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum the samples of ``name`` in Prometheus text format whose labels include ``labels``
    (all label sets when none are given)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items())


def test_worker_metrics_agree_with_stats_and_prometheus_scrapes_them(
    stack, topic, redis_client, models_dir, tmp_path, workers
):
    from kafka import KafkaProducer

    total = 400
    port = free_port()
    env = worker_env(stack, topic, models_dir, group=f"{topic}-metrics")
    log = tmp_path / "worker.log"
    tweets = make_tweets(total)
    publish(stack.kafka_bootstrap, topic, tweets)
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for value in list(MALFORMED.values())[:3]:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    publish(stack.kafka_bootstrap, topic, tweets[:50])  # duplicates: not counted again

    worker = workers.start(env, "--metrics-port", str(port), log=log)
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 90,
                 "the worker's /healthz")
        store = ResultStore.from_url(stack.redis_url)
        wait_for(lambda: store.stats()["processed"] == total and store.stats()["dlq"] == 3, 90,
                 "all tweets in Redis")
        status, reason = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, reason

        stats = store.stats()

        def scraped_agrees() -> bool:
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            return metric_sum(text, "fintweet_duplicates_total") == 50

        wait_for(scraped_agrees, 30, "metrics to catch up with the last batch")
        text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert metric_sum(text, "fintweet_tweets_classified_total") == stats["processed"] == total
        assert sum(stats["topics"].values()) == sum(stats["sentiments"].values()) == total
        for name, count in stats["topics"].items():
            assert metric_sum(text, "fintweet_tweets_classified_total", topic=name) == count
        for name, count in stats["sentiments"].items():
            assert metric_sum(text, "fintweet_tweets_classified_total", sentiment=name) == count
        assert metric_sum(text, "fintweet_dead_letters_total") == stats["dlq"] == 3
        assert metric_sum(text, "fintweet_messages_consumed_total") == total + 3 + 50
        assert metric_sum(text, "fintweet_replay_labelled_total", task="topic") == stats["labelled"]
        correct = metric_sum(text, "fintweet_replay_correct_total", task="topic")
        assert correct / total == stats["accuracy"]
        assert re.search(r'^fintweet_model_info\{name="ann",version="[^"]+"\} 1\.0$', text,
                         re.MULTILINE)
        assert metric_sum(text, "fintweet_end_to_end_latency_seconds_count") == total

        with running_prometheus([f"127.0.0.1:{port}"], tmp_path / "prom") as prometheus:
            prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", total)
            assert prometheus.scalar("sum(fintweet_dead_letters_total)") == 3

        # Redis gone: not ready, but alive.
        stack.stop_redis()
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 30,
                 "/readyz to report Redis down")
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        stack.start_redis()
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]


def test_stats_command_prints_json_that_matches_redis(stack, topic, redis_client, models_dir,
                                                       workers):
    env = worker_env(stack, topic, models_dir, group=f"{topic}-stats")
    publish(stack.kafka_bootstrap, topic, make_tweets(20))
    worker = workers.start(env, "--until-idle", "3")
    assert worker.wait(timeout=120) == 0
    result = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "stats", "--json"],
                            env=env, capture_output=True, text=True, timeout=60, check=True)
    stats = json.loads(result.stdout)
    assert stats["processed"] == 20
    assert sum(stats["topics"].values()) == 20
    assert stats["dlq"] == 0 and stats["accuracy"] is not None
    table = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "stats"], env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "total" in table and "live topic accuracy" in table
