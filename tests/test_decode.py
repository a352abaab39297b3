"""Decoding records into tweets or dead letters, without a broker: each record parsed alone, every
poison message a dead letter with a reason, never an exception out of ``decode_records``; and the
schema's bounds on ids, labels, timestamps and NULs."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from fintweet.core.schema import MAX_DEAD_LETTER_COPY, REQUEUED_FROM_HEADER, Tweet
from fintweet.worker import decode
from fintweet.worker.decode import decode_records


@dataclass
class Record:  # the fields of kafka-python's ConsumerRecord the decoder reads
    value: object
    offset: int = 0
    key: bytes | None = b"k"
    topic: str = "tweets"
    partition: int = 0
    headers: list | None = None


def valid(i: int, **extra: object) -> bytes:
    return json.dumps({"id": f"v{i}", "text": f"valid tweet {i}", "created_at":
                       "2026-01-01T00:00:00Z", "source": "replay", **extra}).encode()


def records(values: list[object]) -> list[Record]:
    return [Record(value, offset=i) for i, value in enumerate(values)]


def reasons(values: list[object]) -> tuple[list[str], dict[int, str]]:
    decoded, rejected = decode_records(records(values))
    return ([d.tweet.id for d in decoded],
            {r.letter.offset: r.letter.reason for r in rejected})


def test_records_that_are_not_json_alone_cannot_combine_into_tweets():
    # Joined as "[" + ",".join(values) + "]" these three parse; alone, none does.
    spliced = [b'{"id":"a1","text":"A","created_at":"2026-01-01T00:00:00Z","source":"replay"},'
               b'{"id":"b1","text":"B","created_at":"2026-01-01T00:00:00Z","source":"replay"}',
               b'{"id":"c1","text":"C","created_at":"2026-01-01T00:00:00Z","source":"replay",'
               b'"z":[{}',
               b'{}]}']
    values = [valid(0), *spliced, valid(1), valid(2)]
    ids, bad = reasons(values)
    assert sorted(ids) == ["v0", "v1", "v2"]
    assert bad == {1: "not_json", 2: "not_json", 3: "not_json"}


def test_deeply_nested_json_is_a_dead_letter_not_a_recursion_error():
    deep = b'{"id":"d","text":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    ids, bad = reasons([valid(0), deep, valid(1)])
    assert sorted(ids) == ["v0", "v1"]
    assert bad == {1: "not_json"}


@pytest.mark.parametrize("text", ["   ", "&nbsp;", "&amp;nbsp; \u00a0", "&#32;",
                                  "\u200b", "\ufeff \u200d\u2060", "&#8203;", "\u00ad\u200e"])
def test_text_that_decodes_to_nothing_is_an_empty_text_dead_letter(text):
    """The worker stores and classifies the decoded text: "&nbsp;" would be stored empty, and
    a zero-width space was classified as news."""
    ids, bad = reasons([valid(0), valid(1, text=text)])
    assert ids == ["v0"] and bad == {1: "empty_text"}


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                                   "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"])
def test_timestamps_outside_the_window_are_dead_letters_not_overflow_errors(stamp):
    value = json.dumps({"id": "o1", "text": "t", "created_at": stamp, "source": "replay"})
    ids, bad = reasons([valid(0), value.encode()])
    assert ids == ["v0"] and bad == {1: "invalid_field"}


def test_an_oversized_dead_letter_keeps_a_truncated_copy_its_size_and_sha256():
    huge = json.dumps({"id": "h", "text": "x" * 1_000_000, "created_at": "2026-01-01T00:00:00Z",
                       "source": "replay"}).encode()
    decoded, rejected = decode_records([Record(huge)])
    assert not decoded
    letter = rejected[0].letter
    assert letter.reason == "text_too_long"
    assert letter.truncated and letter.value_size == len(huge)
    assert letter.value_sha256 == hashlib.sha256(huge).hexdigest()
    assert base64.b64decode(letter.value_b64) == huge[:MAX_DEAD_LETTER_COPY]
    assert len(letter.model_dump_json()) < 1_000_000  # fits the default Kafka record limit
    small = decode_records([Record(b"nope")])[1][0].letter
    assert not small.truncated and base64.b64decode(small.value_b64) == b"nope"


def test_any_exception_while_validating_becomes_an_internal_error_dead_letter(monkeypatch):
    original = Tweet.model_validate

    class Boom(TypeError):
        pass

    def exploding(obj, *args, **kwargs):
        if obj.get("id") == "v1":
            raise Boom("validator bug")
        return original(obj, *args, **kwargs)

    class FailingBatch:
        def validate_python(self, objects):
            raise OverflowError("batch validator bug")

    monkeypatch.setattr(decode, "_BATCH", FailingBatch())
    monkeypatch.setattr(Tweet, "model_validate", exploding)
    decoded, rejected = decode_records(records([valid(0), valid(1), b"[1]", None]))
    assert [d.tweet.id for d in decoded] == ["v0"]
    by_offset = {r.letter.offset: r.letter for r in rejected}
    assert by_offset[1].reason == "internal_error" and "Boom" in by_offset[1].error
    assert by_offset[2].reason == "not_an_object"
    assert by_offset[3].reason == "not_json"  # a tombstone


def test_a_failure_building_the_dead_letter_still_yields_a_dead_letter():
    weird = Record(b"not json", key=object())  # type: ignore[arg-type]  # bytes() raises
    decoded, rejected = decode_records([weird])
    assert not decoded and rejected[0].letter.reason == "internal_error"
    assert "TypeError" in rejected[0].letter.error


def test_a_failure_building_the_dead_letter_for_a_validator_bug_still_yields_one(monkeypatch):
    """The one-by-one fallback's own dead letter is guarded like every other: it raised out of
    ``decode_records`` (and so stopped the worker) when the record's key was not bytes."""
    def exploding(obj, *args, **kwargs):
        raise OverflowError("validator bug")

    class FailingBatch:
        def validate_python(self, objects):
            raise OverflowError("batch validator bug")

    monkeypatch.setattr(decode, "_BATCH", FailingBatch())
    monkeypatch.setattr(Tweet, "model_validate", exploding)
    weird = Record(valid(0), key=object())  # type: ignore[arg-type]  # bytes() raises
    decoded, rejected = decode_records([weird, Record(valid(1), offset=1)])
    assert not decoded
    assert [r.letter.reason for r in rejected] == ["internal_error", "internal_error"]
    assert rejected[0].record is weird
    assert "TypeError while building the dead letter" in rejected[0].letter.error
    assert "OverflowError while validating" in rejected[1].letter.error


