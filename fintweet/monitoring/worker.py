"""What the worker exports: per-batch counts and latencies, lag, assignment, the serving model,
live accuracy, dead letters, top tickers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fintweet.core.labels import (
    NUM_SENTIMENTS,
    NUM_TOPICS,
    SENTIMENT_NAMES,
    TASKS,
    TOPIC_NAMES,
    class_names,
    num_classes,
)
from fintweet.core.schema import DeadLetterReason
from fintweet.monitoring.histogram import BatchHistogram, check_count, class_ids

log = logging.getLogger(__name__)


# Powers of two: the worker's batch size is a power-of-two cap and partial batches matter.
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(13))  # 1 .. 4096
# 1 ms .. 1 h: an idle pipeline answers in milliseconds, a lagging one in minutes, and one
# catching up after an outage in tens of minutes (its p95 read exactly the top bucket, 300 s).
END_TO_END_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
)
# One batch through the model: ~0.1 ms (tiny batch, linear model) .. the 15 s a batch may take
# (a quarter of max.poll.interval.ms: a transformer on CPU gets there), and 60 s past it.
INFERENCE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 15.0, 30.0, 60.0,
)
# One pipelined Redis round trip per batch, and the retries through an outage the write waits
# out (a 400 s one sat in +Inf, past a 1 s top bucket, and p99 read 3 ms).
REDIS_WRITE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
# How long a scrape waits for the top tickers from Redis before it goes on without them: a
# healthy Redis answers in milliseconds, and the rest of the scrape must stay far inside
# Prometheus' 10 s scrape timeout whatever Redis does.
TOP_TICKERS_WAIT_S = 0.5


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
            "Tweets already seen (same id): classified again with their batch, but neither "
            "stored nor counted again.", registry=r)
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
            "fintweet_redis_write_seconds",
            "Time per batch to make it durable: every sink's write and flush (the Redis "
            "script, dead letters to Kafka), retries through an outage included.",
            buckets=REDIS_WRITE_BUCKETS, registry=r)
        self.end_to_end_latency_seconds = BatchHistogram(
            "fintweet_end_to_end_latency_seconds",
            "Per tweet, from ingested_at (set by the ingest) to the Redis write.",
            END_TO_END_LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "fintweet_consumer_lag",
            "Messages behind the partition's end offset, for partitions this worker owns.",
            ["partition"], registry=r)
        # Group membership: a stuck group shows as zero partitions for a growing number of
        # seconds (the alert is on the seconds).
        self.assigned_partitions = Gauge(
            "fintweet_worker_assigned_partitions", "Partitions this worker holds now.",
            registry=r)
        self.unassigned_seconds = Gauge(
            "fintweet_worker_unassigned_seconds",
            "Seconds since this worker last held a partition (0 while it holds any).",
            registry=r)
        # A hung broker: the consumer keeps its partitions and polls come back empty, but its
        # heartbeats stop (the alert is on these seconds).
        self.heartbeat_age_seconds = Gauge(
            "fintweet_worker_heartbeat_age_seconds",
            "Seconds since this worker last sent the group coordinator a heartbeat, while a "
            "stable member of its group (0 otherwise); past the session timeout the broker is "
            "hung or out of reach.", registry=r)
        # An outage of what a batch is written to: the write retries, the worker waits on it and
        # consumes nothing, yet answers scrapes, holds its partitions and sends heartbeats.
        self.write_in_flight_seconds = Gauge(
            "fintweet_worker_write_in_flight_seconds",
            "Seconds the batch being written (Redis, dead-letter topic) has taken so far, retries "
            "through an outage included; 0 when no write is under way.", registry=r)
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
        # The same for every reason: a first burst of dead letters made its series, and
        # increase() over a series that starts at the burst reads 0, so neither the panel nor
        # the dead-letter alert saw it (400 letters read as none).
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
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
        topic_ids = class_ids(topics, NUM_TOPICS, "topics")
        sentiment_ids = class_ids(sentiments, NUM_SENTIMENTS, "sentiments")
        if topic_ids.shape != sentiment_ids.shape:
            raise ValueError(f"topics and sentiments differ in length: "
                             f"{topic_ids.shape[0]} != {sentiment_ids.shape[0]}")
        self.messages_consumed.inc(check_count(consumed, "consumed"))
        if duplicates:
            self.duplicates.inc(check_count(duplicates, "duplicates"))
        pairs = np.bincount(topic_ids * NUM_SENTIMENTS + sentiment_ids,
                            minlength=NUM_TOPICS * NUM_SENTIMENTS)
        for index in np.flatnonzero(pairs).tolist():
            topic, sentiment = divmod(index, NUM_SENTIMENTS)
            self._classified_children[topic][sentiment].inc(int(pairs[index]))
        size = len(topic_ids) if batch_size is None else check_count(batch_size, "batch_size")
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
        truth = class_ids(true_labels, n, "true_labels")
        predicted = class_ids(predicted_labels, n, "predicted_labels")
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

    def watch_writes(self, in_flight_s: Callable[[], float]) -> None:
        """Read at every scrape, so the seconds are current, not a batch late."""
        self.write_in_flight_seconds.set_function(in_flight_s)

    def watch_tickers(self, top: Callable[[int], list[dict[str, Any]]], n: int = 10) -> None:
        """Export the ``n`` most named tickers and their sentiment mix, read from Redis at scrape
        time through ``top`` (``ResultStore.top_tickers``). Tickers are unbounded, so they are
        never a label of a per-batch counter; this gauge holds at most ``n`` x 3 series, the
        same figures on every worker (take ``max``, not ``sum``, across workers)."""
        self._top_tickers.watch(top, n)

    def record_dead_letter(self, reason: str, count: int = 1) -> None:
        if not reason:
            raise ValueError("dead-letter reason must not be empty")
        self.dead_letters.labels(reason).inc(check_count(count, "count"))

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
    failing the whole scrape; until :meth:`watch` gives it a source it exports none.

    The read runs in a thread of its own and the scrape waits for it at most
    ``TOP_TICKERS_WAIT_S``: the store's client waits 10 s for a Redis that accepts and never
    answers (``CLIENT_TIMEOUTS``), Prometheus gives a scrape 10 s (deploy/prometheus.yml), and a
    scrape held that long would drop every worker metric, not just these. A read still pending
    from an earlier scrape is waited on again rather than joined by a second one, so a hung Redis
    holds at most one thread here."""

    NAME = "fintweet_top_ticker_tweets"
    HELP = "Tweets naming each of the most named tickers (all time, from Redis), by sentiment."

    def __init__(self, wait_s: float = TOP_TICKERS_WAIT_S) -> None:
        self._top: Callable[[int], list[dict[str, Any]]] | None = None
        self._n = 0
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._pending: _TickerRead | None = None

    def watch(self, top: Callable[[int], list[dict[str, Any]]], n: int) -> None:
        self._top, self._n = top, n

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["ticker", "sentiment"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["ticker", "sentiment"])
        for entry in self._read():
            for sentiment, count in entry["sentiments"].items():
                family.add_metric([entry["ticker"], sentiment], count)
        return [family]

    def _read(self) -> list[dict[str, Any]]:
        top, n = self._top, self._n
        if top is None:
            return []
        with self._lock:
            read = self._pending
            if read is not None and read.done.is_set() and not read.taken:
                # Finished after its own scrape stopped waiting (a slow Redis, not a hung
                # one): exported now, a scrape late, and the next read starts for the next
                # scrape; otherwise a Redis answering in 0.5-10 s would never be exported.
                read.taken = True
                self._pending = _TickerRead(top, n)
                return self._result(read)
            if read is None or read.taken:
                read = self._pending = _TickerRead(top, n)
        if not read.done.wait(self._wait_s):
            log.debug("top tickers not exported: Redis did not answer within %.1fs",
                      self._wait_s)
            return []
        read.taken = True
        return self._result(read)

    @staticmethod
    def _result(read: _TickerRead) -> list[dict[str, Any]]:
        if read.error is not None:  # a scrape must not fail because Redis is away
            log.debug("top tickers not exported: %s", read.error)
            return []
        return read.tickers


class _TickerRead:
    """One call of the tickers source in a daemon thread (a hung read never holds the process's
    exit): ``done`` is set once it has returned or raised."""

    def __init__(self, top: Callable[[int], list[dict[str, Any]]], n: int) -> None:
        self.tickers: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.done = threading.Event()
        self.taken = False  # handed to a scrape
        threading.Thread(target=self._run, args=(top, n), name="fintweet-top-tickers",
                         daemon=True).start()

    def _run(self, top: Callable[[int], list[dict[str, Any]]], n: int) -> None:
        try:
            self.tickers = top(n)
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()
