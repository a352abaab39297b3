"""Metrics: values set through WorkerMetrics/IngestMetrics come out of MetricsServer in the
Prometheus text format, the health endpoints follow the readiness callback, and a real Prometheus
scrapes the server and answers queries with the same numbers."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from fintweet.core.labels import NUM_TOPICS, TOPIC_NAMES
from fintweet.metrics import IngestMetrics, MetricsServer, WorkerMetrics, topic_count_vector
from tests.helpers import http_get
from tests.prometheus_helper import running_prometheus


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def worker_metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def server(worker_metrics: WorkerMetrics) -> Iterator[MetricsServer]:
    with MetricsServer(0, worker_metrics.registry, host="127.0.0.1") as metrics_server:
        yield metrics_server


def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    return samples(body)


def topic(name: str) -> tuple[tuple[str, str], ...]:
    return (("topic", name),)


def test_batch_values_reach_the_metrics_endpoint(
    worker_metrics: WorkerMetrics, server: MetricsServer
) -> None:
    predicted = np.array([0, 0, 5, 19, 19, 19])
    worker_metrics.observe_batch(
        consumed=8,
        topic_counts=np.bincount(predicted, minlength=NUM_TOPICS),
        duplicates=2,
        inference_seconds=0.004,
        redis_write_seconds=0.0007,
        end_to_end_latency_seconds=np.array([0.0004, 0.001, 0.02, 0.02, 3.0, 120.0]),
    )
    worker_metrics.observe_batch(consumed=1, topic_counts={"Earnings": 1, "LABEL_1": 0})
    got = scrape(server)

    assert got[("fintweet_messages_consumed_total", ())] == 9
    assert got[("fintweet_duplicates_total", ())] == 2
    assert got[("fintweet_tweets_classified_total", topic("Analyst Update"))] == 2
    assert got[("fintweet_tweets_classified_total", topic("Earnings"))] == 2
    assert got[("fintweet_tweets_classified_total", topic("Stock Movement"))] == 3
    # Topics never predicted are present at 0 from the start.
    assert got[("fintweet_tweets_classified_total", topic("IPO"))] == 0
    classified = [v for (name, _), v in got.items() if name == "fintweet_tweets_classified_total"]
    assert len(classified) == NUM_TOPICS
    assert sum(classified) == 7

    # Batch size defaults to the number classified: one batch of 6, one of 1.
    assert got[("fintweet_batch_size_count", ())] == 2
    assert got[("fintweet_batch_size_sum", ())] == 7
    assert got[("fintweet_batch_size_bucket", (("le", "4.0"),))] == 1
    assert got[("fintweet_batch_size_bucket", (("le", "8.0"),))] == 2
    assert got[("fintweet_inference_seconds_count", ())] == 1
    assert got[("fintweet_inference_seconds_sum", ())] == pytest.approx(0.004)
    assert got[("fintweet_redis_write_seconds_bucket", (("le", "0.001"),))] == 1

    # Latency buckets are cumulative with `le` inclusive; 120 s lies beyond the last bound.
    latency = "fintweet_end_to_end_latency_seconds"
    assert got[(f"{latency}_bucket", (("le", "0.001"),))] == 2
    assert got[(f"{latency}_bucket", (("le", "0.025"),))] == 4
    assert got[(f"{latency}_bucket", (("le", "5.0"),))] == 5
    assert got[(f"{latency}_bucket", (("le", "60.0"),))] == 5
    assert got[(f"{latency}_bucket", (("le", "+Inf"),))] == 6
    assert got[(f"{latency}_count", ())] == 6
    assert got[(f"{latency}_sum", ())] == pytest.approx(123.0414)


def test_negative_latency_counts_as_zero_and_nan_is_dropped(
    worker_metrics: WorkerMetrics, server: MetricsServer
) -> None:
    worker_metrics.observe_batch(
        consumed=3, topic_counts=[3], end_to_end_latency_seconds=[-0.5, float("nan"), 0.002])
    got = scrape(server)
    latency = "fintweet_end_to_end_latency_seconds"
    assert got[(f"{latency}_count", ())] == 2
    assert got[(f"{latency}_bucket", (("le", "0.001"),))] == 1
    assert got[(f"{latency}_sum", ())] == pytest.approx(0.002)


def test_replay_accuracy_lag_model_and_dead_letters(
    worker_metrics: WorkerMetrics, server: MetricsServer
) -> None:
    worker_metrics.observe_replay(true_labels=[0, 0, 1, 19], predicted_labels=[0, 3, 1, 18])
    worker_metrics.set_consumer_lag({0: 120, 1: 7, 2: 0})
    worker_metrics.set_consumer_lag({1: 9, 3: 4})  # a rebalance took 0 and 2 away
    worker_metrics.set_model("cnn", "20250101T000000Z-aaaaaa")
    worker_metrics.set_model("ann", "20250102T000000Z-bbbbbb")
    worker_metrics.record_dead_letter("invalid_json", 3)
    worker_metrics.record_dead_letter("schema")
    got = scrape(server)

    assert got[("fintweet_replay_labelled_total", topic("Analyst Update"))] == 2
    assert got[("fintweet_replay_correct_total", topic("Analyst Update"))] == 1
    assert got[("fintweet_replay_labelled_total", topic("Fed | Central Banks"))] == 1
    assert got[("fintweet_replay_correct_total", topic("Fed | Central Banks"))] == 1
    # Counted under the TRUE label, not the predicted one.
    assert got[("fintweet_replay_labelled_total", topic("Stock Movement"))] == 1
    assert got[("fintweet_replay_correct_total", topic("Stock Movement"))] == 0
    assert got[("fintweet_replay_labelled_total", topic("Stock Commentary"))] == 0

    lag = {labels: v for (name, labels), v in got.items() if name == "fintweet_consumer_lag"}
    assert lag == {(("partition", "1"),): 9, (("partition", "3"),): 4}

    info = {labels: v for (name, labels), v in got.items() if name == "fintweet_model_info"}
    assert info == {(("name", "ann"), ("version", "20250102T000000Z-bbbbbb")): 1}

    assert got[("fintweet_dead_letters_total", (("reason", "invalid_json"),))] == 3
    assert got[("fintweet_dead_letters_total", (("reason", "schema"),))] == 1


def test_ingest_metrics_are_bound_to_their_source() -> None:
    metrics = IngestMetrics("replay")
    metrics.record_published(250)
    metrics.record_duplicates(4)
    metrics.record_error("publish_failed")
    metrics.record_error("publish_failed", 2)
    with MetricsServer(0, metrics.registry, host="127.0.0.1") as server:
        got = scrape(server)
    assert got[("fintweet_ingest_published_total", (("source", "replay"),))] == 250
    assert got[("fintweet_ingest_duplicates_total", (("source", "replay"),))] == 4
    assert got[
        ("fintweet_ingest_errors_total", (("reason", "publish_failed"), ("source", "replay")))
    ] == 3
    assert ("fintweet_ingest_published_total", (("source", "x"),)) not in got


def test_each_instance_has_its_own_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.observe_batch(consumed=5, topic_counts=[5])
    assert second.registry.get_sample_value("fintweet_messages_consumed_total") == 0
    assert first.registry.get_sample_value("fintweet_messages_consumed_total") == 5
    shared = CollectorRegistry()
    WorkerMetrics(shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(shared)
    # Worker and ingest names do not clash, so one process may serve both on one registry.
    IngestMetrics("x", shared)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (np.zeros(NUM_TOPICS + 1, dtype=np.int64), "at most 20 per-topic counts"),
        (np.array([1.5, 2.0]), "must be integers"),
        ([3, -1], "must not be negative"),
        ({"No Such Topic": 1}, "bad topic key 'No Such Topic'"),
        ({20: 1}, "bad topic key 20"),
    ],
)
def test_bad_topic_counts_name_the_input(counts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as excinfo:
        topic_count_vector(counts)  # type: ignore[arg-type]
    assert "topic_counts" in str(excinfo.value)


def test_bad_replay_and_ingest_input_is_rejected_clearly() -> None:
    metrics = WorkerMetrics()
    with pytest.raises(ValueError, match=r"true_labels: topic ids must lie in 0\.\.19"):
        metrics.observe_replay([0, 20], [0, 1])
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        metrics.observe_replay([0, 1], [0])
    with pytest.raises(ValueError, match="consumed must not be negative"):
        metrics.observe_batch(consumed=-1, topic_counts=[])
    with pytest.raises(ValueError, match="ingest source 'twitter'"):
        IngestMetrics("twitter")
    # Nothing half-applied by the rejected calls.
    assert metrics.registry.get_sample_value("fintweet_messages_consumed_total") == 0
    assert metrics.registry.get_sample_value(
        "fintweet_replay_labelled_total", {"topic": TOPIC_NAMES[0]}) == 0


def test_health_and_readiness_follow_the_callback() -> None:
    state: dict[str, object] = {"ready": False, "reason": "model not loaded"}

    def ready() -> tuple[bool, str]:
        if state.get("raise"):
            raise ConnectionError("redis://redis:6379 refused")
        return bool(state["ready"]), str(state["reason"])

    with MetricsServer(0, CollectorRegistry(), ready=ready, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        assert http_get(f"{base}/healthz") == (200, "ok\n")
        assert http_get(f"{base}/readyz") == (503, "model not loaded\n")
        state.update(ready=True, reason="model ann loaded; kafka and redis reachable")
        assert http_get(f"{base}/readyz") == (200, "model ann loaded; kafka and redis reachable\n")
        state["raise"] = True
        status, body = http_get(f"{base}/readyz")
        assert status == 503
        assert "ConnectionError: redis://redis:6379 refused" in body
        assert http_get(f"{base}/healthz")[0] == 200  # liveness does not depend on readiness
        assert http_get(f"{base}/nope")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=2)


def test_port_in_use_is_a_clear_error() -> None:
    with MetricsServer(0, CollectorRegistry(), host="127.0.0.1") as server:
        taken = server.port
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{taken}"):
            MetricsServer(taken, CollectorRegistry(), host="127.0.0.1")


def test_real_prometheus_scrapes_the_server(
    worker_metrics: WorkerMetrics, server: MetricsServer, tmp_path
) -> None:
    worker_metrics.observe_batch(
        consumed=40,
        topic_counts=np.bincount(np.arange(40) % 7, minlength=NUM_TOPICS),
        end_to_end_latency_seconds=np.full(40, 0.003),
    )
    worker_metrics.set_model("ann", "v1")
    with running_prometheus([f"127.0.0.1:{server.port}"], tmp_path) as prometheus:
        prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", 40)
        assert prometheus.scalar("up") == 1
        # A later batch shows up on a later scrape.
        worker_metrics.observe_batch(consumed=2, topic_counts={"IPO": 2})
        prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", 42)
        assert prometheus.scalar('fintweet_tweets_classified_total{topic="IPO"}') == 2
        assert prometheus.scalar("fintweet_messages_consumed_total") == 42
        assert prometheus.scalar('count(fintweet_model_info{name="ann",version="v1"})') == 1
        # Every observation sits in the (0.0025, 0.005] bucket, so the median interpolates
        # inside it, which is what the dashboard's latency panels rely on.
        median = prometheus.scalar(
            "histogram_quantile(0.5, sum by (le) (fintweet_end_to_end_latency_seconds_bucket))")
        assert median is not None and 0.0025 < median <= 0.005
