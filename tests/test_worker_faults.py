"""Faults the worker must survive, against the real broker and the real Redis: poison messages of
every kind mixed with valid tweets, a group join that takes longer than --until-idle, members
killed while the group forms, a group in which this worker gets no partition (it must say so),
and no broker at all."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from fintweet.core.errors import UserError
from fintweet.core.producer import TweetProducer
from fintweet.core.store import ResultStore
from fintweet.devstack.process import free_port
from fintweet.models import load
from fintweet.worker.app import Worker
from fintweet.worker.consumer import FAST_GROUP_SETTINGS
from tests.helpers import make_tweets, publish, wait_for, worker_env
from tests.rule_model import RuleModel
from tests.test_worker import settings_for

STAMP = "2026-01-01T00:00:00Z"


def tweet_json(tweet_id: str, **fields: object) -> bytes:
    return json.dumps({"id": tweet_id, "text": "a tweet", "created_at": STAMP,
                       "source": "replay", **fields}).encode()


def poison_messages() -> dict[str, bytes | None]:
    """One of each class the fault-injection run found, plus random and broken bytes."""
    rng = random.Random(13)
    valid = tweet_json("truncme", text="cut short")
    return {
        "deep_json": b'{"id":"d","text":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "year_1": tweet_json("y1", created_at="0001-01-01T00:00:00+05:00"),
        "year_9999": tweet_json("y9999", created_at="9999-12-31T23:59:59-05:00"),
        "million_chars": tweet_json("big", text="x" * 1_000_000),
        "nul_text": tweet_json("nul", text="bad\x00text"),
        "id_spaces": tweet_json("   "),
        "id_colon": tweet_json("a:b"),
        "id_brace": tweet_json("a{b}"),
        "id_star": tweet_json("a*"),
        "label_true": tweet_json("lt", label=True),
        "label_string": tweet_json("ls", label="5"),
        "sentiment_true": tweet_json("st", sentiment_label=True),
        "random_1": b"\xfe" + rng.randbytes(64),
        "random_2": b"\xfe" + rng.randbytes(300),
        "truncated_1": valid[: len(valid) // 2],
        "truncated_2": valid[:-1],
        "splice_1": tweet_json("s1")[:-1] + b"}," + tweet_json("s2"),
        "splice_2": tweet_json("s3")[:-1] + b',"z":[{}',
        "splice_3": b"{}]}",
        "tombstone": None,
        "not_an_object": b"[1,2,3]",
        "invalid_utf8": b'{"id":"u","text":"\xff\xfe","source":"replay"}',
    }


def test_fuzzed_messages_become_dead_letters_and_every_valid_tweet_is_processed(
        stack, topic, redis_client, models_dir):
    poison = poison_messages()
    valid = make_tweets(len(poison) + 1, prefix="ok")
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all",
                             max_request_size=2_000_000)
    sent = 0
    for i, tweet in enumerate(valid):  # a valid tweet on each side of every bad one
        producer.send(topic, key=tweet.id.encode(), value=tweet.to_bytes(), partition=i % 4)
        sent += 1
        if i < len(poison):
            name = list(poison)[i]
            producer.send(topic, key=name.encode(), value=poison[name], partition=i % 4)
            sent += 1
    huge_key = b"K" * 900_000  # its dead letter must not carry it whole
    producer.send(topic, key=huge_key, value=b"not json", partition=0)
    sent += 1
    producer.flush()
    producer.close()

    model = load(models_dir / "ann")
    worker = Worker(settings_for(stack, topic), model, consumer_options=FAST_GROUP_SETTINGS,
                    until_idle=60)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    store = ResultStore.from_url(stack.redis_url)
    try:  # stopped on any way out: left running it would write into the shared Redis
        wait_for(lambda: worker.stats.consumed >= sent, 120, f"{sent} records consumed")
        assert runner.is_alive(), "the worker exited"
    finally:
        worker.stopping.set()
        runner.join(timeout=30)

    stats = store.stats()
    assert stats["processed"] == len(valid)
    assert all(store.result(t.id) is not None for t in valid)
    assert stats["dlq"] == len(poison) + 1
    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             fetch_max_bytes=4_000_000, max_partition_fetch_bytes=4_000_000)
    letters = {m.key.decode() if m.key else "tombstone": json.loads(m.value) for m in consumer}
    consumer.close()
    assert set(letters) == set(poison) | {"K" * 1024}
    assert all(letter["reason"] and letter["error"] for letter in letters.values())
    assert letters["million_chars"]["reason"] == "text_too_long"
    assert letters["million_chars"]["truncated"] is True
    assert letters["deep_json"]["reason"] == "not_json"
    assert letters["year_1"]["reason"] == letters["year_9999"]["reason"] == "invalid_field"


def test_until_idle_counts_from_the_assignment_so_a_slow_join_consumes_everything(
        stack, topic, redis_client, models_dir, tmp_path):
    total = 3000
    publish(stack.kafka_bootstrap, topic, make_tweets(total))
    env = worker_env(stack, topic, models_dir, group=f"{topic}-idle")
    log = tmp_path / "worker.log"
    # The production group settings (10 s session): the join alone takes longer than 3 s.
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "fintweet.cli.main", "worker", "--until-idle", "3", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=out)
        stdout, _ = worker.communicate(timeout=180)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert json.loads(stdout)["consumed"] == total, log.read_text()[-3000:]
    assert ResultStore.from_url(stack.redis_url).stats()["processed"] == total


class TansuGroupAdmin(KafkaAdminClient):
    """An admin client whose ``describe_groups`` works against Tansu: Tansu fills each group's
    authorized operations with every bit set (whether or not they were asked for), and
    kafka-python, which knows no ACL operation 15, fails the whole describe; nothing here needs
    them, so they are dropped unread."""

    def _process_acl_operations(self, obj: dict) -> dict:
        obj.pop("authorized_operations", None)
        return obj


def wait_for_new_members(admin: KafkaAdminClient, group: str, known: set[str], count: int,
                         timeout: float) -> set[str]:
    """Wait until ``group`` lists ``count`` member ids not in ``known`` (members that have sent
    JoinGroup), add them to ``known`` and return them. The ids of members killed earlier stay
    listed until their session times out, so new ones are told apart by id, not counted."""
    new: set[str] = set()

    def joined() -> bool:
        members = admin.describe_groups([group])[group]["members"]
        new.update(m["member_id"] for m in members if m["member_id"] not in known)
        return len(new) >= count

    wait_for(joined, timeout, f"{count} new members in group {group}")
    known.update(new)
    return new


def test_survivors_make_progress_when_members_are_killed_while_the_group_forms(
        stack, topic, redis_client, models_dir, tmp_path, workers):
    total = 2000
    group = f"{topic}-storm"
    env = worker_env(stack, topic, models_dir, group=group)
    log = tmp_path / "workers.log"
    store = ResultStore.from_url(stack.redis_url)
    publish(stack.kafka_bootstrap, topic, make_tweets(total // 2))
    admin = TansuGroupAdmin(bootstrap_servers=stack.kafka_bootstrap)
    try:
        known: set[str] = set()
        survivor = workers.start(env, log=log)
        wait_for_new_members(admin, group, known, 1, 120)
        for _round in range(3):  # members that join, then die while the group rebalances
            doomed = [workers.start(env, log=log) for _ in range(2)]
            # Not a fixed sleep: on a loaded machine importing the worker alone takes longer
            # than one, and members killed before they joined test nothing. Listed means they
            # sent JoinGroup; whether they also finished SyncGroup varies from round to round,
            # so the rounds kill members at either step of the rebalance.
            wait_for_new_members(admin, group, known, len(doomed), 120)
            for member in doomed:
                member.send_signal(signal.SIGKILL)
                member.wait(timeout=10)
    finally:
        admin.close()
    publish(stack.kafka_bootstrap, topic, make_tweets(total)[total // 2:])
    wait_for(lambda: store.stats()["processed"] >= total, 150, f"{total} tweets processed")
    assert survivor.poll() is None, "the survivor exited"
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert store.stats()["processed"] == total


@contextlib.contextmanager
def partition_held_by_another_member(stack, topic: str, group: str) -> Iterator[KafkaConsumer]:
    """A one-partition topic whose partition a first member of ``group`` holds (polled in a
    thread) for the block. The range assignor gives the one partition to the first member id
    in sorted order; member ids start with the client id, and "0-" sorts before the worker's
    "fintweet-worker-"."""
    stack.create_topic(topic, partitions=1)
    holder = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                           client_id="0-holder", enable_auto_commit=False, **FAST_GROUP_SETTINGS)
    keep_polling = threading.Event()

    def hold() -> None:
        while not keep_polling.is_set():
            holder.poll(timeout_ms=100)

    holding = threading.Thread(target=hold, daemon=True)
    holding.start()
    try:
        wait_for(lambda: bool(holder.assignment()), 30, "the first member to hold the partition")
        yield holder
    finally:
        keep_polling.set()
        holding.join(timeout=5)
        holder.close(autocommit=False)


def test_a_worker_without_partitions_says_so_and_does_not_count_it_as_idle(
        stack, redis_client, models_dir):
    from fintweet.monitoring.worker import WorkerMetrics

    topic = f"one-partition-{int(time.time() * 1000)}"
    group = f"{topic}-g"
    with partition_held_by_another_member(stack, topic, group):
        metrics = WorkerMetrics()
        metrics.set_consumer_lag({0: 42})  # as if left from when this worker held the partition
        worker = Worker(settings_for(stack, topic, group=group), load(models_dir / "ann"),
                        consumer_options=FAST_GROUP_SETTINGS, metrics=metrics, until_idle=1,
                        stuck_after_s=3)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            wait_for(lambda: not worker.ready()[0], 60,
                     "/readyz to report the missing partitions")
            ok, reason = worker.ready()
            assert not ok and reason.startswith("no partitions assigned for ")
            assert int(reason.split()[4]) >= 3
            time.sleep(2)  # twice --until-idle, all of it without partitions
            assert runner.is_alive(), "--until-idle counted time without partitions as idle"
            assert metrics.registry.get_sample_value("fintweet_worker_assigned_partitions") == 0
            assert metrics.registry.get_sample_value("fintweet_worker_unassigned_seconds") >= 3
            # no lag reported for a partition another member owns
            assert metrics.registry.get_sample_value("fintweet_consumer_lag",
                                                     {"partition": "0"}) is None
        finally:
            worker.stopping.set()
            runner.join(timeout=30)


def test_a_hung_broker_makes_the_worker_unready_until_it_answers_again(tmp_path, models_dir):
    """A stopped broker process still has its port accepted by the kernel, and the consumer
    keeps its assignment and returns empty polls: /readyz answered 200 all along. The broker
    is the test's own, so stopping it costs no other test its stack."""
    from fintweet.devstack.stack import EmbeddedStack
    from fintweet.monitoring.worker import WorkerMetrics

    metrics = WorkerMetrics()

    def heartbeat_age() -> float:
        return metrics.registry.get_sample_value("fintweet_worker_heartbeat_age_seconds") or 0

    session_s = FAST_GROUP_SETTINGS["session_timeout_ms"] / 1000
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0,
                       topics=("hung",)) as own:
        worker = Worker(settings_for(own, "hung"), RuleModel(),
                        consumer_options=FAST_GROUP_SETTINGS, metrics=metrics)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        broker = own.pids()["kafka"]
        try:
            wait_for(lambda: worker.ready()[0] and worker.heartbeat_age is not None, 60,
                     "the worker to join and send heartbeats")
            os.kill(broker, signal.SIGSTOP)
            try:
                wait_for(lambda: worker.ready()[1].startswith(
                    "kafka: no heartbeat to the group coordinator for "), 30,
                    "/readyz to name the silent heartbeats")
                assert not worker.ready()[0]
                assert heartbeat_age() >= session_s  # what the alert reads
            finally:
                os.kill(broker, signal.SIGCONT)
            wait_for(lambda: worker.ready()[0], 90, "/readyz to recover with the broker")
            wait_for(lambda: heartbeat_age() < session_s, 30, "the gauge to fall back")
        finally:
            worker.stopping.set()
            runner.join(timeout=30)


