"""``fintweet dlq``: the worker's dead letters read back from the real broker, and requeued.

Dead letters are made the way production makes them, by a worker rejecting bad messages; two
are written by hand where no input makes a worker write them: one whose copy was cut to fit a
record, and one with a valid tweet inside (what a worker bug, rejecting a good tweet, leaves).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from kafka import KafkaConsumer, KafkaProducer

from fintweet.core.schema import DeadLetter
from tests.helpers import make_tweets, publish
from tests.test_worker import run_in_process, store_for

BAD = {  # key → message; each one a reason of its own
    "k-json": b"this is not json",
    "k-field": json.dumps({"id": "d2", "text": "ok", "created_at": "yesterday-ish"}).encode(),
    "k-empty": json.dumps({"id": "d3", "text": "   "}).encode(),
}


def cli(stack, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
           "FINTWEET_TOPIC": topic}
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", "dlq", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        return [(m.key, m.value) for m in consumer]
    finally:
        consumer.close()


def test_dead_letters_are_listed_and_a_fixed_one_requeued_is_counted_once(
        stack, topic, redis_client, models_dir) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    for key, value in BAD.items():
        producer.send(topic, key=key.encode(), value=value, partition=0)
    producer.flush()
    publish(stack.kafka_bootstrap, topic, make_tweets(1, prefix="good-"))
    run_in_process(stack, topic, models_dir, len(BAD) + 1)
    stats = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "stats"],
                           env={**os.environ, "FINTWEET_REDIS_URL": stack.redis_url},
                           capture_output=True, text=True, timeout=60, check=True)
    assert ("dead letters: 3 (empty_text 1, invalid_field 1, not_json 1; `fintweet dlq` lists "
            "them)") in stats.stdout.splitlines()
    # by hand: a valid tweet a worker bug rejected, and a letter whose copy was cut
    lost = make_tweets(1, prefix="lost-")[0]
    for letter in (
            DeadLetter(reason="internal_error", error="a bug", topic=topic, partition=0,
                       offset=90, key_b64=base64.b64encode(b"k-lost").decode(),
                       value_b64=base64.b64encode(lost.to_bytes()).decode()),
            DeadLetter(reason="internal_error", error="a bug", topic=topic, partition=0,
                       offset=91, value_b64="", value_size=9_000_000, truncated=True)):
        producer.send(f"{topic}.dlq", value=letter.model_dump_json().encode())
    producer.send(f"{topic}.dlq", value=b"something else")  # not a dead letter at all
    producer.flush()
    producer.close()

    listed = cli(stack, topic)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 6
    assert "(not a dead letter: 14 bytes)" in lines[-1]  # the last written
    by_reason = {line.split("  ")[1]: line for line in lines[:-1]}
    assert set(by_reason) == {"not_json", "invalid_field", "empty_text", "internal_error"}
    assert f"{topic}/0@0" in by_reason["not_json"]
    assert by_reason["not_json"].endswith("this is not json")
    assert by_reason["invalid_field"].split("  ")[3].startswith("created_at")
    assert listed.stderr.strip() == (
        f"5 dead letter(s) on {topic}.dlq (internal_error 2, not_json 1, invalid_field 1, "
        "empty_text 1) and 1 other record(s); 6 shown")
    typo = cli(stack, topic, "--reason", "not-json,empty_text")  # a typo matched nothing, silently
    assert typo.returncode == 0 and len(typo.stdout.splitlines()) == 1
    assert typo.stderr.splitlines()[0] == (
        "warning: no letter has reason not-json; the reasons there: empty_text, internal_error, "
        "invalid_field, not_json")
    empty = cli(stack, topic, "--reason", "")  # meant every letter before
    assert empty.returncode == 2 and "--reason is empty" in empty.stderr
    last_two = cli(stack, topic, "-n", "2").stdout.splitlines()
    assert last_two == lines[-2:] and "(no copy: cut to fit)" in last_two[0]

    as_json = cli(stack, topic, "--json", "--reason", "not_json,empty_text")
    letters = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [letter["reason"] for letter in letters] == ["not_json", "empty_text"]
    assert base64.b64decode(letters[0]["value_b64"]) == BAD["k-json"]
    assert letters[0]["dlq_partition"] >= 0 and letters[0]["dlq_offset"] >= 0

    typo = cli(stack, topic, "--requeue", "--reason", "not-json")  # sent nothing, exit 0
    assert typo.returncode == 2 and "nothing would be requeued; the reasons there: " in (
        typo.stderr)
    refused = cli(stack, topic, "--requeue")
    assert refused.returncode == 2 and "--requeue needs --reason" in refused.stderr

    before = store_for(stack).stats()
    requeued = cli(stack, topic, "--requeue", "--reason", "internal_error,invalid_field")
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stderr.strip() == (
        f"requeued 2 dead letter(s) (internal_error, invalid_field) to {topic}; 1 had no "
        "usable copy (cut to fit, or unreadable) and was left")
    on_topic = read_all(stack.kafka_bootstrap, topic)
    assert len(on_topic) == len(BAD) + 1 + 2  # keys and bytes as first received
    assert on_topic.count((b"k-field", BAD["k-field"])) == 2
    assert on_topic.count((b"k-lost", lost.to_bytes())) == 1

    run_in_process(stack, topic, models_dir, 2)
    after = store_for(stack).stats()
    assert after["processed"] == before["processed"] + 1  # the lost tweet, counted now
    assert store_for(stack).result(lost.id) is not None
    # Still bad: a second letter of the same message, which counts once (each run counted it
    # again, and the next requeue sent both letters' copies: 2, 4, 8, ... of one bad message).
    assert (after["dlq"], after["dlq_reasons"]) == (before["dlq"], before["dlq_reasons"])
    field_letters = cli(stack, topic, "--json", "--reason", "invalid_field").stdout.splitlines()
    first_letter = DeadLetter.model_validate(json.loads(field_letters[0]))
    assert [json.loads(line)["requeued_from"] for line in field_letters] == [
        None, f"{topic}/0/1/{first_letter.value_sha256[:16]}"]

    again = cli(stack, topic, "--requeue", "--reason", "invalid_field")
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip() == (
        f"requeued 1 dead letter(s) (invalid_field) to {topic}; 1 repeated a message sent once "
        "(requeued before, and still bad)")
    assert read_all(stack.kafka_bootstrap, topic).count((b"k-field", BAD["k-field"])) == 3
    run_in_process(stack, topic, models_dir, 1)
    assert store_for(stack).stats()["dlq"] == before["dlq"]


def test_an_empty_message_is_a_copy_that_can_be_requeued(stack, topic, models_dir) -> None:
    """b"" is what was received: it was listed as unreadable and left out of a requeue."""
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    producer.send(topic, key=b"k-blank", value=b"", partition=0)
    producer.flush()
    producer.close()
    run_in_process(stack, topic, models_dir, 1)
    listed = cli(stack, topic)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.rstrip().endswith("(empty message)"), listed.stdout
    requeued = cli(stack, topic, "--requeue", "--reason", "not_json")
    assert requeued.stderr.strip() == f"requeued 1 dead letter(s) (not_json) to {topic}"
    assert read_all(stack.kafka_bootstrap, topic).count((b"k-blank", b"")) == 2


def test_a_topic_without_dead_letters_lists_none_and_creates_nothing(stack, topic) -> None:
    result = cli(stack, "never-used")  # a typo of the topic read as "no dead letters" before
    assert result.returncode == 0, result.stderr
    said = result.stderr.strip()
    assert result.stdout == "" and said.startswith(
        f"no never-used.dlq on {stack.kafka_bootstrap}: no worker reading never-used has "
        "dead-lettered anything there; the dead-letter topics there: ")
    assert f"{topic}.dlq" in said.split("there: ")[-1].split(", ")  # the one that exists
    empty = cli(stack, topic)  # it exists, and holds nothing: `stats` may still count some
    assert empty.returncode == 0 and empty.stdout == ""
    assert empty.stderr.splitlines() == [
        f"0 dead letter(s) on {topic}.dlq; 0 shown",
        "(`fintweet stats` counts every letter ever recorded in Redis; a letter is listed here "
        "while the broker keeps it: past the topic's retention, or after a restart of the "
        "embedded broker, which keeps nothing, it is gone)"]
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        assert "never-used.dlq" not in consumer.topics()
    finally:
        consumer.close()


def test_letters_written_while_reading_are_left_for_the_next_read(stack, topic) -> None:
    """A requeue run while the workers ran read back the letters its own resends made (still
    bad, dead-lettered again) and resent those, without end."""
    from fintweet.ingest.dead_letters import read_dead_letters

    dlq = f"{topic}.dlq"
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    try:
        for i in range(5):
            producer.send(dlq, value=f"before {i}".encode(), partition=0).get(timeout=10)
        reading = read_dead_letters(stack.kafka_bootstrap, dlq)
        first = next(reading)  # the reader has started: what comes now is after its start
        for i in range(5):
            producer.send(dlq, value=f"after {i}".encode(), partition=0).get(timeout=10)
        seen = [first.raw, *(stored.raw for stored in reading)]
    finally:
        producer.close()
    assert seen == [f"before {i}".encode() for i in range(5)]
    assert len(list(read_dead_letters(stack.kafka_bootstrap, dlq))) == 10  # the next read


def test_a_batch_of_many_letters_is_read_whole(stack, topic) -> None:
    """The embedded broker gives as a partition's end its last batch's first offset + 1; a
    batch of 800 letters split over two polls (500 a poll) lost the second slice."""
    from fintweet.ingest.dead_letters import read_dead_letters

    dlq = f"{topic}.dlq"
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all",
                             linger_ms=500, batch_size=1 << 20)
    try:
        for i in range(800):  # one batch: sent together, within the linger
            producer.send(dlq, value=f"letter {i}".encode(), partition=0)
        producer.flush()
    finally:
        producer.close()
    raws = [stored.raw for stored in read_dead_letters(stack.kafka_bootstrap, dlq)]
    assert raws == [f"letter {i}".encode() for i in range(800)]
