"""Prometheus metrics for the worker and the ingest services, and the small HTTP server that
exposes them next to the health endpoints.

Each app owns one metrics object holding its metrics on a :class:`CollectorRegistry` it is given
(a fresh one by default) — no module-level globals — so tests can build as many as they like and a
process can serve exactly what it registered.

The worker reports once per batch: callers hand over the predicted topic and sentiment ids of the
newly classified tweets and arrays of per-tweet latencies, and the counting and bucketing happen in
numpy, so the metrics cost nothing per tweet in Python. Names follow Prometheus conventions (base
units, ``_total`` counters, ``_seconds`` durations); ``deploy/alerts.yml`` and the Grafana
dashboard use exactly these names and ``tests/test_deploy.py`` checks they exist.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fintweet.core.labels import (
    NUM_SENTIMENTS,
    NUM_TOPICS,
    SENTIMENT_NAMES,
    TASKS,
    TOPIC_NAMES,
    class_names,
    num_classes,
)

log = logging.getLogger(__name__)

INGEST_SOURCES = ("x", "replay")

# Powers of two: the worker's batch size is a power-of-two cap and partial batches matter.
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(13))  # 1 .. 4096
# 1 ms .. 60 s: an idle pipeline answers in milliseconds, a lagging one in tens of seconds.
END_TO_END_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# One batch through the model: ~0.1 ms (tiny batch, linear model) .. seconds (CNN on CPU, 4096).
INFERENCE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
# One pipelined Redis round trip per batch.
REDIS_WRITE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)

ReadyCheck: TypeAlias = Callable[[], tuple[bool, str]]


def _class_ids(values: Sequence[int] | np.ndarray, n_classes: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of class ids, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: class ids must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_classes:
        raise ValueError(f"{what}: class ids must lie in 0..{n_classes - 1}")
    return array.astype(np.int64, copy=False)


def _check_count(value: int, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return int(value)


class BatchHistogram(Collector):
    """A histogram that takes a whole array of observations at once.

    prometheus_client's ``Histogram.observe`` takes one value under a lock; the worker has one
    latency per tweet, thousands per second, so this one bins an array with ``np.searchsorted``
    and adds the bucket counts in one step. Exposition is the standard ``_bucket``/``_sum``/
    ``_count`` family, indistinguishable from a client-library histogram to Prometheus.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        upper = sorted(float(b) for b in buckets if not math.isinf(b))
        if not upper or len(set(upper)) != len(upper):
            raise ValueError(f"{name}: buckets must be distinct finite bounds, got {buckets!r}")
        self.name = name
        self.documentation = documentation
        self._upper = np.asarray(upper, dtype=np.float64)
        self._counts = np.zeros(len(upper) + 1, dtype=np.int64)  # last slot: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """NaNs are dropped (no timestamp to measure from); everything else counts."""
        array = np.asarray(values, dtype=np.float64).ravel()
        array = array[~np.isnan(array)]
        if array.size == 0:
            return
        # side="left": a value equal to a bound belongs to that bucket, as Prometheus' `le` says.
        slots = np.searchsorted(self._upper, array, side="left")
        added = np.bincount(slots, minlength=self._counts.shape[0])
        total = float(array.sum())
        with self._lock:
            self._counts += added
            self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many([value])

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [
            (floatToGoString(bound), count)
            for bound, count in zip(self._upper.tolist(), cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", cumulative[-1]))
        return [HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=total)]


class WorkerMetrics:
    """What the worker exports. Call :meth:`observe_batch` once per batch, the rest on change."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_consumed = Counter(
            "fintweet_messages_consumed", "Kafka messages read from the tweets topic.", registry=r)
        self.tweets_classified = Counter(
            "fintweet_tweets_classified",
            "Tweets classified and written, by predicted topic and predicted sentiment.",
            ["topic", "sentiment"], registry=r)
        self.duplicates = Counter(
            "fintweet_duplicates",
            "Tweets already seen (same id), not classified or counted again.", registry=r)
        self.dead_letters = Counter(
            "fintweet_dead_letters", "Messages sent to the dead-letter topic, by reason.",
            ["reason"], registry=r)
        self.batch_size = Histogram(
            "fintweet_batch_size", "Tweets given to the model per batch.",
            buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.inference_seconds = Histogram(
            "fintweet_inference_seconds", "Model time per batch (vectorizing included).",
            buckets=INFERENCE_BUCKETS, registry=r)
        self.redis_write_seconds = Histogram(
            "fintweet_redis_write_seconds", "Redis write time per batch (one pipeline).",
            buckets=REDIS_WRITE_BUCKETS, registry=r)
        self.end_to_end_latency_seconds = BatchHistogram(
            "fintweet_end_to_end_latency_seconds",
            "Per tweet, from ingested_at (set by the ingest) to the Redis write.",
            END_TO_END_LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "fintweet_consumer_lag",
            "Messages behind the partition's end offset, for partitions this worker owns.",
            ["partition"], registry=r)
        self.model_info = Gauge(
            "fintweet_model_info", "1 for the model this worker serves.",
            ["name", "version"], registry=r)
        self.replay_labelled = Counter(
            "fintweet_replay_labelled",
            "Classified replay tweets that carry a true label, by task and TRUE class.",
            ["task", "true_class"], registry=r)
        self.replay_correct = Counter(
            "fintweet_replay_correct",
            "Replay tweets whose prediction equals the true label, by task and TRUE class.",
            ["task", "true_class"], registry=r)
        # Every series exists from the start at 0, so rate() and the per-class panels see a
        # class's first tweet as an increase rather than as a new series. 20 x 3 = 60 series.
        self._classified_children = [
            [self.tweets_classified.labels(topic, sentiment) for sentiment in SENTIMENT_NAMES]
            for topic in TOPIC_NAMES
        ]
        self._labelled_children = {
            task: [self.replay_labelled.labels(task, name) for name in class_names(task)]
            for task in TASKS}
        self._correct_children = {
            task: [self.replay_correct.labels(task, name) for name in class_names(task)]
            for task in TASKS}
        self._lag_partitions: set[str] = set()
        self._lag_lock = threading.Lock()
        self._top_tickers = _TopTickers()
        r.register(self._top_tickers)

    def observe_batch(
        self,
        *,
        consumed: int,
        topics: Sequence[int] | np.ndarray,
        sentiments: Sequence[int] | np.ndarray,
        duplicates: int = 0,
        batch_size: int | None = None,
        inference_seconds: float | None = None,
        redis_write_seconds: float | None = None,
        end_to_end_latency_seconds: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """One call per batch.

        ``consumed``: Kafka messages read (valid or not). ``topics`` and ``sentiments``: the
        predicted topic and sentiment id of each NEWLY classified tweet (what Redis counted), in
        the same order; they are counted per (topic, sentiment) pair with one ``bincount``.
        ``batch_size``: tweets handed to the model, default the number classified; a batch with
        nothing to classify observes no batch size and no inference time. Latencies are per
        tweet, in seconds; negative ones (clocks of different hosts) count as 0.
        """
        topic_ids = _class_ids(topics, NUM_TOPICS, "topics")
        sentiment_ids = _class_ids(sentiments, NUM_SENTIMENTS, "sentiments")
        if topic_ids.shape != sentiment_ids.shape:
            raise ValueError(f"topics and sentiments differ in length: "
                             f"{topic_ids.shape[0]} != {sentiment_ids.shape[0]}")
        self.messages_consumed.inc(_check_count(consumed, "consumed"))
        if duplicates:
            self.duplicates.inc(_check_count(duplicates, "duplicates"))
        pairs = np.bincount(topic_ids * NUM_SENTIMENTS + sentiment_ids,
                            minlength=NUM_TOPICS * NUM_SENTIMENTS)
        for index in np.flatnonzero(pairs).tolist():
            topic, sentiment = divmod(index, NUM_SENTIMENTS)
            self._classified_children[topic][sentiment].inc(int(pairs[index]))
        size = len(topic_ids) if batch_size is None else _check_count(batch_size, "batch_size")
        if size > 0:
            self.batch_size.observe(size)
            if inference_seconds is not None:
                self.inference_seconds.observe(inference_seconds)
        if redis_write_seconds is not None:
            self.redis_write_seconds.observe(redis_write_seconds)
        if end_to_end_latency_seconds is not None:
            latencies = np.asarray(end_to_end_latency_seconds, dtype=np.float64)
            self.end_to_end_latency_seconds.observe_many(np.maximum(latencies, 0.0))

    def observe_replay(
        self,
        task: str,
        true_labels: Sequence[int] | np.ndarray,
        predicted_labels: Sequence[int] | np.ndarray,
    ) -> None:
        """Replayed tweets carry their true label for one task (topic or sentiment); counting
        labelled and correct per TRUE class gives live accuracy (correct / labelled) per task,
        overall and per class, in PromQL."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        n = num_classes(task)
        truth = _class_ids(true_labels, n, "true_labels")
        predicted = _class_ids(predicted_labels, n, "predicted_labels")
        if truth.shape != predicted.shape:
            raise ValueError(
                f"true_labels and predicted_labels differ in length: "
                f"{truth.shape[0]} != {predicted.shape[0]}")
        labelled = np.bincount(truth, minlength=n)
        correct = np.bincount(truth[truth == predicted], minlength=n)
        for index in np.flatnonzero(labelled).tolist():
            self._labelled_children[task][index].inc(int(labelled[index]))
            if correct[index]:
                self._correct_children[task][index].inc(int(correct[index]))

    def watch_tickers(self, top: Callable[[int], list[dict[str, Any]]], n: int = 10) -> None:
        """Export the ``n`` most named tickers and their sentiment mix, read from Redis at scrape
        time through ``top`` (``ResultStore.top_tickers``). Tickers are unbounded, so they are
        never a label of a per-batch counter; this gauge holds at most ``n`` x 3 series, the
        same figures on every worker (take ``max``, not ``sum``, across workers)."""
        self._top_tickers.watch(top, n)

    def record_dead_letter(self, reason: str, count: int = 1) -> None:
        if not reason:
            raise ValueError("dead-letter reason must not be empty")
        self.dead_letters.labels(reason).inc(_check_count(count, "count"))

    def set_consumer_lag(self, lag_by_partition: Mapping[int, int]) -> None:
        """Replace the whole lag picture: partitions not in the mapping (revoked in a rebalance)
        are removed, so a worker never reports a stale lag for a partition another one owns."""
        current = {str(partition): int(lag) for partition, lag in lag_by_partition.items()}
        with self._lag_lock:
            for gone in self._lag_partitions - current.keys():
                self.consumer_lag.remove(gone)
            for partition, lag in current.items():
                self.consumer_lag.labels(partition).set(max(lag, 0))
            self._lag_partitions = set(current)

    def set_model(self, name: str, version: str) -> None:
        """Exactly one ``fintweet_model_info`` series: the model now serving."""
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)


