"""The dead letters on ``<topic>.dlq``: read back, and their original messages published again.

The worker keeps every message it cannot use as a :class:`~fintweet.core.schema.DeadLetter`
(the original bytes in base64, with the reason), so that nothing is dropped. Reading them needed
Kafka's console tools and a base64 decoder; sending them back after a fix (a worker bug, a
schema the worker now accepts) had no tool at all. A requeued message keeps its key and bytes,
so a tweet that was counted once is never counted again (the store counts each id once), and
one that is still bad becomes a new dead letter.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fintweet.core.errors import UserError
from fintweet.core.kafka_errors import connect
from fintweet.core.schema import DeadLetter

log = logging.getLogger(__name__)

# One poll's wait; reading stops once every partition reached the end it had at the start.
POLL_MS = 500
# Empty polls in a row, once every partition reached its end, that end the reading.
QUIET_POLLS = 2
# Empty polls in a row while some partition is still short of its end: the broker stopped
# serving (gone, or the records were deleted under us).
EMPTY_POLLS_LIMIT = 40


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
        (cut to fit a Kafka record, or unreadable at the source)."""
        if self.letter is None or self.letter.truncated or not self.letter.value_b64:
            return None
        return base64.b64decode(self.letter.value_b64)

    @property
    def original_key(self) -> bytes | None:
        if self.letter is None or self.letter.key_b64 is None:
            return None
        return base64.b64decode(self.letter.key_b64)


def read_dead_letters(bootstrap: str, dlq_topic: str) -> Iterator[StoredLetter]:
    """Every record on ``dlq_topic`` from its beginning to its end (what is there when the call
    starts, and what arrives while it reads), each partition in offset order; none (and no
    topic created) when the topic does not exist."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = connect("dead-letter reader", bootstrap, lambda: KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, bootstrap_timeout_ms=10_000,
        request_timeout_ms=15_000))
    try:
        if dlq_topic not in consumer.topics():  # asking for its partitions would create it
            return
        partitions = [TopicPartition(dlq_topic, p)
                      for p in sorted(consumer.partitions_for_topic(dlq_topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if consumer.position(tp) < ends[tp]}
        # Past the ends, until polls come back empty: the embedded broker (Tansu) reports a
        # partition's end as its last batch's first offset + 1, short of a batch of several.
        quiet = empty_polls = 0
        while quiet < QUIET_POLLS:
            polled = consumer.poll(timeout_ms=POLL_MS)
            if not polled:
                empty_polls += 1
                quiet += not pending
                if empty_polls >= EMPTY_POLLS_LIMIT:
                    raise UserError(f"{dlq_topic}: the broker at {bootstrap} stopped serving "
                                    f"records before the end of {len(pending)} partition(s)")
                continue
            quiet = empty_polls = 0
            for tp in sorted(polled, key=lambda tp: tp.partition):
                yield from (stored(record) for record in polled[tp])
                if consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()


def stored(record: Any) -> StoredLetter:
    raw = b"" if record.value is None else bytes(record.value)
    try:
        letter: DeadLetter | None = DeadLetter.model_validate_json(raw)
    except ValidationError:
        letter = None
    return StoredLetter(record.partition, record.offset, int(record.timestamp), letter, raw)


@dataclass
class RequeueResult:
    requeued: int = 0
    no_copy: int = 0  # matching letters without a usable original (cut, or unreadable)


def requeue(letters: Iterator[StoredLetter], wanted: Callable[[StoredLetter], bool],
            publish: Callable[[bytes | None, bytes], object]) -> RequeueResult:
    """Publish the original of each wanted letter; the caller's producer flushes after."""
    result = RequeueResult()
    for stored_letter in letters:
        if not wanted(stored_letter):
            continue
        original = stored_letter.original
        if original is None:
            result.no_copy += 1
            continue
        publish(stored_letter.original_key, original)
        result.requeued += 1
    return result
