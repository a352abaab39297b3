"""The worker: a Kafka consumer-group member that classifies tweets in batches into Redis.

Source → sinks → commit. One batch: poll (records per partition) → decode (bad records become
dead letters) → one ``classify`` → every sink writes (dead letters to the DLQ topic, then one
Redis round trip for results, counts and dead-letter marks) → every sink flushes → offsets
committed straight from the per-partition poll result. Offsets move only after every sink has
the batch (Redis answered, the DLQ acknowledged), so a crash of the worker at any point replays
the batch, and the store's "count only ids not seen before" makes the replay harmless:
at-least-once delivery, exactly-once counting. Redis's own durability is its configuration's:
with the compose file's ``appendfsync everysec``, a crash of the Redis host can lose up to a
second of answered writes whose offsets are committed.

The sinks run on one writer thread, one batch at a time, while this thread polls and classifies
the next batch: the Redis script executes in redis-server and the dead letters travel to the
broker without the GIL, so that wait is no longer added to every batch (docs/benchmarks.md). The
consumer never leaves this thread (kafka-python's is not thread-safe): a batch's offsets are
committed here, after its write is durable and before the next batch is handed to the writer, so
commits stay in order and never run ahead of Redis.

A group can also fail without any error: members cycling through rebalances while nobody holds a
partition. The worker watches its assignment: time without partitions is logged, exported
(``fintweet_worker_assigned_partitions``, ``fintweet_worker_unassigned_seconds``, ``/readyz``
503) and never counted as idle. It does not rejoin on its own: on Tansu a group whose leader left
mid-rebalance stays stuck for every new member too (tried: close and re-create the consumer every
15-60 s, the new member never became leader, its SyncGroup failed with REBALANCE_IN_PROGRESS for
minutes), and on a healthy broker a rejoin by a legitimately idle member (more workers than
partitions) would only rebalance everyone. An operator (or the orchestrator, via /readyz) decides.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from kafka import errors as kafka_errors
from kafka.errors import KafkaError
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

from fintweet.core import signals
from fintweet.core.backoff import GaveUp, retry
from fintweet.core.config import Settings
from fintweet.core.errors import UserError
from fintweet.core.kafka_errors import BrokerUnavailable, any_broker_accepts, connect
from fintweet.core.producer import PUBLISH_TIMEOUTS, TweetProducer
from fintweet.core.store import CLIENT_TIMEOUTS, ResultStore
from fintweet.worker.classify import Classified, Classifier, classify_isolating
from fintweet.worker.consumer import DEFAULT_CONSUMER_OPTIONS
from fintweet.worker.decode import Rejected, decode_records
from fintweet.worker.sinks import Batch, DeadLetterSink, ResultSink, Sink
from fintweet.worker.unreadable import UnreadableRecord, unreadable_letter, unreadable_record

if TYPE_CHECKING:
    from fintweet.monitoring.worker import WorkerMetrics

log = logging.getLogger(__name__)

# How long one commit attempt may block (kafka-python's default is request_timeout_ms); the retry
# around it checks for a stop request between attempts.
COMMIT_TIMEOUT_MS = 5_000
# Commit errors meaning the group has moved on since these records were fetched.
GROUP_MOVED_ON: tuple[type[KafkaError], ...] = (
    kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError,
    kafka_errors.IllegalGenerationError, kafka_errors.UnknownMemberIdError)
# Commit errors no wait cures; every other Kafka error is retried (an outage ends).
COMMIT_REFUSED: tuple[type[KafkaError], ...] = (
    kafka_errors.GroupAuthorizationFailedError, kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.FencedInstanceIdError, kafka_errors.OffsetMetadataTooLargeError,
    kafka_errors.InvalidCommitOffsetSizeError)


# Poll errors no wait cures: kafka-python raises them again on every poll, so the worker would
# spin on "retrying" for ever while its lag grows. Every other poll error is retried.
POLL_REFUSED: tuple[type[KafkaError], ...] = (
    kafka_errors.GroupAuthorizationFailedError, kafka_errors.TopicAuthorizationFailedError)


class CommitRefused(UserError, RuntimeError):
    """The broker refuses this group's commits for a reason only an operator can change."""