class _TopTickers(Collector):
    """``fintweet_top_ticker_tweets{ticker, sentiment}``: all-time tweets naming each of the top
    tickers, by predicted sentiment. A failed read (Redis down) exports no samples rather than
    failing the whole scrape; until :meth:`watch` gives it a source it exports none."""

    NAME = "fintweet_top_ticker_tweets"
    HELP = "Tweets naming each of the most named tickers (all time, from Redis), by sentiment."

    def __init__(self) -> None:
        self._top: Callable[[int], list[dict[str, Any]]] | None = None
        self._n = 0

    def watch(self, top: Callable[[int], list[dict[str, Any]]], n: int) -> None:
        self._top, self._n = top, n

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["ticker", "sentiment"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["ticker", "sentiment"])
        try:
            tickers = self._top(self._n) if self._top is not None else []
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.debug("top tickers not exported: %s", exc)
            tickers = []
        for entry in tickers:
            for sentiment, count in entry["sentiments"].items():
                family.add_metric([entry["ticker"], sentiment], count)
        return [family]


class IngestMetrics:
    """What an ingest process exports; one process reads one source, bound here."""

    def __init__(self, source: str, registry: CollectorRegistry | None = None) -> None:
        if source not in INGEST_SOURCES:
            raise ValueError(f"ingest source {source!r} is not one of {INGEST_SOURCES}")
        self.source = source
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "fintweet_ingest_published", "Tweets published to Kafka.", ["source"], registry=r)
        self.errors = Counter(
            "fintweet_ingest_errors",
            "Ingest failures (bad payloads, API errors, publish errors), by reason.",
            ["source", "reason"], registry=r)
        self.duplicates = Counter(
            "fintweet_ingest_duplicates",
            "Tweets the ingest had already published (reconnects, overlapping polls), skipped.",
            ["source"], registry=r)
        self._published = self.published.labels(source)
        self._duplicates = self.duplicates.labels(source)

    def record_published(self, count: int = 1) -> None:
        self._published.inc(_check_count(count, "count"))

    def record_error(self, reason: str, count: int = 1) -> None:
        if not reason:
            raise ValueError("ingest error reason must not be empty")
        self.errors.labels(self.source, reason).inc(_check_count(count, "count"))

    def record_duplicates(self, count: int = 1) -> None:
        self._duplicates.inc(_check_count(count, "count"))