def test_a_bounded_run_ends_after_until_unassigned_without_partitions(
        stack, redis_client, models_dir):
    """The demo's worker: a group that never gives it a partition ends the run (and says so
    in its stats) instead of keeping it waiting, silent, for ever."""
    topic = f"held-{int(time.time() * 1000)}"
    group = f"{topic}-g"
    with partition_held_by_another_member(stack, topic, group):
        worker = Worker(settings_for(stack, topic, group=group), load(models_dir / "ann"),
                        consumer_options=FAST_GROUP_SETTINGS, until_idle=1, until_unassigned=3)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        runner.join(timeout=60)
        ended = not runner.is_alive()
        worker.stopping.set()  # a run that did not end is stopped before the test fails
        runner.join(timeout=30)
        assert ended, "the run did not end without partitions"
        assert worker.stats.stopped_unassigned and worker.stats.consumed == 0


def test_the_broker_probe_reaches_an_ipv6_bootstrap_address() -> None:
    """Config accepts "[::1]:port"; the probe behind `fintweet worker`'s start-up check and its
    /readyz passed the brackets on to the socket and never connected."""
    import socket

    from fintweet.core.kafka_errors import broker_accepts

    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        port = listener.getsockname()[1]
        assert broker_accepts(f"[::1]:{port}")
    assert not broker_accepts(f"[::1]:{port}")  # closed now
    assert not broker_accepts("no port")