class ReadRefused(UserError, RuntimeError):
    """The broker refuses this group's reads (ACLs): an operator must grant them."""

# How often the main loop reads the consumer's heartbeat age (its metrics are not for other
# threads to read: /readyz takes the last reading).
HEARTBEAT_SAMPLE_S = 1.0

# Without partitions this long, the worker says so (log, metric, /readyz 503). A healthy join
# takes seconds; a member beyond the partition count is idle for good and says so too.
STUCK_AFTER_S = 30.0


# A gap this long without records ends a burst: time idle between two replays is no part of the
# worker's rate. A live stream of tens of tweets a second never leaves such a gap.
IDLE_GAP_S = 2.0


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
    stopped_unassigned: bool = False  # ended by ``until_unassigned``
    # Seconds of the bursts that ended (over IDLE_GAP_S idle ends one), when the current one
    # began, and since when the worker has been idle (a poll brought nothing and nothing was in
    # flight): a long-running worker's rate counts the time it had records.
    busy_before: float = 0.0
    burst_start: float | None = None
    idle_since: float | None = None

    def records_arrived(self, now: float) -> None:
        """A batch was polled at ``now`` (monotonic)."""
        if self.first_record is None:
            self.first_record = now
        idle_since, self.idle_since = self.idle_since, None
        if self.burst_start is None:
            self.burst_start = now
        elif (idle_since is not None and now - idle_since > IDLE_GAP_S
              and self.last_record is not None):
            self.busy_before += self.last_record - self.burst_start
            self.burst_start = now

    def went_idle(self, now: float) -> None:
        """A poll brought nothing, and every batch polled before is written. Only that is idle:
        while a slow model classifies one batch and the last is written, no poll comes back
        empty, however long the batch takes."""
        if self.idle_since is None:
            self.idle_since = now

    def busy_seconds(self) -> float:
        """From each burst's first record to its last write, summed (excludes group joins and
        the idle time between replays)."""
        if self.burst_start is None or self.last_record is None:
            return 0.0
        return self.busy_before + max(0.0, self.last_record - self.burst_start)

    def rate(self) -> float:
        """Tweets per second of busy time (:meth:`busy_seconds`)."""
        if self.last_record is None:
            return 0.0
        busy = self.busy_seconds()
        return self.consumed / busy if busy > 0 else float("inf")


def require_broker(bootstrap: str) -> None:
    """Fail in a second with one line when no bootstrap address accepts a connection, instead of
    letting kafka-python retry for most of a minute and log each attempt."""
    if not any_broker_accepts(bootstrap):
        raise BrokerUnavailable(
            f"cannot reach Kafka at {bootstrap}: nothing accepts connections there; is the broker "
            "up? (`fintweet up` starts the embedded one; set FINTWEET_KAFKA_BOOTSTRAP or "
            "--bootstrap)")


# A batch may take at most this share of the consumer's max_poll_interval: past the whole
# interval the group evicts the worker, its commit is refused and the batch is redelivered.
BATCH_TIME_SHARE = 0.25
MIN_BATCH = 16
FIRST_BATCH = 256  # until a batch has been timed
LEAVE_GROUP_TIMEOUT_MS = 5_000
# While a write is stalled (Redis hanging or down), the lag gauge is refreshed this often from
# the broker's end offsets: the fetches that keep the consumer's own high-water marks current
# wait for the write too, and a frozen gauge would hide the backlog from the lag alert.
STALLED_LAG_REFRESH_S = 5.0
END_OFFSETS_TIMEOUT_MS = 2_000