def always_ready() -> tuple[bool, str]:
    return True, "ready"


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from a daemon thread.

    ``/healthz`` answers 200 as long as the process runs (liveness: restart me if this fails);
    ``/readyz`` asks ``ready()`` each time and answers 503 with its reason when not ready
    (readiness: model loaded, broker and Redis reachable). A ``ready()`` that raises counts as not
    ready, with the exception as the reason. Port 0 picks a free port; see :attr:`port`.
    """

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyCheck | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.registry = registry
        self.ready = ready or always_ready
        handler = _handler_for(self)
        try:
            self._server = _QuietHTTPServer((host, port), handler)
        except OSError as exc:
            raise OSError(f"metrics server cannot listen on {host}:{port}: {exc}") from exc
        self._server.daemon_threads = True
        # A short poll interval only so that stop() returns quickly; an idle select costs nothing.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"metrics-server-{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def readiness(self) -> tuple[bool, str]:
        try:
            ok, reason = self.ready()
        except Exception as exc:
            return False, f"readiness check failed: {type(exc).__name__}: {exc}"
        return bool(ok), str(reason)


class _QuietHTTPServer(ThreadingHTTPServer):
    """A client that hangs up before the answer (a probe that timed out) is its business, not an
    error worth a traceback on the worker's stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset, ...
            return
        super().handle_error(request, client_address)


def _handler_for(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n")
            elif path == "/readyz":
                ok, reason = server.readiness()
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, f"{reason}\n".encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found; try /metrics, /healthz, /readyz\n")

        def _send(
            self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics server: " + format, *args)

    return MetricsHandler


def metric_sample_names(registry: CollectorRegistry) -> Iterator[str]:
    """Every series name Prometheus will store for this registry (``_total``, ``_bucket``…),
    derived from what is registered, so dashboards and alerts can be checked against it."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            yield family.name + suffix
