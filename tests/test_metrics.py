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

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TOPIC_NAMES
from fintweet.monitoring.ingest import IngestMetrics
from fintweet.monitoring.server import MetricsServer
from fintweet.monitoring.worker import WorkerMetrics
from tests.helpers import http_get, wait_for
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


def pair(topic: str, sentiment: str) -> tuple[tuple[str, str], ...]:
    return (("sentiment", sentiment), ("topic", topic))


def true_class(task: str, name: str) -> tuple[tuple[str, str], ...]:
    return (("task", task), ("true_class", name))


def classified_by(got: dict, label: str) -> dict[str, float]:
    """Classified counts summed over the other label."""
    sums: dict[str, float] = {}
    for (name, labels), value in got.items():
        if name == "fintweet_tweets_classified_total":
            key = dict(labels)[label]
            sums[key] = sums.get(key, 0) + value
    return sums


def test_batch_values_reach_the_metrics_endpoint(
    worker_metrics: WorkerMetrics, server: MetricsServer
) -> None:
    predicted = np.array([0, 0, 5, 19, 19, 19])
    sentiments = np.array([1, 0, 2, 0, 0, 1])
    worker_metrics.observe_batch(
        consumed=8,
        topics=predicted,
        sentiments=sentiments,
        duplicates=2,
        inference_seconds=0.004,
        redis_write_seconds=0.0007,
        end_to_end_latency_seconds=np.array([0.0004, 0.001, 0.02, 0.02, 3.0, 120.0]),
    )
    worker_metrics.observe_batch(consumed=1, topics=[5], sentiments=[2])
    got = scrape(server)

    assert got[("fintweet_messages_consumed_total", ())] == 9
    assert got[("fintweet_duplicates_total", ())] == 2
    assert got[("fintweet_tweets_classified_total", pair("Analyst Update", "Bullish"))] == 1
    assert got[("fintweet_tweets_classified_total", pair("Analyst Update", "Bearish"))] == 1
    assert got[("fintweet_tweets_classified_total", pair("Earnings", "Neutral"))] == 2
    assert got[("fintweet_tweets_classified_total", pair("Stock Movement", "Bearish"))] == 2
    assert got[("fintweet_tweets_classified_total", pair("Stock Movement", "Bullish"))] == 1
    assert classified_by(got, "topic")["Stock Movement"] == 3
    assert classified_by(got, "sentiment") == {"Bearish": 3, "Bullish": 2, "Neutral": 2}
    # Pairs never predicted are present at 0 from the start: 60 series, no more.
    assert got[("fintweet_tweets_classified_total", pair("IPO", "Neutral"))] == 0
    classified = [v for (name, _), v in got.items() if name == "fintweet_tweets_classified_total"]
    assert len(classified) == NUM_TOPICS * NUM_SENTIMENTS == 60
    assert sum(classified) == 7
    # No ``_created`` gauge beside each series: nothing reads them, and they doubled the count.
    assert not [name for name, _ in got if name.endswith("_created")]

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
        consumed=3, topics=[3, 3, 3], sentiments=[0, 1, 2],
        end_to_end_latency_seconds=[-0.5, float("nan"), 0.002])
    got = scrape(server)
    latency = "fintweet_end_to_end_latency_seconds"
    assert got[(f"{latency}_count", ())] == 2
    assert got[(f"{latency}_bucket", (("le", "0.001"),))] == 1
    assert got[(f"{latency}_sum", ())] == pytest.approx(0.002)