def test_worker_without_a_broker_fails_fast_with_one_line(models_dir):
    # "Fast" is the timeout: a worker that kept retrying would still be running at 60 s.
    result = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "worker", "--bootstrap",
         f"127.0.0.1:{free_port()}", "--models", str(models_dir)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Kafka" in lines[0], result.stderr


class FlakySink:
    """An extra destination whose first flushes fail as an outage would."""

    name = "flaky sink"
    retry_on = (ConnectionError,)

    def __init__(self) -> None:
        self.written: list[int] = []
        self.failures_left = 2
        self.flushes = 0

    def write(self, batch) -> None:
        self.written.append(batch.size)

    def flush(self) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("sink down")
        self.flushes += 1

    def close(self) -> None:
        return None


def test_an_added_sink_gets_every_batch_and_its_outage_is_retried_before_the_commit(
        stack, topic, redis_client, models_dir):
    total = 120
    publish(stack.kafka_bootstrap, topic, make_tweets(total))
    sink = FlakySink()
    worker = Worker(settings_for(stack, topic), load(models_dir / "ann"),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=2, extra_sinks=[sink])
    stats = worker.run()
    assert stats.consumed == total and sum(sink.written) == total
    assert sink.failures_left == 0 and sink.flushes >= len(sink.written)
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=f"{topic}-g",
                             enable_auto_commit=False)
    from kafka.structs import TopicPartition

    committed = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4))
    consumer.close()
    assert committed == total


class OverlapProbe:
    """A sink that holds each write until the model has been called for a later batch (at most
    5 s) and records whether that happened while it waited."""

    name = "overlap probe"
    retry_on = (ConnectionError,)

    def __init__(self, model) -> None:
        self.model = model
        self.overlapped: list[bool] = []

    def write(self, batch) -> None:
        next_batch = len(self.overlapped) + 2  # model calls once the next batch is classified
        deadline = time.monotonic() + 5
        while len(self.model.calls) < next_batch and time.monotonic() < deadline:
            time.sleep(0.01)
        self.overlapped.append(len(self.model.calls) >= next_batch)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def test_the_next_batch_is_classified_while_the_last_one_is_written(stack, topic, redis_client):
    """The sinks write on their own thread while the worker classifies the next batch; commits
    still follow the writes, so every offset is committed and every tweet counted once."""
    from kafka.structs import TopicPartition

    from tests.rule_model import RuleModel

    total = 600
    publish(stack.kafka_bootstrap, topic, make_tweets(total))
    model = RuleModel()
    probe = OverlapProbe(model)
    worker = Worker(settings_for(stack, topic, batch_size=100), model,
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=2, extra_sinks=[probe])
    stats = worker.run()
    assert stats.consumed == total and stats.classified == total
    assert len(probe.overlapped) >= 6
    assert all(probe.overlapped[:-1])  # only the last batch had no next one to overlap
    assert ResultStore.from_url(stack.redis_url).stats()["processed"] == total
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=f"{topic}-g",
                             enable_auto_commit=False)
    committed = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4))
    consumer.close()
    assert committed == total



