"""The worker: a Kafka consumer-group member that classifies tweets in batches into Redis.

One batch, in order: poll → decode (bad records become dead letters) → one ``predict_proba`` →
dead letters sent to the DLQ topic → one Redis round trip (results, counts, dead-letter marks) →
DLQ flushed → offsets committed. Offsets move only after Redis and the DLQ acknowledged, so a crash
at any point replays the batch, and the store's "count only ids not seen before" makes the replay
harmless: at-least-once delivery, exactly-once counting.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from fintweet.core.backoff import Backoff
from fintweet.core.config import Settings
from fintweet.core.kafka_errors import connect
from fintweet.core.store import DeadLetterMark, ResultStore, WriteOutcome
from fintweet.worker.classify import Classified, Classifier, classify
from fintweet.worker.decode import decode_records

if TYPE_CHECKING:
    from fintweet.metrics import WorkerMetrics

log = logging.getLogger(__name__)

# Production defaults; tests and the demo pass faster group settings (see fintweet.stack).
DEFAULT_CONSUMER_OPTIONS: dict[str, Any] = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
    "max_poll_interval_ms": 60_000,
    # The broker holds an empty fetch this long before answering; at kafka-python's default of
    # 500 ms a quiet stream's tweets wait ~250 ms on average before the worker even sees them.
    "fetch_max_wait_ms": 20,
}


@dataclass
class WorkerStats:
    """What one worker did in its lifetime; the demo and the benchmark read it."""

    consumed: int = 0
    classified: int = 0  # newly counted in Redis
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    first_record: float | None = None
    last_record: float | None = None

    def rate(self) -> float:
        """Tweets per second from the first record to the last write (excludes group join)."""
        if self.first_record is None or self.last_record is None:
            return 0.0
        span = self.last_record - self.first_record
        return self.consumed / span if span > 0 else float("inf")


def broker_accepts(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Worker:
    def __init__(
        self,
        settings: Settings,
        model: Classifier,
        *,
        consumer_options: dict[str, Any] | None = None,
        metrics: WorkerMetrics | None = None,
        until_idle: float | None = None,
        record_latencies: bool = False,
        on_batch: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.until_idle = until_idle
        self.on_batch = on_batch
        self.stats = WorkerStats()
        # seconds from ingested_at to the Redis write, per tweet (the benchmark asks for these)
        self.latencies: list[np.ndarray] | None = [] if record_latencies else None
        self.stopping = threading.Event()
        options = {**DEFAULT_CONSUMER_OPTIONS, **(consumer_options or {})}
        self.consumer = connect("worker", settings.kafka_bootstrap, lambda: KafkaConsumer(
            settings.topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id=f"fintweet-worker-{model.name}",
            **options,
        ))
        self.dlq = connect("worker", settings.kafka_bootstrap, lambda: KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, retries=10
        ))
        self.store = ResultStore.from_settings(
            settings,
            socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
        )
        if metrics is not None:
            metrics.set_model(model.name, model.version)
            metrics.watch_tickers(self.store.top_tickers)
        # The model's vocabularies and caches are millions of long-lived objects; a full
        # collection walking them stalls a batch for 100+ ms. Freezing moves everything alive
        # now out of the collector's sight (Python >= 3.7), which keeps p99 latency down.
        gc.freeze()

    # -- lifecycle -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the batch in hand, commit, and leave the group."""

        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: finishing the current batch, then leaving the group", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def ready(self) -> tuple[bool, str]:
        """For /readyz: model loaded (it is, or the worker would not exist), Redis answers PING,
        and a bootstrap broker accepts connections. kafka-python keeps no public "connected"
        state worth trusting (its bootstrap socket is closed once metadata arrives)."""
        if not self.store.ping():
            return False, "redis unreachable"
        if not any(broker_accepts(address) for address in
                   self.settings.kafka_bootstrap.split(",")):
            return False, f"kafka unreachable at {self.settings.kafka_bootstrap}"
        return True, f"ok: model {self.model.name}@{self.model.version}"

    def run(self) -> WorkerStats:
        log.info("worker consuming %s as group %s with model %s@%s", self.settings.topic,
                 self.settings.group, self.model.name, self.model.version)
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                records = self._poll_batch()
                if records:
                    self._process(records)
                    last_activity = time.monotonic()
                elif self.until_idle is not None and (
                    time.monotonic() - last_activity >= self.until_idle
                ):
                    log.info("no messages for %.1fs: stopping", self.until_idle)
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        try:
            self.dlq.flush(timeout=10)
            self.dlq.close(timeout=10)
        except KafkaError as exc:
            log.warning("closing the DLQ producer: %s", exc)
        self.consumer.close(autocommit=False)  # leaves the group, so partitions move at once

    # -- one batch -------------------------------------------------------------------------------

    def _poll_batch(self) -> list[Any]:
        """Up to ``batch_size`` records, waiting at most ``max_wait_ms`` after the first arrives:
        big batches under load, low latency when the stream is slow."""
        size = self.settings.batch_size
        wait = self.settings.max_wait_ms / 1000
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < size and not self.stopping.is_set():
            timeout = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                polled = self.consumer.poll(
                    timeout_ms=int(timeout * 1000), max_records=size - len(records)
                )
            except KafkaError as exc:
                log.warning("poll failed (%s); retrying", exc)
                time.sleep(0.5)
                continue
            for batch in polled.values():
                records.extend(batch)
            if not records:
                return records  # nothing yet: let run() check idleness and stop requests
            if deadline is None:
                deadline = time.monotonic() + wait
            if time.monotonic() >= deadline:
                break
        return records

    def _process(self, records: list[Any]) -> None:
        now = time.monotonic()
        if self.stats.first_record is None:
            self.stats.first_record = now
        decoded, rejected = decode_records(records)
        started = time.perf_counter()
        classified = classify(self.model, decoded) if decoded else None
        inference_s = time.perf_counter() - started
        for bad in rejected:
            log.warning("dead letter %s: %s (%s)", bad.uid, bad.letter.reason, bad.letter.error)
            self.dlq.send(
                self.settings.dlq_topic,
                key=bad.record.key,
                value=bad.letter.model_dump_json().encode(),
            )
        marks = [DeadLetterMark(bad.uid, bad.letter.reason) for bad in rejected]
        started = time.perf_counter()
        outcome = self._write_with_retry(classified, marks)
        redis_s = time.perf_counter() - started
        if outcome is None:
            return  # stopping during an outage: nothing committed, the batch will be redelivered
        self._flush_dlq_with_retry()
        self._commit(records)
        latencies = (
            time.time() - classified.ingested_ts if classified else np.empty(0, dtype=np.float64)
        )
        if self.latencies is not None:
            self.latencies.append(latencies)
        new = np.asarray(outcome.new, dtype=bool)
        dead_new = [m.reason for m, fresh in zip(marks, outcome.dead_new, strict=True) if fresh]
        self.stats.batches += 1
        self.stats.consumed += len(records)
        self.stats.classified += int(new.sum())
        self.stats.duplicates += int((~new).sum())
        self.stats.dead_letters += len(dead_new)
        self.stats.last_record = time.monotonic()
        if self.metrics is not None:
            self._observe(len(records), classified, new, dead_new, inference_s, redis_s, latencies)
        if self.on_batch is not None:
            self.on_batch(self.stats)

    def _write_with_retry(
        self, classified: Classified | None, marks: list[DeadLetterMark]
    ) -> WriteOutcome | None:
        results = classified.results if classified else []
        model = classified.model if classified else ""
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return self.store.write_batch(results, marks, model)
            except redis.RedisError as exc:
                if self.stopping.is_set():
                    log.error("redis still failing (%s) while stopping: batch left uncommitted",
                              exc)
                    return None
                log.warning("redis write failed (%s); retrying", exc)
                self.stopping.wait(backoff.next_delay())

    def _flush_dlq_with_retry(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                self.dlq.flush(timeout=30)
                return
            except KafkaError as exc:
                log.warning("DLQ flush failed (%s); retrying", exc)
                self.stopping.wait(backoff.next_delay())

    def _commit(self, records: list[Any]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            current = offsets.get(tp)
            if current is None or record.offset + 1 > current.offset:
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        backoff = Backoff(0.1, 5.0)
        for _attempt in range(5):
            try:
                self.consumer.commit(offsets)
                return
            except CommitFailedError as exc:
                # The group rebalanced: these partitions are someone else's now and they will
                # re-read from the last commit. Redis already holds the results, and the store
                # counts each id once, so nothing is lost or double counted.
                log.warning("commit rejected after a rebalance (%s)", exc)
                return
            except KafkaError as exc:
                log.warning("commit failed (%s); retrying", exc)
                self.stopping.wait(backoff.next_delay())
        log.error("giving up committing this batch; it will be redelivered and deduplicated")

    def _observe(self, consumed: int, classified: Classified | None, new: np.ndarray,
                 dead_new: list[str], inference_s: float, redis_s: float,
                 latencies: np.ndarray) -> None:
        """Metrics count what Redis counted (new ids only), so /metrics agrees with stats."""
        empty = np.empty(0, dtype=np.int64)
        self.metrics.observe_batch(
            consumed=consumed,
            topics=classified.predicted[new] if classified else empty,
            sentiments=classified.sentiment_predicted[new] if classified else empty,
            duplicates=int((~new).sum()),
            batch_size=len(new),
            inference_seconds=inference_s,
            redis_write_seconds=redis_s,
            end_to_end_latency_seconds=latencies[new] if len(latencies) else None,
        )
        if classified is not None:
            for task, truth, predicted in (
                ("topic", classified.truth, classified.predicted),
                ("sentiment", classified.sentiment_truth, classified.sentiment_predicted),
            ):
                labelled = new & (truth >= 0)
                if labelled.any():
                    self.metrics.observe_replay(task, truth[labelled], predicted[labelled])
        for reason, count in Counter(dead_new).items():
            self.metrics.record_dead_letter(reason, count)
        self._observe_lag()

    def _observe_lag(self) -> None:
        lags: dict[int, int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except Exception:  # position unknown during a rebalance
                continue
            if position is not None:
                lags[tp.partition] = max(0, high - position)
        self.metrics.set_consumer_lag(lags)