def test_one_bad_record_costs_only_itself():
    values = [valid(i) for i in range(50)]
    values[17] = valid(17, label=True)
    values[33] = valid(33, id="bad:id")
    ids, bad = reasons(values)
    assert len(ids) == 48 and bad == {17: "invalid_field", 33: "invalid_field"}


# -- the schema ---------------------------------------------------------------------------------

BASE = {"text": "ok", "created_at": "2026-01-01T00:00:00Z", "source": "replay"}


@pytest.mark.parametrize("tweet_id", ["   ", "a:b", "a{b}", "a*", "", "x" * 65, "é", "a b"])
def test_ids_outside_the_safe_alphabet_are_refused(tweet_id):
    with pytest.raises(ValidationError):
        Tweet.model_validate({**BASE, "id": tweet_id})


@pytest.mark.parametrize("tweet_id", ["1734567890123456789", "r0123abcdef", "row-1", "a_b.c"])
def test_ids_from_x_and_replays_are_accepted(tweet_id):
    assert Tweet.model_validate({**BASE, "id": tweet_id}).id == tweet_id


@pytest.mark.parametrize("field", ["label", "sentiment_label"])
@pytest.mark.parametrize("value", [True, False, "1", 1.0])
def test_labels_are_strict_integers(field, value):
    with pytest.raises(ValidationError):
        Tweet.model_validate({**BASE, "id": "a", field: value})
    with pytest.raises(ValidationError):
        Tweet.model_validate_json(json.dumps({**BASE, "id": "a", field: value}))
    assert getattr(Tweet.model_validate({**BASE, "id": "a", field: 1}), field) == 1


def test_nul_bytes_in_text_are_refused():
    with pytest.raises(ValidationError, match="NUL"):
        Tweet.model_validate({**BASE, "id": "a", "text": "bad\x00text"})
    ids, bad = reasons([json.dumps({**BASE, "id": "n", "text": "a\u0000b"}).encode()])
    assert ids == [] and bad == {0: "invalid_field"}


