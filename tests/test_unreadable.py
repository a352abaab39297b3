"""Placing a corrupt-record error (the end-to-end skip runs on the real broker in
tests/test_worker_faults.py)."""

from __future__ import annotations

from kafka.errors import CorruptRecordError, IllegalStateError
from kafka.structs import TopicPartition

from fintweet.worker.unreadable import unreadable_record


def crc_error(offset: int) -> CorruptRecordError:
    """kafka-python 3.0.12's wording."""
    return CorruptRecordError(f"Record batch for partition TopicPartition(topic='tweets', "
                              f"partition=3) at offset {offset} failed crc check")


def test_the_record_skipped_is_at_the_position_within_a_corrupt_batch() -> None:
    asked: list[TopicPartition] = []

    def position(tp: TopicPartition) -> int:
        asked.append(tp)
        return 12  # the batch starts at 10; 10 and 11 were skipped already

    record = unreadable_record(crc_error(10), position)
    assert asked == [TopicPartition("tweets", 3)]
    assert record is not None and (record.topic, record.partition, record.offset) == (
        "tweets", 3, 12)
    assert "failed crc check" in record.error


def test_a_position_before_the_reported_offset_skips_the_reported_record() -> None:
    """A fetch that began in a compacted gap: there are no records between the two, and
    fetching again would spin inside kafka-python."""
    record = unreadable_record(crc_error(40), lambda tp: 37)
    assert record is not None and record.offset == 40


def test_an_error_it_cannot_place_or_a_partition_no_longer_held_is_left_alone() -> None:
    def not_assigned(tp: TopicPartition) -> int:
        raise IllegalStateError("Partition is not assigned")  # kafka-python's, for a lost one

    assert unreadable_record(CorruptRecordError("something else"), lambda tp: 1) is None
    assert unreadable_record(crc_error(5), not_assigned) is None
