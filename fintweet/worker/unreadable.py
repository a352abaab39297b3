"""Records the broker serves but the consumer cannot read: their CRC check fails.

kafka-python raises ``CorruptRecordError`` from ``poll()`` for such a record and leaves the
position on it; and its fetcher cannot read that position again: the next ``poll()`` spins for
ever inside the library, on a record iterator the error has finished (kafka-python 3.0.12). So
there is no fetching it again to see whether the failure was a one-off. The worker moves the
position past the record at once (which also makes the fetcher drop the finished iterator) and
hands a stand-in (:class:`UnreadableRecord`) to the batch: the stand-in becomes a dead letter
(reason ``corrupt_record``, with the error and where the record is), and its offset is committed
only after that letter is durable, like any other record's. The bytes cannot be kept, since the
client never returns them; the letter says where they are, for as long as the topic keeps them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kafka.structs import TopicPartition

from fintweet.core.schema import DeadLetter, DeadLetterReason
from fintweet.worker.decode import dead_letter

CORRUPT_REASON = DeadLetterReason.CORRUPT_RECORD
# kafka-python's wording: "Record [batch] for partition TopicPartition(topic='t', partition=0)
# at offset 7 failed crc check". For a corrupt batch the offset is the batch's first, and stays
# so while the worker skips through the batch one record at a time.
_WHERE = re.compile(r"topic='([^']+)', partition=(\d+)\) at offset (\d+)")


@dataclass(frozen=True)
class UnreadableRecord:
    """Stands in a batch for a record that could not be read; shaped like the consumer's
    records where the worker reads them (``topic``, ``partition``, ``offset``, ``key``,
    ``value``)."""

    topic: str
    partition: int
    offset: int
    error: str
    key: bytes | None = None
    value: bytes | None = None


def unreadable_record(error: Exception,
                      position: Callable[[TopicPartition], int | None]) -> UnreadableRecord | None:
    """The record ``error`` is about, at the consumer's position on its partition (for a
    corrupt batch the error names the batch's first offset, and the position moves through the
    batch one skipped record at a time); None when the error cannot be placed."""
    match = _WHERE.search(str(error))
    if match is None:
        return None
    topic, partition, reported = match[1], int(match[2]), int(match[3])
    try:
        offset = position(TopicPartition(topic, partition))
    except Exception:  # no longer ours after a rebalance: its next owner meets it
        return None
    if offset is None:
        return None
    # A position before the reported offset (a fetch that began in a compacted gap) has no
    # records between the two: the reported one is the first that cannot be read.
    return UnreadableRecord(topic, partition, max(offset, reported),
                            f"{type(error).__name__}: {error}")


def unreadable_letter(record: UnreadableRecord) -> DeadLetter:
    """The dead letter of a record nobody could read: where it is and why, its bytes unknown
    (``value_size`` -1 and no ``value_sha256``, not the size and hash of an empty message)."""
    letter = dead_letter(record, CORRUPT_REASON, record.error)
    return letter.model_copy(update={"value_size": -1, "value_sha256": ""})