class RecordingSink:
    """An extra destination that keeps the ids of every tweet it is given."""

    name = "recording sink"
    retry_on = (ConnectionError,)

    def __init__(self) -> None:
        self.ids: list[str] = []

    def write(self, batch) -> None:
        self.ids += [decoded.tweet.id for decoded in batch.decoded]

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class DownUntilStopped(RecordingSink):
    """Down for the first batch until the worker has classified the next one; then it asks the
    worker to stop (so that write gives up) and is up again: the moment at which the batch
    behind could be written and committed past the abandoned one."""

    def __init__(self, worker_box: list, model) -> None:
        super().__init__()
        self.worker_box, self.model = worker_box, model
        self.failed = False

    def write(self, batch) -> None:
        if not self.failed:
            self.failed = True
            deadline = time.monotonic() + 10
            while len(self.model.calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.worker_box[0].stopping.set()
            raise ConnectionError("sink down")
        super().write(batch)


def test_a_batch_given_up_while_stopping_is_not_skipped_by_a_later_commit(
        stack, topic, redis_client):
    """Stopping during an outage abandons the batch being written; the batch already classified
    behind it must not be written and committed instead, or its offsets would skip the first.
    Nothing is committed, and the next worker of the group gets every tweet."""
    from kafka.structs import TopicPartition

    from tests.rule_model import RuleModel

    total = 400
    publish(stack.kafka_bootstrap, topic, make_tweets(total))
    model = RuleModel()
    box: list = []
    sink = DownUntilStopped(box, model)
    worker = Worker(settings_for(stack, topic, batch_size=100), model,
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=2, extra_sinks=[sink])
    box.append(worker)
    worker.run()
    assert len(model.calls) >= 2  # a second batch was classified behind the abandoned one
    assert sink.ids == []  # and never handed to the sinks
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=f"{topic}-g",
                             enable_auto_commit=False)
    committed = [consumer.committed(TopicPartition(topic, p)) for p in range(4)]
    consumer.close()
    assert committed == [None] * 4

    recorder = RecordingSink()
    stats = Worker(settings_for(stack, topic, batch_size=100), RuleModel(),
                   consumer_options=FAST_GROUP_SETTINGS, until_idle=2,
                   extra_sinks=[recorder]).run()
    assert stats.consumed == total
    assert sorted(recorder.ids) == sorted(t.id for t in make_tweets(total))


class BrokenModel:
    """Classifies one batch, then fails as a model bug would."""

    name = "broken"
    version = "test"

    def __init__(self) -> None:
        from tests.rule_model import RuleModel

        self.rules = RuleModel()

    def predict_proba(self, texts):
        if self.rules.calls:
            raise RuntimeError("model bug")
        return self.rules.predict_proba(texts)


class AlwaysDown(RecordingSink):
    def write(self, batch) -> None:
        raise ConnectionError("sink down")


def test_an_error_while_a_write_waits_out_an_outage_ends_the_worker(
        stack, topic, redis_client):
    """The model fails on the second batch while the first one's write is retrying through an
    outage that does not end: the worker gives the write up and raises the model's error,
    instead of waiting for ever in close()."""
    publish(stack.kafka_bootstrap, topic, make_tweets(300))
    worker = Worker(settings_for(stack, topic, batch_size=100), BrokenModel(),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=2, extra_sinks=[AlwaysDown()])
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker hung in close()"
    assert len(outcome) == 1 and str(outcome[0]) == "model bug"


def test_a_worker_that_loses_some_partitions_stops_reporting_their_lag(
        stack, redis_client, models_dir):
    from fintweet.monitoring.worker import WorkerMetrics

    topic = f"two-partitions-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=2)
    group = f"{topic}-g"
    publish(stack.kafka_bootstrap, topic, make_tweets(200))
    metrics = WorkerMetrics()
    worker = Worker(settings_for(stack, topic, group=group), load(models_dir / "ann"),
                    consumer_options=FAST_GROUP_SETTINGS, metrics=metrics)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()

    def lag(partition: int) -> float | None:
        return metrics.registry.get_sample_value("fintweet_consumer_lag",
                                                 {"partition": str(partition)})

    keep_polling = threading.Event()
    holder = None
    holding = None
    try:
        wait_for(lambda: worker.stats.classified == 200, 60, "the worker to classify the 200")
        wait_for(lambda: lag(0) is not None and lag(1) is not None, 30, "lag for both partitions")
        # A second member joins and the range assignor gives it one partition; nothing more is
        # published, so the worker's remaining partition stays quiet (no batch to set lag).
        holder = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                               client_id="0-holder", enable_auto_commit=False,
                               **FAST_GROUP_SETTINGS)

        def hold() -> None:
            while not keep_polling.is_set():
                holder.poll(timeout_ms=100)

        holding = threading.Thread(target=hold, daemon=True)
        holding.start()
        wait_for(lambda: len(holder.assignment()) == 1, 60, "the rebalance to split the two")
        lost = next(iter(holder.assignment())).partition
        wait_for(lambda: lag(lost) is None, 30, f"the lag of partition {lost} to be dropped")
        assert lag(1 - lost) is not None  # the partition it kept
    finally:
        worker.stopping.set()
        runner.join(timeout=30)
        keep_polling.set()
        if holding is not None:
            holding.join(timeout=5)
        if holder is not None:
            holder.close(autocommit=False)