class BatchLimit:
    """How many records the next poll may take. ``--batch-size`` (2,048) suits the ANN, which
    classifies a batch in a fraction of a second; the transformer on 2 CPU cores needs tens of
    seconds for it, near the production max_poll_interval (60 s), and a batch longer than the
    interval gets the worker evicted from the group mid-run (docs/transformer.md). So the limit
    follows the measured cost per record: the first poll takes at most 256, and after each batch the
    limit becomes the number of records that fit in the time budget (never above ``--batch-size``,
    never below 16), so a fast model is back to the full batch from the second poll on."""

    def __init__(self, maximum: int, budget_s: float) -> None:
        self.maximum = maximum
        self.budget_s = budget_s
        self.size = min(maximum, FIRST_BATCH)

    def observe(self, records: int, seconds: float) -> None:
        if records <= 0 or seconds <= 0:
            return
        fits = int(self.budget_s / (seconds / records))
        self.size = max(min(MIN_BATCH, self.maximum), min(self.maximum, fits))


@dataclass
class _Written:
    """When the writer thread made a batch durable, and how long its sinks took."""

    seconds: float
    at_monotonic: float
    at_wall: float


@dataclass
class _InFlight:
    """A classified batch whose sinks are writing it on the writer thread."""

    batch: Batch
    prepare_s: float  # decode + classify, on this thread
    inference_s: float
    written: Future[_Written]
    submitted: float = field(default_factory=time.monotonic)

    def waited_s(self) -> float:
        """How long the write has been under way; 0 once it is done."""
        return 0.0 if self.written.done() else time.monotonic() - self.submitted


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
        extra_sinks: list[Sink] | None = None,
        stuck_after_s: float = STUCK_AFTER_S,
        until_unassigned: float | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.until_idle = until_idle
        # A bounded run (the demo) ends after this long without partitions instead of waiting
        # for ever on a group that never settles; a service keeps waiting and says so (readyz).
        self.until_unassigned = until_unassigned
        self.on_batch = on_batch
        self.stuck_after_s = stuck_after_s
        options = {**DEFAULT_CONSUMER_OPTIONS, **(consumer_options or {})}
        self.stats = WorkerStats()
        # seconds from ingested_at to the Redis write, per tweet (the benchmark asks for these)
        self.latencies: list[np.ndarray] | None = [] if record_latencies else None
        self.stopping = threading.Event()
        self._unassigned_since: float | None = time.monotonic()
        self._last_stuck_log = 0.0
        # Seconds without a heartbeat sent while a stable member of the group, as last read
        # (None: not a stable member, e.g. joining); past a session timeout the broker is hung
        # or out of reach.
        self.heartbeat_age: float | None = None
        self._heartbeat_read_at = 0.0
        self._stable_since: float | None = None
        self._silence_reported = False
        self._silent_after_s = options["session_timeout_ms"] / 1000
        self._consumer_options = options
        self.batch_limit = BatchLimit(settings.batch_size,
                                      options["max_poll_interval_ms"] / 1000 * BATCH_TIME_SHARE)
        require_broker(settings.kafka_bootstrap)
        # What is opened here is closed here if a later step fails (a bad Redis URL, metrics
        # that refuse the model or the tickers source); once built, close() releases it.
        with contextlib.ExitStack() as undo:
            self.consumer = self._make_consumer()
            undo.callback(self.consumer.close, autocommit=False,
                          timeout_ms=LEAVE_GROUP_TIMEOUT_MS)
            self.store = ResultStore.from_settings(settings, **CLIENT_TIMEOUTS,
                                                   health_check_interval=30)
            undo.callback(self.store.client.close)
            # Bounded as the ingest commands' are: a send that waits for a hung broker's
            # metadata would otherwise block 60 s, a stop waiting behind it.
            dead_letters = TweetProducer(settings.kafka_bootstrap, settings.dlq_topic,
                                         **PUBLISH_TIMEOUTS)
            undo.callback(dead_letters.close, timeout=10)
            if metrics is not None:
                metrics.set_model(model.name, model.version)
                metrics.watch_tickers(self.store.top_tickers)
            undo.pop_all()
        # Dead letters first: their sends are asynchronous and overlap the Redis write.
        self.sinks: list[Sink] = [DeadLetterSink(dead_letters, settings.dlq_topic),
                                  ResultSink(self.store), *(extra_sinks or [])]
        # The partitions the lag series were last set for; None: not yet set by this worker.
        self._lag_assignment: frozenset[Any] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fintweet-writer")
        self._in_flight: _InFlight | None = None
        # The batch last handed to the writer, kept while the main thread waits on it (that
        # takes it out of _in_flight), for the scrape thread to time.
        self._last_written: _InFlight | None = None
        if metrics is not None:
            metrics.watch_writes(self._write_waited_s)
        # Set when a batch's write gave up (a stop during an outage): from then on nothing is
        # handed to the writer or committed, or a later batch's offsets would skip it.
        self._gave_up = False
        # Records whose CRC check fails: skipped, each becoming a dead letter (worker.unreadable).
        self._unreadable: list[UnreadableRecord] = []  # stand-ins in the batch being polled
        self._blas_limit = _limit_blas(settings.blas_threads)
        # The model's vocabularies and caches are millions of long-lived objects; a full
        # collection walking them stalls a batch for 100+ ms. Freezing moves everything alive
        # now out of the collector's sight (Python >= 3.7), which keeps p99 latency down.
        gc.freeze()

    def _make_consumer(self) -> Any:
        from kafka import KafkaConsumer

        settings = self.settings
        return connect("worker", settings.kafka_bootstrap, lambda: KafkaConsumer(
            settings.topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id=f"fintweet-worker-{self.model.name}",
            **self._consumer_options,
        ))

    # -- lifecycle -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the batch in hand, commit, and leave the group."""

        def _stop() -> None:
            # Said now: the second signal takes the kernel's default action, with no word.
            log.info("signal: finishing the current batch, then leaving the group (a second "
                     "signal ends the process at once; its uncommitted batch is delivered again)")
            self.stopping.set()

        signals.install(_stop)

    def unassigned_for(self) -> float:
        """Seconds since this worker last held a partition (0 while it holds one)."""
        since = self._unassigned_since
        return 0.0 if since is None else time.monotonic() - since

    def ready(self) -> tuple[bool, str]:
        """For /readyz: model loaded (it is, or the worker would not exist), partitions assigned
        (or not missing for long: a join takes seconds), Redis answers PING, the consumer's
        heartbeats go out (last read by the main loop), and a bootstrap broker accepts
        connections. kafka-python keeps no public "connected" state worth trusting (its
        bootstrap socket is closed once metadata arrives)."""
        missing = self.unassigned_for()
        if missing >= self.stuck_after_s:
            return False, (f"no partitions assigned for {missing:.0f} s (a stuck consumer group, "
                           "or more workers than partitions)")
        if not self.store.ping():
            return False, "redis unreachable"
        silent = self.heartbeat_age
        if silent is not None and silent >= self._silent_after_s:
            # A hung broker may still have connections accepted (the kernel does that), and the
            # consumer keeps its assignment and returns empty polls: the heartbeats tell.
            return False, (f"kafka: no heartbeat to the group coordinator for {silent:.0f} s "
                           "(a hung or unreachable broker)")
        if not any_broker_accepts(self.settings.kafka_bootstrap):
            return False, f"kafka unreachable at {self.settings.kafka_bootstrap}"
        return True, f"ok: model {self.model.name}@{self.model.version}"

    def run(self) -> WorkerStats:
        log.info("worker consuming %s as group %s with model %s@%s", self.settings.topic,
                 self.settings.group, self.model.name, self.model.version)
        last_activity = time.monotonic()
        try:
            while not self.stopping.is_set():
                records = self._poll_batch()
                if self._watch_assignment():
                    last_activity = time.monotonic()  # idle time counts from the assignment
                if (self.until_unassigned is not None
                        and self.unassigned_for() >= self.until_unassigned):
                    log.error("no partitions assigned for %.0f s: stopping",
                              self.unassigned_for())
                    self.stats.stopped_unassigned = True
                    break
                if records:
                    self._process(records)
                    last_activity = time.monotonic()
                    continue
                self._complete()  # a quiet stream: commit what is written without waiting
                self.stats.went_idle(time.monotonic())
                if (self.until_idle is not None and self._unassigned_since is None
                        and time.monotonic() - last_activity >= self.until_idle):
                    log.info("no messages for %.1fs with partitions assigned: stopping",
                             self.until_idle)
                    break
            self._complete()
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        # A write retrying through an outage gives up once this is set; otherwise leaving on an
        # error with Redis down would wait here for ever.
        self.stopping.set()
        # Everything below is released even if one step raises; the last registered runs first.
        with contextlib.ExitStack() as release:
            release.callback(self._restore_blas)
            release.callback(self.store.client.close)
            # Leaves the group, so partitions move at once. Bounded: without a timeout
            # kafka-python waits up to request_timeout_ms (30 s) for a coordinator that does
            # not answer (Tansu mid-rebalance; the likely reason a Ctrl-C'd `demo --serve` once
            # took over a minute to exit); the session timeout drops a silent member anyway.
            release.callback(self.consumer.close, autocommit=False,
                             timeout_ms=LEAVE_GROUP_TIMEOUT_MS)
            for sink in reversed(self.sinks):
                release.callback(sink.close)
            flight, self._in_flight = self._in_flight, None
            gave_up = self._gave_up
            if flight is not None:  # leaving on an error: let the write end, commit nothing
                try:
                    flight.written.result()
                except GaveUp:
                    gave_up = True
                except Exception as exc:
                    log.warning("the last batch's write on close: %s", exc)
            self._writer.shutdown(wait=True)
            # After a write given up in an outage nothing is flushed: what it held is not
            # committed and comes again, and a flush would wait the outage out once more.
            for sink in () if gave_up else self.sinks:
                try:
                    sink.flush()
                except Exception as exc:  # closing: report, never mask the original error
                    log.warning("flushing %s on close: %s", sink.name, exc)

    def _restore_blas(self) -> None:
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    # -- group membership ------------------------------------------------------------------------

    def _watch_assignment(self) -> bool:
        """Track whether partitions are held; True when they just arrived. Logs and exports time
        without any."""
        now = time.monotonic()
        assignment = frozenset(self.consumer.assignment())
        assigned = len(assignment)
        gained = False
        if assigned:
            if self._unassigned_since is not None:
                log.info("%d partition(s) assigned after %.1fs", assigned,
                         now - self._unassigned_since)
                gained = True
            self._unassigned_since = None
        elif self._unassigned_since is None:
            self._unassigned_since = now
        missing = self.unassigned_for()
        if self.metrics is not None:
            self.metrics.assigned_partitions.set(assigned)
            self.metrics.unassigned_seconds.set(missing)
        if self.metrics is not None and assignment != self._lag_assignment:
            # Lag is otherwise set after each batch: a worker that lost partitions in a
            # rebalance would keep exporting its last lag for them while another member owns
            # them, for as long as its own partitions stay quiet.
            self._lag_assignment = assignment
            self._observe_lag(self.metrics)
        if missing >= self.stuck_after_s and now - self._last_stuck_log >= self.stuck_after_s:
            self._last_stuck_log = now
            log.warning("no partitions assigned for %.0f s (group %s, topic %s)", missing,
                        self.settings.group, self.settings.topic)
        self._watch_heartbeats()
        return gained

    def _watch_heartbeats(self) -> None:
        """At most once a ``HEARTBEAT_SAMPLE_S``: how long the consumer has sent no heartbeat
        while a stable member; say when that passes the session timeout, and when heartbeats
        resume. Not while the group rebalances: kafka-python sends none during a join, which
        a slow member can make last longer than the session timeout on a healthy broker. On
        the main thread, which owns the consumer; /readyz reads the last reading."""
        now = time.monotonic()
        if now - self._heartbeat_read_at < HEARTBEAT_SAMPLE_S:
            return
        self._heartbeat_read_at = now
        try:
            stable = (bool(self.consumer.assignment())
                      and self.consumer.group_metadata().state == MemberState.STABLE)
            age = float(self.consumer.metrics()["consumer-coordinator-metrics"]
                        ["last-heartbeat-seconds-ago"]) if stable else math.inf
        except Exception as exc:  # monitoring only (metrics() is kafka-python's unstable API)
            log.debug("reading the consumer's heartbeat age: %s", exc)
            stable, age = False, math.inf
        if not stable:
            self._stable_since = self.heartbeat_age = None
            if self.metrics is not None:
                self.metrics.heartbeat_age_seconds.set(0)
            return
        if self._stable_since is None:
            self._stable_since = now
        # The first heartbeat after a join comes an interval later, and the age still counts
        # from the last one before it: no longer than the member has been stable.
        heartbeat_age = min(age, now - self._stable_since)
        if self.metrics is not None:  # first: a reader of ready() then sees the gauge set too
            self.metrics.heartbeat_age_seconds.set(heartbeat_age)
        self.heartbeat_age = heartbeat_age
        silent = heartbeat_age >= self._silent_after_s
        if silent and not self._silence_reported:
            self._silence_reported = True
            log.warning("no heartbeat to the group coordinator for %.0f s: the broker is hung "
                        "or out of reach (/readyz answers 503 until heartbeats resume)",
                        heartbeat_age)
        elif not silent and self._silence_reported:
            self._silence_reported = False
            log.info("heartbeats to the group coordinator resumed")

    # -- one batch -------------------------------------------------------------------------------

    def _poll_batch(self) -> dict[TopicPartition, list[Any]]:
        """Up to ``batch_limit.size`` records by partition (``batch_size`` at most, fewer when a
        slow model would otherwise outlast the poll interval), waiting at most ``max_wait_ms``
        after the first arrives: big batches under load, low latency when the stream is slow."""
        size = self.batch_limit.size
        wait = self.settings.max_wait_ms / 1000
        by_partition: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < size and not self.stopping.is_set():
            timeout = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                polled = self.consumer.poll(
                    timeout_ms=int(timeout * 1000), max_records=size - count
                )
            except kafka_errors.CorruptRecordError as exc:
                unreadable = unreadable_record(exc, self.consumer.position)
                if unreadable is None:
                    log.warning("poll failed (%s); retrying", exc)
                    self.stopping.wait(0.5)
                    continue
                log.error("skipping unreadable record %s/%d/%d (%s); it becomes a dead letter",
                          unreadable.topic, unreadable.partition, unreadable.offset, exc)
                tp = TopicPartition(unreadable.topic, unreadable.partition)
                self.consumer.seek(tp, unreadable.offset + 1)
                by_partition.setdefault(tp, []).append(unreadable)  # its offset commits too
                self._unreadable.append(unreadable)
                count += 1
                continue
            except kafka_errors.UnsupportedCodecError as exc:
                # Retrying cannot help: kafka-python fails the batch once, then returns nothing
                # from that partition for ever while the poll spins. Nothing is committed, so the
                # batch waits in Kafka for a worker that can read it.
                raise UserError(
                    f"topic {self.settings.topic} holds records compressed with a codec this "
                    f"install cannot read ({exc}); reinstall fintweet, whose kafka-python extras "
                    "bring lz4, snappy and zstd") from exc
            except POLL_REFUSED as exc:
                # Nothing of this batch is committed: it waits in Kafka for a worker allowed
                # to read it.
                raise ReadRefused(
                    f"kafka refused group {self.settings.group!r} reading topic "
                    f"{self.settings.topic!r} ({type(exc).__name__}: {exc}); waiting will not "
                    "change that: grant the group Read on the group and the topic (ACLs)"
                ) from exc
            except KafkaError as exc:
                log.warning("poll failed (%s); retrying", exc)
                self.stopping.wait(0.5)
                continue
            for tp, records in polled.items():
                by_partition.setdefault(tp, []).extend(records)
                count += len(records)
            if not count:
                return by_partition  # nothing yet: let run() check idleness and stop requests
            if deadline is None:
                deadline = time.monotonic() + wait
            if time.monotonic() >= deadline:
                break
        return by_partition

    def _process(self, by_partition: dict[TopicPartition, list[Any]]) -> None:
        """Decode and classify this batch while the previous one is written, then commit the
        previous one and hand this one to the writer."""
        self.stats.records_arrived(time.monotonic())
        records = [record for batch in by_partition.values() for record in batch]
        batch_started = time.perf_counter()
        unreadable, self._unreadable = self._unreadable, []
        if unreadable:
            records = [record for record in records if not isinstance(record, UnreadableRecord)]
        decoded, rejected = decode_records(records)
        rejected.extend(Rejected(unreadable_letter(stand_in), stand_in) for stand_in in unreadable)
        started = time.perf_counter()
        classified, failed = classify_isolating(self.model, decoded) if decoded else (None, [])
        inference_s = time.perf_counter() - started
        if failed:
            rejected.extend(failed)
            failed_records = {id(bad.record) for bad in failed}
            decoded = [one for one in decoded if id(one.record) not in failed_records]
        batch = Batch(by_partition, decoded, rejected, classified)
        prepare_s = time.perf_counter() - batch_started
        self._complete()
        if self._gave_up:
            return  # not written, not committed: redelivered to whoever holds the partition next
        self._in_flight = self._last_written = _InFlight(
            batch, prepare_s, inference_s, self._writer.submit(self._write, batch))

    def _write_waited_s(self) -> float:
        """For the scrape thread: a Redis (or dead-letter topic) outage holds the batch's write
        in its retries, and nothing else shows it: the worker answers scrapes, holds its
        partitions and sends heartbeats."""
        flight = self._last_written
        return 0.0 if flight is None else flight.waited_s()

    def _write(self, batch: Batch) -> _Written:
        """On the writer thread: every sink writes, then every sink flushes (retried through an
        outage; a stop request during one raises GaveUp)."""
        started = time.perf_counter()
        for sink in self.sinks:
            retry(sink.name, functools.partial(sink.write, batch), retry_on=sink.retry_on,
                  stopping=self.stopping, log=log)
        for sink in self.sinks:
            retry(f"{sink.name} flush", sink.flush, retry_on=sink.retry_on,
                  stopping=self.stopping, log=log)
        return _Written(time.perf_counter() - started, time.monotonic(), time.time())

    def _complete(self) -> None:
        """Wait until the batch in flight is durable, count it, then commit its offsets."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        try:
            written = self._wait_written(flight)
        except GaveUp:
            # Stopping during an outage: nothing committed, the batch will be redelivered, and
            # no later batch may be written or committed past it.
            self._gave_up = True
            return
        # Counted before the commit: Redis counted the batch when it was written, so stats and
        # metrics must too, even if a stop ends the commit's retries (the batch is then
        # redelivered, and its ids are found stored and counted as duplicates).
        self.batch_limit.observe(flight.batch.size, flight.prepare_s + written.seconds)
        self._account(flight.batch, flight.inference_s, written)
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                   for tp, records in flight.batch.records.items() if records}
        with contextlib.suppress(GaveUp):  # written, not committed: redelivered (see above)
            retry("offset commit", lambda: self._commit(offsets), retry_on=(KafkaError,),
                  stopping=self.stopping, log=log)
        if self.on_batch is not None:
            # After the commit: a callback that stops the worker (the demo, once drained) must
            # not turn the commit's first failure into giving up.
            self.on_batch(self.stats)

    def _wait_written(self, flight: _InFlight) -> _Written:
        while True:
            try:
                return flight.written.result(timeout=STALLED_LAG_REFRESH_S)
            except TimeoutError:
                self._watch_heartbeats()
                if self.metrics is not None:
                    self._observe_lag(self.metrics, ask_broker=True)

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit once, bounded, so the retry around it sees a stop request. A commit the group
        no longer accepts is dropped rather than retried: retrying without polling cannot work
        (a rebalance completes only inside ``poll()``, so a worker that retried a commit caught
        mid-rebalance waited for ever), and dropping it loses nothing (see below)."""
        self._watch_heartbeats()  # a commit retried through a hung broker holds the main loop
        try:
            self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except GROUP_MOVED_ON as exc:
            # These partitions may be someone else's now; whoever holds them re-reads from the
            # last commit. Redis already holds the results and counts each id once, so nothing
            # is lost or double counted; if they stay ours, the next batch's commit covers them.
            log.warning("offset commit dropped: the group is rebalancing (%s)",
                        type(exc).__name__)
        except COMMIT_REFUSED as exc:
            raise CommitRefused(
                f"kafka refused the offset commit of group {self.settings.group!r} "
                f"({type(exc).__name__}: {exc}); waiting will not change that: check the "
                "group's and topic's ACLs, or the group.instance.id") from exc

    def _account(self, batch: Batch, inference_s: float, written: _Written) -> None:
        classified = batch.classified
        outcome = batch.outcome
        assert outcome is not None, "ResultSink sets the outcome"
        latencies = (
            written.at_wall - classified.ingested_ts if classified
            else np.empty(0, dtype=np.float64)
        )
        if self.latencies is not None:
            self.latencies.append(latencies)
        new = np.asarray(outcome.new, dtype=bool)
        dead_new = [m.reason for m, fresh in zip(batch.marks, outcome.dead_new, strict=True)
                    if fresh]
        self.stats.batches += 1
        self.stats.consumed += batch.size
        self.stats.classified += int(new.sum())
        self.stats.duplicates += int((~new).sum())
        self.stats.dead_letters += len(dead_new)
        self.stats.last_record = written.at_monotonic
        if self.metrics is not None:
            self._observe(self.metrics, batch.size, classified, new, dead_new, inference_s,
                          written.seconds, latencies)

    def _observe(self, metrics: WorkerMetrics, consumed: int, classified: Classified | None,
                 new: np.ndarray, dead_new: list[str], inference_s: float, redis_s: float,
                 latencies: np.ndarray) -> None:
        """Metrics count what Redis counted (new ids only), so /metrics agrees with stats."""
        empty = np.empty(0, dtype=np.int64)
        metrics.observe_batch(
            consumed=consumed,
            topics=classified.topic_predicted[new] if classified else empty,
            sentiments=classified.sentiment_predicted[new] if classified else empty,
            duplicates=int((~new).sum()),
            batch_size=len(new),
            inference_seconds=inference_s,
            redis_write_seconds=redis_s,
            end_to_end_latency_seconds=latencies[new] if len(latencies) else None,
        )
        if classified is not None:
            for task, truth, predicted in (
                ("topic", classified.topic_truth, classified.topic_predicted),
                ("sentiment", classified.sentiment_truth, classified.sentiment_predicted),
            ):
                labelled = new & (truth >= 0)
                if labelled.any():
                    metrics.observe_replay(task, truth[labelled], predicted[labelled])
        for reason, count in Counter(dead_new).items():
            metrics.record_dead_letter(reason, count)
        self._observe_lag(metrics)

    def _observe_lag(self, metrics: WorkerMetrics, ask_broker: bool = False) -> None:
        """Lag from the high-water marks the last fetches brought, or with ``ask_broker`` from
        the broker's end offsets where they are ahead of those marks (one request; the marks
        alone if it fails). Tansu answers it with the last record batch's first offset + 1, so
        on the embedded broker an end offset can read low, never high."""
        assignment = self.consumer.assignment()
        ends: dict[TopicPartition, int] = {}
        if ask_broker and assignment:
            try:
                ends = self.consumer.end_offsets(list(assignment),
                                                 timeout_ms=END_OFFSETS_TIMEOUT_MS)
            except KafkaError as exc:
                log.debug("end offsets for the lag gauge: %s", exc)
        lags: dict[int, int] = {}
        for tp in assignment:
            high = max(ends.get(tp, -1), self.consumer.highwater(tp) or -1)
            if high < 0:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except Exception:  # position unknown during a rebalance
                continue
            if position is not None:
                lags[tp.partition] = max(0, high - position)
        metrics.set_consumer_lag(lags)


def _limit_blas(threads: int) -> Any:
    """Caps the BLAS pools NumPy and SciPy loaded (the ANN's dense products) for this worker's
    life; ``close`` lifts the cap, which matters where the worker runs inside another program
    (the demo, the benchmarks). One thread is the default because on 2 cores it classified
    faster than two, which also doubled the CPU spent (docs/benchmarks.md)."""
    if threads <= 0:
        return None
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")