def test_replay_accuracy_lag_model_and_dead_letters(
    worker_metrics: WorkerMetrics, server: MetricsServer
) -> None:
    worker_metrics.observe_replay("topic", true_labels=[0, 0, 1, 19],
                                  predicted_labels=[0, 3, 1, 18])
    worker_metrics.observe_replay("sentiment", true_labels=[2, 2, 0], predicted_labels=[2, 1, 0])
    worker_metrics.set_consumer_lag({0: 120, 1: 7, 2: 0})
    worker_metrics.set_consumer_lag({1: 9, 3: 4})  # a rebalance took 0 and 2 away
    worker_metrics.set_model("cnn", "20250101T000000Z-aaaaaa")
    worker_metrics.set_model("ann", "20250102T000000Z-bbbbbb")
    worker_metrics.record_dead_letter("not_json", 3)
    worker_metrics.record_dead_letter("schema")
    got = scrape(server)

    labelled, correct = "fintweet_replay_labelled_total", "fintweet_replay_correct_total"
    assert got[(labelled, true_class("topic", "Analyst Update"))] == 2
    assert got[(correct, true_class("topic", "Analyst Update"))] == 1
    assert got[(labelled, true_class("topic", "Fed | Central Banks"))] == 1
    assert got[(correct, true_class("topic", "Fed | Central Banks"))] == 1
    # Counted under the TRUE label, not the predicted one.
    assert got[(labelled, true_class("topic", "Stock Movement"))] == 1
    assert got[(correct, true_class("topic", "Stock Movement"))] == 0
    assert got[(labelled, true_class("topic", "Stock Commentary"))] == 0
    # The sentiment task is counted apart, per true sentiment.
    assert got[(labelled, true_class("sentiment", "Neutral"))] == 2
    assert got[(correct, true_class("sentiment", "Neutral"))] == 1
    assert got[(correct, true_class("sentiment", "Bearish"))] == 1
    assert got[(labelled, true_class("sentiment", "Bullish"))] == 0
    series = [k for k in got if k[0] == labelled]
    assert len(series) == NUM_TOPICS + NUM_SENTIMENTS

    lag = {labels: v for (name, labels), v in got.items() if name == "fintweet_consumer_lag"}
    assert lag == {(("partition", "1"),): 9, (("partition", "3"),): 4}

    info = {labels: v for (name, labels), v in got.items() if name == "fintweet_model_info"}
    assert info == {(("name", "ann"), ("version", "20250102T000000Z-bbbbbb")): 1}

    assert got[("fintweet_dead_letters_total", (("reason", "not_json"),))] == 3
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


@pytest.mark.parametrize("source", ["replay", "x"])
def test_every_ingest_error_reason_a_source_counts_is_exported_at_zero_first(source: str) -> None:
    """As with dead letters: a reason's series that appears with its first error shows no
    increase over it, so the first burst of publish failures reached no panel."""
    from prometheus_client import generate_latest

    from fintweet.monitoring.ingest import ERROR_REASONS

    got = samples(generate_latest(IngestMetrics(source).registry).decode())
    exported = {dict(labels)["reason"]: value for (name, labels), value in got.items()
                if name == "fintweet_ingest_errors_total" and dict(labels)["source"] == source}
    assert exported == {reason: 0.0 for reason in ERROR_REASONS[source]}
    assert "publish" in exported