def test_a_member_joining_while_tweets_flow_does_not_stall_the_worker(stack, redis_client):
    """While tweets flow, a batch is always being written when the next poll runs; a poll can
    start a rebalance and return before it completes, and kafka-python then refuses the written
    batch's commit until a later poll finishes the join. The worker retried that commit without
    polling, for ever: it classified nothing more, and after the newcomer left no one consumed."""
    topic = f"flowing-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=2)
    group = f"{topic}-g"
    store = ResultStore.from_url(stack.redis_url)
    worker = Worker(settings_for(stack, topic, group=group, batch_size=64), RuleModel(),
                    consumer_options=FAST_GROUP_SETTINGS)
    runner = threading.Thread(target=worker.run, daemon=True)
    stop_producing, stop_holding = threading.Event(), threading.Event()
    published = [0]

    def produce() -> None:
        with TweetProducer(stack.kafka_bootstrap, topic) as producer:
            round_ = 0
            while not stop_producing.is_set():
                for tweet in make_tweets(10, prefix=f"flow{round_}-"):
                    producer.publish(tweet)
                producer.flush()
                published[0] += 10
                round_ += 1
                time.sleep(0.05)

    newcomer = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                             client_id="0-newcomer", enable_auto_commit=False,
                             **FAST_GROUP_SETTINGS)

    def hold() -> None:
        while not stop_holding.is_set():
            newcomer.poll(timeout_ms=100)
        newcomer.close(autocommit=False)  # leaves: its partitions go back to the worker

    producing = threading.Thread(target=produce, daemon=True)
    holding = threading.Thread(target=hold, daemon=True)
    try:
        runner.start()
        producing.start()
        wait_for(lambda: worker.stats.batches >= 20, 60, "the worker to be busy")
        holding.start()
        wait_for(lambda: bool(newcomer.assignment()), 60, "the newcomer to get a partition")
        time.sleep(3.0)
        stop_holding.set()
        holding.join(timeout=30)
        time.sleep(2.0)
        stop_producing.set()
        producing.join(timeout=30)
        wait_for(lambda: store.stats()["processed"] == published[0], 90,
                 f"all {published[0]} published tweets to be processed "
                 f"(processed: {store.stats()['processed']})")
        assert runner.is_alive()
    finally:
        stop_producing.set()
        stop_holding.set()
        worker.stopping.set()
        runner.join(timeout=30)


def test_a_record_failing_its_crc_check_becomes_a_dead_letter_and_its_partition_moves_on(
        stack, redis_client, monkeypatch):
    """A record the broker serves with a bad CRC (a damaged disk, a buggy client): kafka-python
    raises on every poll and leaves the position on it, so the worker used to warn and fetch it
    again for ever while its partition stood still."""
    from kafka import TopicPartition
    from kafka.record.memory_records import MemoryRecordsBuilder

    from fintweet.worker.unreadable import CORRUPT_REASON

    topic = f"corrupt-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=1)
    group = f"{topic}-g"
    first, *damaged, last = make_tweets(4, prefix="crc-")
    publish(stack.kafka_bootstrap, topic, [first])
    built = MemoryRecordsBuilder.buffer

    def damage(builder: MemoryRecordsBuilder) -> bytes:  # after the CRC was computed
        data = bytearray(built(builder))
        data[-3] ^= 0xFF  # a byte of the record's value
        return bytes(data)

    with monkeypatch.context() as patched:  # only this publish's producer damages its batches
        patched.setattr(MemoryRecordsBuilder, "buffer", damage)
        publish(stack.kafka_bootstrap, topic, damaged)  # offsets 1 and 2, likely one batch
    publish(stack.kafka_bootstrap, topic, [last])

    worker = Worker(settings_for(stack, topic, group=group), RuleModel(),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=8)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    runner.join(timeout=90)
    assert not runner.is_alive(), "the worker is stuck on the corrupt record"
    store = ResultStore.from_url(stack.redis_url)
    summary = store.stats()
    assert summary["processed"] == 2
    assert store.result(first.id) is not None and store.result(last.id) is not None
    assert summary["dlq_reasons"] == {CORRUPT_REASON: 2}

    reader = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = [json.loads(message.value) for message in reader]
    reader.close()
    assert sorted((letter["reason"], letter["partition"], letter["offset"])
                  for letter in letters) == [(CORRUPT_REASON, 0, 1), (CORRUPT_REASON, 0, 2)]
    assert all("crc" in letter["error"].lower() for letter in letters)
    assert {(letter["value_size"], letter["value_sha256"]) for letter in letters} == {(-1, "")}
    committed = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    assert committed.committed(TopicPartition(topic, 0)) == 4  # past all four, the bad ones too
    committed.close(autocommit=False)