def test_timestamps_are_converted_to_utc_inside_the_window():
    tweet = Tweet.model_validate({**BASE, "id": "a", "created_at": "2026-03-01T10:00:00+05:00"})
    assert tweet.created_at == datetime(2026, 3, 1, 5, tzinfo=UTC)
    late = Tweet.model_validate({**BASE, "id": "a", "created_at": "2100-01-01T04:00:00+05:00"})
    assert late.created_at.year == 2099  # the window is checked in UTC
    with pytest.raises(ValidationError):
        Tweet.model_validate({**BASE, "id": "a", "created_at": "2100-01-01T06:00:00+05:00"})


def test_a_dead_letter_the_broker_cannot_take_whole_goes_out_slim(stack, topic):
    """A letter over the producer's record limit is sent again without its copy of the value
    (truncated, size and SHA-256 kept) instead of being retried for ever."""
    from kafka import KafkaConsumer

    from fintweet.core.producer import TweetProducer
    from fintweet.worker.sinks import Batch, DeadLetterSink

    value = json.dumps({"id": "b", "text": "x" * 6000, "created_at": "2026-01-01T00:00:00Z",
                        "source": "replay", "lang": "??"}).encode()
    rejected = decode_records([Record(value, topic=topic)])[1]
    assert len(rejected[0].letter.model_dump_json()) > 8000
    with TweetProducer(stack.kafka_bootstrap, topic, max_request_size=4096) as producer:
        sink = DeadLetterSink(producer, f"{topic}.dlq")
        sink.write(Batch({}, [], rejected, None))
        sink.flush()
    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    letters = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert len(letters) == 1
    assert letters[0]["truncated"] and letters[0]["value_b64"] == ""
    assert letters[0]["value_sha256"] == hashlib.sha256(value).hexdigest()


def test_a_dead_letter_retried_after_an_outage_goes_out_on_a_new_client(tmp_path):
    """kafka-python's producer whose batch expired while the broker was stopped never sent
    again: the worker's retry of the dead letters failed for ever, holding every batch behind
    it. The broker is the test's own, stopped (SIGSTOP) and resumed: its topics stay."""
    import os
    import signal

    from kafka import KafkaConsumer

    from fintweet.core.producer import PublishError, TweetProducer
    from fintweet.devstack.stack import EmbeddedStack
    from fintweet.worker.sinks import Batch, DeadLetterSink

    quick = {"max_block_ms": 2_000, "request_timeout_ms": 1_000, "delivery_timeout_ms": 3_000}
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0,
                       topics=("t", "t.dlq")) as own, TweetProducer(
            own.kafka_bootstrap, "t.dlq", **quick) as producer:
        sink = DeadLetterSink(producer, "t.dlq")
        sink.write(Batch({}, [], decode_records([Record(b"first", topic="t")])[1], None))
        sink.flush()
        broker = own.pids()["kafka"]
        os.kill(broker, signal.SIGSTOP)
        try:
            sink.write(Batch({}, [], decode_records([Record(b"second", topic="t")])[1], None))
            with pytest.raises(PublishError):
                sink.flush()
        finally:
            os.kill(broker, signal.SIGCONT)
        sink.flush()  # the worker's retry: the letter again, now acknowledged
        consumer = KafkaConsumer("t.dlq", bootstrap_servers=own.kafka_bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        letters = [json.loads(m.value) for m in consumer]
        consumer.close()
    copies = {base64.b64decode(letter["value_b64"]) for letter in letters}
    assert copies == {b"first", b"second"}


def test_a_dead_letter_is_one_message_redelivered_or_requeued_not_one_offset():
    """Redis counts a dead letter once by its uid. By offset alone, a broker or topic reset
    (offsets from 0 again) made a new bad message at an offset seen before pass for a
    redelivery, never counted; a requeued copy names its first letter and stays that one."""
    def uid(value: bytes, offset: int = 7, headers: list | None = None) -> str:
        record = Record(value, offset=offset, headers=headers)
        return decode_records([record])[1][0].uid

    first = uid(b"not json")
    assert first.startswith("tweets/0/7/") and uid(b"not json") == first  # redelivered
    assert uid(b"other bytes") != first  # a new message at a reused offset
    requeued = [(REQUEUED_FROM_HEADER, first.encode())]
    assert uid(b"not json", offset=99, headers=requeued) == first
    forged = [(REQUEUED_FROM_HEADER, b"x y/1/2")]  # no uid: the record's own is kept
    assert uid(b"not json", offset=99, headers=forged).startswith("tweets/0/99/")
