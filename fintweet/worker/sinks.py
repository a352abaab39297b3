"""Where a classified batch goes, behind one small interface, so a new destination (a live stream,
ticker indexes) is a new :class:`Sink` in the worker's list, not an edit of its poll loop.

The worker's checkpoint, in the manner of Quix Streams: every sink ``write``s the batch, every
sink ``flush``es (waits until what it wrote is durable), and only then are offsets committed. A
sink raises on failure; the worker retries the same call (see ``fintweet.core.backoff.retry``),
so ``write`` and ``flush`` must be safe to repeat for one batch.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import redis
from kafka.errors import KafkaError, MessageSizeTooLargeError

from fintweet.core.errors import UserError
from fintweet.core.kafka_errors import BrokerUnavailable
from fintweet.core.producer import PublishError, TweetProducer
from fintweet.core.schema import MAX_DEAD_LETTER_KEY
from fintweet.core.store import DeadLetterMark, ResultStore, WriteOutcome
from fintweet.worker.classify import Classified
from fintweet.worker.decode import Decoded, Rejected

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One poll's records, what became of them, and what the sinks report back."""

    records: dict[Any, list[Any]]  # TopicPartition -> records, as the consumer returned them
    decoded: list[Decoded]
    rejected: list[Rejected]
    classified: Classified | None
    outcome: WriteOutcome | None = None  # set by ResultSink: which ids were new
    marks: list[DeadLetterMark] = field(default_factory=list)
    # The same on every retry of this batch's write: a retry after a lost reply is known.
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.marks = [DeadLetterMark(bad.uid, bad.letter.reason) for bad in self.rejected]

    @property
    def size(self) -> int:
        return sum(len(records) for records in self.records.values())


class Sink(Protocol):
    """A destination for batches. ``retry_on``: the errors worth retrying (an outage), as
    opposed to bugs, which propagate."""

    @property
    def name(self) -> str: ...

    @property
    def retry_on(self) -> tuple[type[BaseException], ...]: ...

    def write(self, batch: Batch) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# Error replies that pass by themselves: a failover under way, a cluster resharding, another
# script running (BUSY), a replica still loading its data.
TRANSIENT_REPLIES = ("MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY", "LOADING")


class TransientReply(redis.RedisError):
    """An error reply from Redis that a later try can succeed past (``TRANSIENT_REPLIES``)."""


class RedisRefused(UserError, RuntimeError):
    """An error reply that every try would get (a key of another type, a user without EVALSHA):
    the worker ends in one line naming it, with nothing committed."""


class ResultSink:
    """Results, counters and dead-letter marks in one Redis round trip (the store's Lua script,
    which counts only ids it has not seen: a redelivered batch changes nothing). Synchronous, so
    ``flush`` has nothing left to do."""

    name = "redis write"
    # An outage passes: no connection, no answer in time, a replica promoted mid-write, memory
    # full until someone frees it, a failover or a busy script under way (TRANSIENT_REPLIES). An
    # error in Redis's answer (a key of the wrong type, a script error) comes back the same on
    # every try: it ends the worker, with nothing committed. (A script that failed midway keeps
    # what it wrote before the error, Lua having no rollback: the redelivered batch's tweets
    # already stored count as duplicates. Only a key of a foreign type can cause that.)
    # redis-py turns some of TRANSIENT_REPLIES into classes of their own, with the code taken
    # off the message (MasterDownError is a ClusterDownError; LOADING's BusyLoadingError is a
    # ConnectionError): those are matched by class, the rest (BUSY) by their message.
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (
        redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, redis.OutOfMemoryError,
        redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, TransientReply)

    def __init__(self, store: ResultStore) -> None:
        self.store = store

    def write(self, batch: Batch) -> None:
        classified = batch.classified
        results = classified.results if classified else []
        model = classified.model if classified else ""
        try:
            batch.outcome = self.store.write_batch(results, batch.marks, model, token=batch.token)
        except redis.ResponseError as exc:
            if isinstance(exc, self.retry_on):
                raise
            if str(exc).startswith(TRANSIENT_REPLIES):
                raise TransientReply(str(exc)) from exc
            raise RedisRefused(
                f"Redis refused the batch write ({type(exc).__name__}: {exc}); nothing was "
                "committed, so the batch waits in Kafka: fix what Redis names, then start the "
                "worker again") from exc

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


# One flush's wait for the broker's acknowledgements; a failed one is retried through a new
# client, so a short wait costs nothing, and a stop waits behind at most one.
FLUSH_TIMEOUT_S = 10.0


class DeadLetterSink:
    """Dead letters to the DLQ topic through the ingest's producer (acks=all). Sends are
    asynchronous; ``flush`` waits for the acknowledgements and, if any letter failed, raises and
    sends the batch's letters again on the next try, so the retry can succeed (a letter may then
    be in the DLQ twice: at-least-once, like everything else on Kafka)."""

    name = "dead-letter topic"
    # BrokerUnavailable: a retry's new client (``_renew``) found no broker yet.
    retry_on: ClassVar[tuple[type[BaseException], ...]] = (KafkaError, PublishError,
                                                           BrokerUnavailable)

    def __init__(self, producer: TweetProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._pending: list[Rejected] = []
        self._resend = False
        # After a failed send or flush, the next send goes through a new client: kafka-python's
        # producer whose batches expired in an outage may never send again
        # (TweetProducer.renew), and every retry would then fail, holding the worker's every
        # batch behind this one.
        self._renew = False

    def write(self, batch: Batch) -> None:
        self._pending = list(batch.rejected)
        self._resend = False
        for bad in self._pending:
            log.warning("dead letter %s: %s (%s)", bad.uid, bad.letter.reason,
                        bad.letter.error[:300])
        self._send()

    def _send(self) -> None:
        if self._renew:
            self.producer.renew()  # BrokerUnavailable, while the broker is away, is retried
            self._renew = False
        try:
            self._publish_pending()
        except BaseException:
            self._renew = True
            raise

    def _publish_pending(self) -> None:
        for bad in self._pending:
            # The key too is the sender's: cut it so no letter can exceed the record limit.
            key = None if bad.record.key is None else bytes(bad.record.key)[:MAX_DEAD_LETTER_KEY]
            letter = bad.letter.model_dump_json().encode()
            try:
                self.producer.publish_raw(key, letter, topic=self.topic)
            except MessageSizeTooLargeError:  # retrying cannot help: keep the letter, not the copy
                slim = bad.letter.model_copy(update={"value_b64": "", "truncated": True})
                self.producer.publish_raw(key, slim.model_dump_json().encode(), topic=self.topic)

    def flush(self) -> None:
        if self._resend:
            self._send()
        try:
            self.producer.flush(timeout=FLUSH_TIMEOUT_S)
        except (KafkaError, PublishError):
            self._resend = self._renew = True
            raise
        self._pending = []
        self._resend = False

    def close(self) -> None:
        if self._resend or self._renew:
            # The last send or flush failed and its retry was given up (a stop during an
            # outage): that batch was not committed, so its records, and their letters, come
            # again. Closing would wait out the outage once more, past a stop grace period.
            log.warning("%d dead letter(s) not acknowledged on close; their batch was not "
                        "committed and is redelivered", len(self._pending))
            self.producer.abandon()
            return
        try:
            self.producer.close(timeout=10)
        except (KafkaError, PublishError) as exc:
            log.warning("closing the dead-letter producer: %s", exc)