class StalledSink(RecordingSink):
    """Its first write hangs (as a write to a Redis that stopped answering would) until
    ``resume`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled, self.resume = threading.Event(), threading.Event()

    def write(self, batch) -> None:
        if not self.stalled.is_set():
            self.stalled.set()
            self.resume.wait(timeout=120)
        super().write(batch)


def test_the_lag_gauge_follows_the_backlog_while_a_write_is_stalled(
        stack, redis_client, models_dir, monkeypatch):
    """The alert on growing lag must see an outage's backlog: while the worker waits for a
    stalled write it polls nothing, so the lag comes from the broker's end offsets. The write's
    seconds in flight show the stall itself (the worker answers scrapes, holds its partitions
    and sends heartbeats throughout: nothing else did)."""
    from fintweet.monitoring.worker import WorkerMetrics

    monkeypatch.setattr("fintweet.worker.app.STALLED_LAG_REFRESH_S", 0.5)
    topic = f"stalled-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=1)
    # Two batches before the start, so the worker's position is 100 however long the publishing
    # below takes: batch 1 stalls in the write, batch 2 comes from the fetch buffer and then waits
    # for it. With one batch only, the worker's next poll raced the backlog's publishing.
    publish(stack.kafka_bootstrap, topic, make_tweets(100, prefix="before"))
    metrics, sink = WorkerMetrics(), StalledSink()
    worker = Worker(settings_for(stack, topic, batch_size=50), load(models_dir / "ann"),
                    consumer_options=FAST_GROUP_SETTINGS, metrics=metrics, extra_sinks=[sink])
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()

    def lag() -> float | None:
        return metrics.registry.get_sample_value("fintweet_consumer_lag", {"partition": "0"})

    def in_flight() -> float:
        return metrics.registry.get_sample_value("fintweet_worker_write_in_flight_seconds") or 0

    try:
        assert sink.stalled.wait(timeout=60), "the first batch never reached the sink"
        backlog = make_tweets(300, prefix="during")
        publish(stack.kafka_bootstrap, topic, backlog[:-1])
        # Tansu answers an end-offset request with the last record batch's first offset + 1:
        # the last tweet goes alone so that the answer is the true end (400).
        publish(stack.kafka_bootstrap, topic, backlog[-1:])
        wait_for(lambda: lag() == 300, 30, "the lag gauge to show the 300 tweets behind")
        wait_for(lambda: in_flight() >= 2, 30, "the stalled write's seconds to grow")
        sink.resume.set()
        wait_for(lambda: worker.stats.classified == 400, 60, "the backlog to be classified")
        wait_for(lambda: lag() == 0, 30, "the lag gauge to come back to 0")
        assert in_flight() == 0
    finally:
        sink.resume.set()
        worker.stopping.set()
        runner.join(timeout=30)
    assert len(set(sink.ids)) == 400  # a redelivery after a slow stall may repeat some


def test_a_worker_that_fails_to_build_closes_what_it_opened(stack, redis_client, models_dir):
    import pytest

    from fintweet.monitoring.worker import WorkerMetrics

    class RefusingMetrics(WorkerMetrics):
        """Fails the last step of building a worker, after its consumer, Redis client and
        dead-letter producer are open."""

        def watch_tickers(self, *args, **kwargs) -> None:
            raise ValueError("refused by the test")

    metrics = RefusingMetrics()
    before = {thread.ident for thread in threading.enumerate()}
    with pytest.raises(ValueError, match="refused by the test"):
        Worker(settings_for(stack, f"fails-{int(time.time() * 1000)}"), load(models_dir / "ann"),
               consumer_options=FAST_GROUP_SETTINGS, metrics=metrics)

    def started_since() -> list[str]:
        return [thread.name for thread in threading.enumerate()
                if thread.ident not in before and thread.is_alive()]

    # the dead-letter producer's network thread, above all
    wait_for(lambda: not started_since(), 15, "the threads the failed worker started to end")


def publish_compressed(bootstrap: str, topic: str, tweets, codec: str) -> None:
    """As a producer elsewhere may: one batch compressed with ``codec``."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50)
    for tweet in tweets:
        producer.send(topic, tweet.to_bytes())
    producer.flush(timeout=30)
    producer.close(timeout=10)


def test_batches_compressed_with_every_kafka_codec_are_classified(stack, redis_client) -> None:
    """lz4, snappy and zstd need libraries kafka-python does not install by itself."""
    topic = f"codecs-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=1)
    codecs = ("gzip", "lz4", "snappy", "zstd")
    for codec in codecs:
        publish_compressed(stack.kafka_bootstrap, topic, make_tweets(5, prefix=f"{codec}-"),
                           codec)
    worker = Worker(settings_for(stack, topic), RuleModel(), consumer_options=FAST_GROUP_SETTINGS,
                    until_idle=5)
    assert run_worker_thread(worker) == []  # ends, without an error
    store = ResultStore.from_url(stack.redis_url)
    assert store.stats()["processed"] == 5 * len(codecs)
    assert all(store.result(f"{codec}-0") is not None for codec in codecs)


def test_a_batch_in_a_codec_it_cannot_read_stops_the_worker_with_one_line_and_no_commit(
        stack, redis_client, monkeypatch) -> None:
    """kafka-python fails such a batch once, then its poll returns nothing from that partition
    for ever: a worker that retried spun there without a word."""
    import kafka.codec

    from fintweet.core.errors import UserError

    topic = f"nocodec-{int(time.time() * 1000)}"
    stack.create_topic(topic, partitions=1)
    publish_compressed(stack.kafka_bootstrap, topic, make_tweets(5, prefix="lz4-"), "lz4")
    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)  # as without the lz4 package
    group = f"{topic}-g"
    worker = Worker(settings_for(stack, topic, group=group), RuleModel(),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=60)
    failure = run_worker_thread(worker)  # until_idle 60: ending before it is the answer
    assert len(failure) == 1 and isinstance(failure[0], UserError), failure
    message = str(failure[0])
    assert "\n" not in message and topic in message and "lz4" in message
    assert "reinstall fintweet" in message
    committed = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    from kafka import TopicPartition

    assert committed.committed(TopicPartition(topic, 0)) is None  # the batch stays for later
    committed.close(autocommit=False)


class FailsOn(RuleModel):
    """Raises for any batch holding a text with ``word`` (every batch when ``word`` is "")."""

    def __init__(self, word: str) -> None:
        super().__init__()
        self.word = word
        self.attempts = 0  # calls, answered or not (``calls``: the answered ones)

    def predict_proba(self, texts):
        self.attempts += 1
        if any(self.word in text for text in texts):
            raise RuntimeError(f"cannot take {self.word or 'anything'}")
        return super().predict_proba(texts)


