"""The dead letters on ``<topic>.dlq``: read back, and their original messages published again.

The worker keeps every message it cannot use as a :class:`~fintweet.core.schema.DeadLetter`
(the original bytes in base64, with the reason), so that nothing is dropped. Reading them needed
Kafka's console tools and a base64 decoder; sending them back after a fix (a worker bug, a
schema the worker now accepts) had no tool at all. A requeued message keeps its key and bytes,
so a tweet that was counted once is never counted again (the store counts each id once), and
one that is still bad becomes a second letter of the same dead message, counted once.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from fintweet.core.config import DLQ_SUFFIX
from fintweet.core.errors import UserError
from fintweet.core.kafka_errors import connect
from fintweet.core.schema import REQUEUED_FROM_HEADER, DeadLetter

log = logging.getLogger(__name__)

# One poll's wait; reading stops once every partition reached the end it had at the start.
POLL_MS = 500
# How long asking for a partition's position may take (it can need the broker).
POSITION_MS = 10_000
# Polls in a row that move no partition short of its end: the broker stopped serving.
EMPTY_POLLS_LIMIT = 40
# More records than any fetch returns: one poll hands over whole fetched batches.
MAX_POLL_RECORDS = 1_000_000


class NoDeadLetterTopic(LookupError):
    """The DLQ topic is not on the broker: nothing was ever dead-lettered there, or the topic
    name is not the one the workers read. ``dlq_topics``: those that are."""

    def __init__(self, dlq_topic: str, dlq_topics: list[str]) -> None:
        super().__init__(dlq_topic)
        self.dlq_topic, self.dlq_topics = dlq_topic, dlq_topics


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as read from the DLQ topic, with where it sits there and when it was written
    (the record's timestamp, ms); ``letter`` is None for a record that is not a dead letter
    (written there by something else)."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter | None
    raw: bytes

    @property
    def original(self) -> bytes | None:
        """The message as the worker received it; None when the letter holds no usable copy
        (cut to fit a Kafka record, unreadable at the source, or a letter built after copying
        failed). An empty message is a copy like any other (a tombstone, whose value was null,
        is recorded as one too, and so requeued as an empty message)."""
        letter = self.letter
        if letter is None or letter.truncated or letter.value_size < 0:
            return None
        if not letter.value_b64 and not letter.value_sha256:  # nothing was copied
            return None
        return base64.b64decode(letter.value_b64)

    @property
    def original_key(self) -> bytes | None:
        if self.letter is None or self.letter.key_b64 is None:
            return None
        return base64.b64decode(self.letter.key_b64)


def read_dead_letters(bootstrap: str, dlq_topic: str) -> Iterator[StoredLetter]:
    """The records on ``dlq_topic`` when the call starts, each partition in offset order from
    its beginning to the end it had then; :class:`NoDeadLetterTopic` (and no topic created)
    when the topic does not exist. Letters written after the start are left for the next
    call: a requeue run while the workers ran read back the letters its own resends made, and
    resent those, without end."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    started_ms = int(time.time() * 1000)
    consumer = connect("dead-letter reader", bootstrap, lambda: KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        bootstrap_timeout_ms=10_000, request_timeout_ms=15_000,
        # A fetched batch comes out of one poll whole: split across two, the end check below
        # could drop a partition between the slices of its last batch.
        max_poll_records=MAX_POLL_RECORDS))
    try:
        try:
            topics = consumer.topics()
            if dlq_topic not in topics:  # asking for its partitions would create it
                raise NoDeadLetterTopic(dlq_topic, sorted(t for t in topics
                                                          if t.endswith(DLQ_SUFFIX)))
            partitions = [TopicPartition(dlq_topic, p)
                          for p in sorted(consumer.partitions_for_topic(dlq_topic) or ())]
            if not partitions:
                return
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            yield from _read_to(consumer, ends, started_ms, f"{dlq_topic} at {bootstrap}")
        except KafkaError as exc:
            raise UserError(f"{dlq_topic}: reading it from the broker at {bootstrap} failed "
                            f"({type(exc).__name__}: {exc}); is the broker up?") from exc
    finally:
        consumer.close()


def _read_to(consumer: Any, ends: dict[Any, int], started_ms: int,
             where: str) -> Iterator[StoredLetter]:
    """Each partition's records below its end, and those past it that were written before
    ``started_ms``: the embedded broker (Tansu) gives as a partition's end its last batch's
    first offset + 1, short of the rest of a batch of several. A partition is paused once its
    position reaches its end, so later letters neither come back nor count as progress."""
    pending = set(ends)
    stalled = 0  # polls in a row that moved no pending partition
    while pending:
        polled = consumer.poll(timeout_ms=POLL_MS)
        moved = False
        for tp in sorted(polled, key=lambda tp: tp.partition):
            if tp not in pending:
                continue
            moved = moved or bool(polled[tp])
            for record in polled[tp]:
                written = record.timestamp if record.timestamp is not None else -1
                if record.offset < ends[tp] or 0 <= written < started_ms:
                    yield stored(record)
        stalled = 0 if moved else stalled + 1
        # Checked on every poll, records or not: a partition whose end is a transaction marker
        # or a gap gets there without a record to say so.
        done = {tp for tp in pending
                if (consumer.position(tp, timeout_ms=POSITION_MS) or 0) >= ends[tp]}
        if done:
            consumer.pause(*done)
            pending -= done
        if pending and stalled >= EMPTY_POLLS_LIMIT:
            raise UserError(f"{where}: the broker stopped serving records before the end of "
                            f"{len(pending)} partition(s)")


def stored(record: Any) -> StoredLetter:
    raw = b"" if record.value is None else bytes(record.value)
    try:
        letter: DeadLetter | None = DeadLetter.model_validate_json(raw)
    except ValidationError:
        letter = None
    written = record.timestamp if record.timestamp is not None else -1  # a v0 record has none
    return StoredLetter(record.partition, record.offset, int(written), letter, raw)


@dataclass
class RequeueResult:
    requeued: int = 0  # handed to the producer; acknowledged once its flush returns
    no_copy: int = 0  # letters without a usable original (cut, or unreadable)
    repeats: int = 0  # letters of a message already sent in this run (a requeue that failed again)


class Publish(Protocol):
    def __call__(self, key: bytes | None, value: bytes, *,
                 headers: list[tuple[str, bytes]]) -> object: ...


def requeue(letters: Iterable[StoredLetter], publish: Publish,
            result: RequeueResult) -> RequeueResult:
    """Publish the original of each letter once, counting into ``result`` as it goes (so an
    interrupted run can say how far it got); the caller's producer flushes after.

    A requeued message still bad comes back as a second letter of the same message (its
    ``uid``, carried in the ``REQUEUED_FROM_HEADER``): the message is sent once, not once per
    letter, or every run would double what is still bad."""
    sent: set[str] = set()
    for stored_letter in letters:
        letter, original = stored_letter.letter, stored_letter.original
        if letter is None or original is None:
            result.no_copy += 1
            continue
        if letter.uid in sent:
            result.repeats += 1
            continue
        sent.add(letter.uid)
        publish(stored_letter.original_key, original,
                headers=[(REQUEUED_FROM_HEADER, letter.uid.encode())])
        result.requeued += 1
    return result