def test_each_instance_has_its_own_registry() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.observe_batch(consumed=5, topics=[5], sentiments=[1])
    assert second.registry.get_sample_value("fintweet_messages_consumed_total") == 0
    assert first.registry.get_sample_value("fintweet_messages_consumed_total") == 5
    shared = CollectorRegistry()
    WorkerMetrics(shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(shared)
    # Worker and ingest names do not clash, so one process may serve both on one registry.
    IngestMetrics("x", shared)


@pytest.mark.parametrize(
    ("topics", "sentiments", "message"),
    [
        ([20], [0], r"topics: class ids must lie in 0\.\.19"),
        ([1], [3], r"sentiments: class ids must lie in 0\.\.2"),
        ([1.5], [0], "topics: class ids must be integers"),
        ([[1]], [[0]], "topics: expected a 1-D array"),
        ([1, 2], [0], "differ in length: 2 != 1"),
    ],
)
def test_bad_batch_input_names_the_input(topics: object, sentiments: object,
                                         message: str) -> None:
    metrics = WorkerMetrics()
    with pytest.raises(ValueError, match=message):
        metrics.observe_batch(consumed=1, topics=topics, sentiments=sentiments)  # type: ignore
    assert metrics.registry.get_sample_value("fintweet_messages_consumed_total") == 0


def test_bad_replay_and_ingest_input_is_rejected_clearly() -> None:
    metrics = WorkerMetrics()
    with pytest.raises(ValueError, match=r"true_labels: class ids must lie in 0\.\.19"):
        metrics.observe_replay("topic", [0, 20], [0, 1])
    with pytest.raises(ValueError, match=r"true_labels: class ids must lie in 0\.\.2"):
        metrics.observe_replay("sentiment", [0, 3], [0, 1])
    with pytest.raises(ValueError, match="unknown task 'mood'"):
        metrics.observe_replay("mood", [0], [0])
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        metrics.observe_replay("topic", [0, 1], [0])
    with pytest.raises(ValueError, match="consumed must not be negative"):
        metrics.observe_batch(consumed=-1, topics=[], sentiments=[])
    with pytest.raises(ValueError, match="ingest source 'twitter'"):
        IngestMetrics("twitter")
    # Nothing half-applied by the rejected calls.
    assert metrics.registry.get_sample_value("fintweet_messages_consumed_total") == 0
    assert metrics.registry.get_sample_value(
        "fintweet_replay_labelled_total", {"task": "topic", "true_class": TOPIC_NAMES[0]}) == 0


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


def test_port_in_use_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming the port and the setting, from the class and through the CLI."""
    from fintweet.cli.main import main
    from fintweet.core.errors import UserError

    with MetricsServer(0, CollectorRegistry(), host="127.0.0.1") as server:
        taken = server.port
        with pytest.raises(UserError, match=rf"cannot listen on 127\.0\.0\.1:{taken}"):
            MetricsServer(taken, CollectorRegistry(), host="127.0.0.1")
        data = tmp_path / "one.csv"
        data.write_text("text,label\nOil jumps,6\n")
        assert main(["ingest", "replay", str(data), "--metrics-port", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FINTWEET_METRICS_PORT" in err


def test_real_prometheus_scrapes_the_server(
    worker_metrics: WorkerMetrics, server: MetricsServer, tmp_path
) -> None:
    worker_metrics.observe_batch(
        consumed=40,
        topics=np.arange(40) % 7,
        sentiments=np.arange(40) % 3,
        end_to_end_latency_seconds=np.full(40, 0.003),
    )
    worker_metrics.set_model("ann", "v1")
    with running_prometheus([f"127.0.0.1:{server.port}"], tmp_path) as prometheus:
        prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", 40)
        assert prometheus.scalar("up") == 1
        # A later batch shows up on a later scrape.
        worker_metrics.observe_batch(consumed=2, topics=[11, 11], sentiments=[0, 1])
        prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", 42)
        assert prometheus.scalar('sum(fintweet_tweets_classified_total{topic="IPO"})') == 2
        assert prometheus.scalar(
            'fintweet_tweets_classified_total{topic="IPO",sentiment="Bearish"}') == 1
        assert prometheus.scalar("fintweet_messages_consumed_total") == 42
        assert prometheus.scalar('count(fintweet_model_info{name="ann",version="v1"})') == 1
        # Every observation sits in the (0.0025, 0.005] bucket, so the median interpolates
        # inside it, which is what the dashboard's latency panels rely on.
        median = prometheus.scalar(
            "histogram_quantile(0.5, sum by (le) (fintweet_end_to_end_latency_seconds_bucket))")
        assert median is not None and 0.0025 < median <= 0.005


def test_top_tickers_are_read_from_redis_at_scrape_time(stack, redis_client) -> None:
    from fintweet.core.store import ResultStore, StoredResult

    store = ResultStore.from_url(stack.redis_url)
    store.write_batch([
        StoredResult("a", b"{}", "Earnings", "Bullish", ("TSLA", "AAPL")),
        StoredResult("b", b"{}", "Markets", "Bearish", ("TSLA",)),
        StoredResult("c", b"{}", "Markets", "Bearish", ("SPY",)),
    ], model="m@1")
    metrics = WorkerMetrics()
    metrics.watch_tickers(store.top_tickers, n=2)
    with MetricsServer(0, metrics.registry, host="127.0.0.1") as server:
        got = scrape(server)
        tickers = {labels: v for (name, labels), v in got.items()
                   if name == "fintweet_top_ticker_tweets"}
        # The top 2 by count (TSLA 2, then AAPL: ties in name order), 3 sentiments each.
        assert len(tickers) == 6
        assert tickers[(("sentiment", "Bullish"), ("ticker", "TSLA"))] == 1
        assert tickers[(("sentiment", "Bearish"), ("ticker", "TSLA"))] == 1
        assert tickers[(("sentiment", "Bullish"), ("ticker", "AAPL"))] == 1
        assert not [labels for labels in tickers if ("ticker", "SPY") in labels]
        store.write_batch([StoredResult("d", b"{}", "Markets", "Neutral", ("TSLA",))], model="m")
        assert scrape(server)[("fintweet_top_ticker_tweets",
                               (("sentiment", "Neutral"), ("ticker", "TSLA")))] == 1
        # Redis away: the scrape still answers, without ticker samples.
        stack.stop_redis()
        try:
            got = scrape(server)
        finally:
            stack.start_redis()
        assert not [k for k in got if k[0] == "fintweet_top_ticker_tweets"]
        assert ("fintweet_messages_consumed_total", ()) in got


def test_a_redis_that_never_answers_does_not_hold_the_scrape(worker_metrics) -> None:
    """A Redis that accepts and never answers (a partition, a frozen host) costs the scrape
    half a second, not the client's 10 s timeout, which is also Prometheus' scrape timeout and
    would drop every worker metric; later scrapes do not stack up reads behind the hung one."""
    import contextlib
    import socket
    import threading
    import time

    from fintweet.core.store import CLIENT_TIMEOUTS, ResultStore

    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as silent:

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    accepted.append(silent.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        store = ResultStore.from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                                     **CLIENT_TIMEOUTS)
        worker_metrics.watch_tickers(store.top_tickers)
        worker_metrics.observe_batch(consumed=3, topics=[1, 2, 3], sentiments=[0, 1, 2])
        with MetricsServer(0, worker_metrics.registry, host="127.0.0.1") as server:
            for _ in range(3):
                started = time.monotonic()
                got = scrape(server)
                assert time.monotonic() - started < 5.0  # not the 10 s socket timeout
                assert got[("fintweet_messages_consumed_total", ())] == 3
                assert not [k for k in got if k[0] == "fintweet_top_ticker_tweets"]
        assert len(accepted) == 1  # one read left hanging, not one per scrape
    for connection in accepted:
        connection.close()


def test_a_slow_redis_s_tickers_are_exported_a_scrape_late(worker_metrics) -> None:
    """A Redis answering in a second (slower than a scrape waits, faster than it hangs): the
    read a scrape stopped waiting for is exported by the next one, rather than thrown away
    there for a new read that also finishes too late, scrape after scrape."""
    import threading
    import time

    calls: list[float] = []

    def slow_top(n: int) -> list[dict]:
        calls.append(time.monotonic())
        time.sleep(1.0)
        return [{"ticker": "SLOW", "count": 2, "sentiments": {"Bullish": 2}}]

    def reading() -> bool:  # the read's thread ends once its answer is kept
        return any(t.name == "fintweet-top-tickers" for t in threading.enumerate())

    worker_metrics.watch_tickers(slow_top)
    with MetricsServer(0, worker_metrics.registry, host="127.0.0.1") as server:
        first = scrape(server)
        assert not [k for k in first if k[0] == "fintweet_top_ticker_tweets"]
        wait_for(lambda: not reading(), 5, "the slow read to end")
        second = scrape(server)
        assert second[("fintweet_top_ticker_tweets", (("sentiment", "Bullish"),
                                                       ("ticker", "SLOW")))] == 2
        # the next read started for the next scrape
        wait_for(lambda: len(calls) == 2, 5, "a second read")


def test_every_dead_letter_reason_is_exported_at_zero_before_the_first_letter(
        worker_metrics: WorkerMetrics) -> None:
    """A reason's series appeared with its first burst, and increase() over a series that starts
    at the burst reads 0: 400 dead letters showed as none on the panel and to the alert."""
    from prometheus_client import generate_latest

    from fintweet.core.schema import DeadLetterReason

    got = samples(generate_latest(worker_metrics.registry).decode())
    exported = {dict(labels)["reason"]: value for (name, labels), value in got.items()
                if name == "fintweet_dead_letters_total"}
    assert exported == {reason.value: 0.0 for reason in DeadLetterReason}