def start_worker_thread(worker: Worker) -> tuple[threading.Thread, list[BaseException]]:
    """Starts ``worker`` on a thread; the list gets what it raises, if anything."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    return runner, raised


def run_worker_thread(worker: Worker) -> list[BaseException]:
    """Runs ``worker`` to its end (90 s at most); returns what it raised, if anything."""
    runner, raised = start_worker_thread(worker)
    runner.join(timeout=90)
    if runner.is_alive():
        worker.stopping.set()
        runner.join(timeout=30)
        raise AssertionError("the worker did not end")
    return raised


def test_a_tweet_the_model_fails_on_becomes_a_dead_letter_and_the_rest_are_stored(
        stack, topic, redis_client) -> None:
    """Raised out of the worker, the model's error would stop every restart on the same
    uncommitted batch."""
    from kafka import TopicPartition

    from fintweet.worker.classify import CLASSIFY_ERROR

    tweets = make_tweets(6, prefix="cf-")
    poison = tweets[2].model_copy(update={"text": "poison pill for the model"})
    publish(stack.kafka_bootstrap, topic, [*tweets[:2], poison, *tweets[3:]])
    group = f"{topic}-g"
    worker = Worker(settings_for(stack, topic, group=group), FailsOn("poison"),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=5)
    assert run_worker_thread(worker) == []
    store = ResultStore.from_url(stack.redis_url)
    summary = store.stats()
    assert summary["processed"] == 5 and summary["dlq_reasons"] == {CLASSIFY_ERROR: 1}
    assert store.result(poison.id) is None
    assert all(store.result(t.id) is not None for t in tweets if t.id != poison.id)
    reader = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=stack.kafka_bootstrap,
                           auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = [json.loads(message.value) for message in reader]
    reader.close()
    assert [letter["reason"] for letter in letters] == [CLASSIFY_ERROR]
    assert "cannot take poison" in letters[0]["error"]
    committed = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    held = [TopicPartition(topic, p) for p in committed.partitions_for_topic(topic)]
    assert sum(committed.committed(tp) or 0 for tp in held) == 6  # all of it, the bad one too
    committed.close(autocommit=False)


def test_a_model_that_fails_on_every_tweet_stops_the_worker_and_dead_letters_nothing(
        stack, topic, redis_client) -> None:
    tweets = make_tweets(4, prefix="broken-")
    publish(stack.kafka_bootstrap, topic, tweets)
    worker = Worker(settings_for(stack, topic), FailsOn(""), consumer_options=FAST_GROUP_SETTINGS,
                    until_idle=30)
    raised = run_worker_thread(worker)
    assert len(raised) == 1 and "cannot take anything" in str(raised[0])
    summary = ResultStore.from_url(stack.redis_url).stats()
    assert summary["processed"] == 0 and summary["dlq"] == 0


def test_an_error_in_redis_s_answer_ends_the_worker_instead_of_being_retried_for_ever(
        stack, topic, redis_client) -> None:
    """A key of the wrong type answers the same on every try; retried as an outage, it stalled
    the worker without end."""
    from kafka import TopicPartition

    from fintweet.core.keys import Keys

    redis_client.rpush(Keys("fintweet").processed, "not a counter")
    publish(stack.kafka_bootstrap, topic, make_tweets(5, prefix="wrongtype-"))
    group = f"{topic}-g"
    worker = Worker(settings_for(stack, topic, group=group), RuleModel(),
                    consumer_options=FAST_GROUP_SETTINGS, until_idle=60)
    raised = run_worker_thread(worker)
    assert len(raised) == 1 and "WRONGTYPE" in str(raised[0]), raised
    # one line for `fintweet worker` (a UserError), not a traceback
    assert isinstance(raised[0], UserError) and "nothing was committed" in str(raised[0])
    committed = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    held = [TopicPartition(topic, p) for p in committed.partitions_for_topic(topic)]
    assert all(committed.committed(tp) is None for tp in held)
    committed.close(autocommit=False)


def decoded_batch(texts: list[str]):
    from fintweet.worker.decode import Decoded
    from tests.test_decode import Record

    tweets = make_tweets(len(texts), prefix="iso-")
    return [Decoded(t.model_copy(update={"text": text}), Record(t.to_bytes(), offset=i))
            for i, (t, text) in enumerate(zip(tweets, texts, strict=True))]


def test_the_tweets_a_model_fails_on_are_found_by_halving_not_one_by_one() -> None:
    """One call per tweet could outlast the poll interval with a slow model."""
    from fintweet.worker.classify import CLASSIFY_ERROR, classify_isolating

    texts = [f"markets {i}" for i in range(64)]
    texts[5] = texts[40] = "poison"
    model = FailsOn("poison")
    classified, letters = classify_isolating(model, decoded_batch(texts))
    assert classified is not None and len(classified.results) == 62
    assert sorted(letter.letter.offset for letter in letters) == [5, 40]
    assert {letter.letter.reason for letter in letters} == {CLASSIFY_ERROR}
    # the batch, the plain tweet, then ~2k·log2(n) halves (one by one: 64 more)
    assert model.attempts <= 2 + 2 * 2 * 6


def test_a_model_that_fails_on_the_plain_tweet_too_is_raised_at_once() -> None:
    from fintweet.worker.classify import classify_isolating

    model = FailsOn("")
    with pytest.raises(RuntimeError, match="cannot take anything"):
        classify_isolating(model, decoded_batch([f"markets {i}" for i in range(64)]))
    assert model.attempts == 2  # the batch and the plain tweet, not each tweet


def test_a_busy_redis_is_waited_out_like_an_outage(stack, topic, redis_client, caplog) -> None:
    """BUSY (another script running), like MASTERDOWN or LOADING, is an error reply that passes
    by itself: the write is retried, not the worker ended."""
    import logging

    import redis as redis_lib

    redis_client.config_set("lua-time-limit", 100)  # BUSY after 100 ms instead of 5 s
    blocker = redis_lib.Redis.from_url(stack.redis_url)
    def run_for_ever() -> None:
        with contextlib.suppress(redis_lib.ResponseError):  # "killed by user"
            blocker.eval("while true do end", 0)

    script = threading.Thread(target=run_for_ever, daemon=True)
    killer = redis_lib.Redis.from_url(stack.redis_url)
    try:
        script.start()
        wait_for(lambda: _busy(killer), 10, "Redis to answer BUSY")
        publish(stack.kafka_bootstrap, topic, make_tweets(5, prefix="busy-"))
        worker = Worker(settings_for(stack, topic), RuleModel(),
                        consumer_options=FAST_GROUP_SETTINGS, until_idle=5)
        caplog.set_level(logging.WARNING)
        runner, raised = start_worker_thread(worker)
        # the worker's writes meet BUSY meanwhile, and are retried (not only slow to start)
        wait_for(lambda: "BUSY" in caplog.text and "retrying" in caplog.text, 60,
                 "a write to meet BUSY and be retried")
        assert runner.is_alive() and raised == []
    finally:
        with contextlib.suppress(redis_lib.ResponseError):  # NOTBUSY: it never started
            killer.script_kill()
        script.join(timeout=10)
        blocker.close()
        killer.close()
        redis_client.config_set("lua-time-limit", 5000)
    runner.join(timeout=60)
    assert not runner.is_alive() and raised == []
    assert ResultStore.from_url(stack.redis_url).stats()["processed"] == 5


def test_a_replica_whose_master_is_down_is_waited_out(stack, topic, tmp_path, caplog) -> None:
    """MASTERDOWN (a replica that lost its master, told not to serve stale data) is an error
    reply that passes by itself. redis-py raises it as MasterDownError with the code taken off
    its message, so it was not taken for one: the worker ended with a traceback."""
    import logging

    import redis as redis_lib

    from fintweet.devstack.stack import EmbeddedStack

    own = EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=())
    own.start_redis()  # its own Redis: this one is made a replica for a while
    try:
        client = redis_lib.Redis.from_url(own.redis_url)
        client.config_set("replica-serve-stale-data", "no")
        client.replicaof("127.0.0.1", free_port())  # nothing there: its link stays down
        publish(stack.kafka_bootstrap, topic, make_tweets(5, prefix="masterdown-"))
        worker = Worker(settings_for(stack, topic).override(redis_url=own.redis_url),
                        RuleModel(), consumer_options=FAST_GROUP_SETTINGS, until_idle=5)
        caplog.set_level(logging.WARNING)
        runner, raised = start_worker_thread(worker)
        try:
            wait_for(lambda: "MasterDownError" in caplog.text and "retrying" in caplog.text, 60,
                     "a write to meet MASTERDOWN and be retried")
            assert runner.is_alive() and raised == []
        finally:
            client.replicaof("NO", "ONE")
        runner.join(timeout=60)
        assert not runner.is_alive() and raised == []
        assert ResultStore(client).stats()["processed"] == 5
    finally:
        own.stop()


def _busy(client) -> bool:
    import redis as redis_lib

    try:
        client.get("x")
    except redis_lib.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


class KillsTheBrokerOnce(RecordingSink):
    """After the first batch is in Redis, kills the broker (so its commit fails and is retried)
    and asks the worker to stop a little later, while the commit still fails."""

    def __init__(self, own_stack, worker_box: list) -> None:
        super().__init__()
        self.own_stack, self.worker_box = own_stack, worker_box

    def write(self, batch) -> None:
        if not self.ids:
            os.kill(self.own_stack.pids()["kafka"], signal.SIGKILL)
            threading.Timer(3, self.worker_box[0].stopping.set).start()
        super().write(batch)


def test_a_batch_written_but_never_committed_is_in_the_worker_s_counts(tmp_path) -> None:
    """Redis counted the batch the moment it was written; a stop while its commit waited out a
    broker outage left it out of the worker's stats and metrics, which then read short of
    Redis's counts. It is redelivered to the next worker, which finds every id stored."""
    from fintweet.devstack.stack import EmbeddedStack
    from fintweet.monitoring.worker import WorkerMetrics

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, partitions=1,
                       topics=("t",)) as own:
        publish(own.kafka_bootstrap, "t", make_tweets(40))
        box: list = []
        sink = KillsTheBrokerOnce(own, box)
        metrics = WorkerMetrics()
        worker = Worker(settings_for(own, "t"), RuleModel(), consumer_options=FAST_GROUP_SETTINGS,
                        metrics=metrics, extra_sinks=[sink])
        box.append(worker)
        assert run_worker_thread(worker) == []
        processed = ResultStore.from_url(own.redis_url).stats()["processed"]
    assert processed == len(sink.ids) > 0
    assert worker.stats.classified == processed
    counted = sum(sample.value for family in metrics.registry.collect()
                  for sample in family.samples if sample.name == "fintweet_tweets_classified_total")
    assert counted == processed


def test_a_stop_while_the_broker_hangs_on_a_dead_letter_ends_within_the_grace_period(tmp_path):
    """Docker gives a stopping container 30 s (compose's stop_grace_period) before SIGKILL, which
    leaves the group unannounced. A stop while the broker hung on a batch's dead letters took 63
    s: the flush waited its 30 s, the close flushed the letters again through a new client (10 s
    to find no broker) and then waited 10 + 10 s to close it. The batch is not committed, so its
    records, and their letters, come again."""
    from fintweet.devstack.stack import EmbeddedStack

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0,
                       topics=("hang",)) as own:
        producer = KafkaProducer(bootstrap_servers=own.kafka_bootstrap, acks="all")
        for i in range(200):  # one fetch brings them all: later batches need no broker
            producer.send("hang", key=f"bad-{i}".encode(), value=b"not json", partition=0)
        producer.flush()
        producer.close()
        broker = own.pids()["kafka"]
        frozen = threading.Event()

        def freeze_after_the_first_batch(_stats) -> None:
            if not frozen.is_set():
                os.kill(broker, signal.SIGSTOP)
                frozen.set()

        worker = Worker(settings_for(own, "hang", batch_size=10), RuleModel(),
                        consumer_options=FAST_GROUP_SETTINGS, on_batch=freeze_after_the_first_batch)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        try:
            assert frozen.wait(60), "the first batch was never committed"
            time.sleep(3)  # the next batch's letters are sent to the hung broker
            worker.stopping.set()
            runner.join(timeout=30)
            assert not runner.is_alive(), "the stop outlasted the 30 s grace period"
        finally:
            os.kill(broker, signal.SIGCONT)
            worker.stopping.set()
            runner.join(timeout=90)
