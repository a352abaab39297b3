"""CSV replay onto the real broker: stable ids, labels carried, limits, pacing, bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from kafka import KafkaConsumer

from fintweet.core.data import load_labelled_csv, row_id
from fintweet.core.producer import PublishError, TweetProducer
from fintweet.ingest.replay import RateLimiter, replay, replay_rows
from tests.helpers import consume_all, wait_for


def read_topic(bootstrap: str, topic: str, expected: int) -> list[dict]:
    messages = consume_all(bootstrap, topic, expected)
    assert len(messages) == expected
    return messages


def write_csv(path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_replay_publishes_rows_with_labels_and_stable_ids(stack, topic, tmp_path):
    csv_path = tmp_path / "tweets.csv"
    write_csv(csv_path, ["text,label", '"Fed holds rates, says $SPY fine",1',
                         "Same text twice,9", "Same text twice,9"])
    data = load_labelled_csv(csv_path)
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        assert replay(data, producer, progress=False).published == 3
    first = read_topic(stack.kafka_bootstrap, topic, 3)
    assert sorted(m["label"] for m in first) == [1, 9, 9]
    ids = {m["id"] for m in first}
    assert len(ids) == 3, "identical rows are distinct tweets"
    assert ids == {row_id(1, 'Fed holds rates, says $SPY fine'), row_id(2, "Same text twice"),
                   row_id(3, "Same text twice")}
    assert all(m["source"] == "replay" for m in first)


def test_replay_cli_uses_the_id_column_limit_and_no_label(stack, topic, tmp_path):
    csv_path = tmp_path / "unlabelled.csv"
    write_csv(csv_path, ["id,text"] + [f"tw{i},tweet number {i} about $AAPL" for i in range(10)])
    env = {"FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINTWEET_TOPIC": topic,
           "PATH": "/usr/bin:/bin"}
    result = cli("ingest", "replay", str(csv_path), "--limit", "4", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert "published 4 tweets" in result.stderr
    messages = read_topic(stack.kafka_bootstrap, topic, 4)
    assert sorted(m["id"] for m in messages) == ["tw0", "tw1", "tw2", "tw3"]
    assert all("label" not in m for m in messages)


def test_replay_cli_rejects_bad_csv_naming_the_file_and_row(tmp_path):
    bad = tmp_path / "bad.csv"
    write_csv(bad, ["text,label", "fine,3", "broken,42"])
    result = cli("ingest", "replay", str(bad), "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "row 2" in result.stderr and "42" in result.stderr


def test_replay_cli_says_what_a_file_too_small_or_with_repeated_ids_would_lose(tmp_path):
    """--holdout of two rows published 0 tweets with exit 0; a repeated id was replayed as two
    tweets, of which the worker kept one, without a word."""
    small = tmp_path / "small.csv"
    write_csv(small, ["text,label", "Fed hikes,1", "Oil slides,2"])
    result = cli("ingest", "replay", str(small), "--holdout", "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2
    assert "too few rows for --holdout" in result.stderr and str(small) in result.stderr
    repeated = tmp_path / "repeated.csv"
    write_csv(repeated, ["id,text,label", "1,Fed hikes,1", "1,Oil slides,2", "2,Gold up,3"])
    result = cli("ingest", "replay", str(repeated), "--bootstrap", "127.0.0.1:1",
                 "--no-progress")
    assert result.returncode == 2  # no broker; the warning came first
    assert f"warning: {repeated}: 1 row(s) repeat the id of an earlier row" in result.stderr


def test_replay_cli_fails_when_the_broker_is_unreachable(tmp_path):
    csv_path = tmp_path / "ok.csv"
    write_csv(csv_path, ["text", "hello"])
    result = cli("ingest", "replay", str(csv_path), "--bootstrap", "127.0.0.1:1", "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("fintweet ingest replay: error: ") and "127.0.0.1:1" in lines[-1]
    assert "Traceback" not in result.stderr


class FakeClock:
    """Time that moves only when the limiter sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_keeps_to_its_schedule_and_catches_up_after_a_slow_step():
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.wait()
    assert clock.now == pytest.approx(100.5)  # 100 iterations at 200/s
    assert all(s == pytest.approx(0.005) for s in clock.sleeps)
    clock.now += 0.05  # a 50 ms stall: the next 10 slots are already due
    clock.sleeps.clear()
    for _ in range(10):
        limiter.wait()
    assert clock.sleeps == []
    limiter.wait()
    assert clock.sleeps == [pytest.approx(0.005)]


def test_rate_limiter_without_a_rate_never_sleeps_and_rejects_a_bad_rate():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.wait()
    assert clock.sleeps == []
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


def test_sentiment_replay_sends_its_labels_as_sentiment_label(stack, topic, tmp_path):
    csv_path = tmp_path / "sentiment.csv"
    write_csv(csv_path, ["text,label", "$TSLA to the moon,1", "$AAPL misses,0", "Fed meets,2"])
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        replay(load_labelled_csv(csv_path), producer, progress=False, task="sentiment")
    messages = read_topic(stack.kafka_bootstrap, topic, 3)
    assert sorted(m["sentiment_label"] for m in messages) == [0, 1, 2]
    assert all("label" not in m for m in messages)


@pytest.mark.parametrize(("rows", "says"), [
    (["text,label", "fine,3", "x" * 10_001 + ",4"], "row 2 (line 3): text is 10,001 characters"),
    (["text,label", "fine,3", "nul\x00inside,4"], "row 2 (line 3): text contains a NUL"),
    (["text,label", "fine,Bullish"], "row 1 (line 2): label 'Bullish' is not an integer (give the "
                                     "class id, 0..19, or LABEL_<id>)"),
])
def test_replay_refuses_a_row_no_tweet_could_carry_before_sending_any(tmp_path, rows, says):
    """Such a row failed the Tweet's own checks when its turn came: a traceback after the
    rows before it were sent. (A repeated id is not refused: it names the same tweet, which the
    worker counts once; tests/test_demo.py relies on that.)"""
    csv_path = tmp_path / "rows.csv"
    write_csv(csv_path, rows)
    result = cli("ingest", "replay", str(csv_path), "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fintweet ingest replay: error: {csv_path}: {says}")


def test_sentiment_replay_refuses_a_topic_label_naming_the_row(tmp_path):
    csv_path = tmp_path / "topics.csv"
    write_csv(csv_path, ["text,label", "fine,2", "a topic id,7"])
    result = cli("ingest", "replay", str(csv_path), "--task", "sentiment",
                 "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"fintweet ingest replay: error: {csv_path}: row 2 (line "
                                     "3): label 7 is outside 0..2; the topic CSV's ids go to 19: "
                                     "is this the topic CSV where the sentiment one belongs?")


def test_shuffled_replay_mixes_the_label_sorted_training_file(shared_data_dir):
    path = shared_data_dir / "topic_train.csv"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    data = load_labelled_csv(path)
    in_order = replay_rows(data)
    assert len(set(in_order.labels[:1000].tolist())) < 15  # why --shuffle exists
    shuffled = replay_rows(data, shuffle=True, seed=3)
    assert len(set(shuffled.labels[:1000].tolist())) >= 15
    assert replay_rows(data, shuffle=True, seed=3).ids == shuffled.ids  # the seed fixes the order
    # A row keeps its id whatever the order, so a shuffled replay after a plain one is a replay.
    assert dict(zip(shuffled.ids, shuffled.texts, strict=True)) == \
        dict(zip(in_order.ids, in_order.texts, strict=True))


def test_replay_from_row_publishes_the_rest_with_the_same_ids(stack, topic, tmp_path):
    csv_path = tmp_path / "ten.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet {i},{i % 20}" for i in range(10)])
    data = load_labelled_csv(csv_path)
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        result = replay(data, producer, progress=False, shuffle=True, seed=1, from_row=6)
    assert result.published == 4
    expected = replay_rows(data, shuffle=True, seed=1).ids[6:]
    assert sorted(m["id"] for m in read_topic(stack.kafka_bootstrap, topic, 4)) == sorted(expected)


def replay_then_kill_the_broker(own, csv_path, *flags: str,
                                before_kill=lambda: None) -> subprocess.Popen[str]:
    """A CLI replay of ``csv_path`` into topic "t" of ``own``, its broker SIGKILLed once it holds
    100 of the replayed tweets (however slowly the CLI started) and ``before_kill`` returned."""
    import os
    import signal

    from kafka import TopicPartition

    replaying = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "ingest", "replay", str(csv_path), *flags,
         "--no-progress", "--bootstrap", own.kafka_bootstrap, "--topic", "t"],
        stderr=subprocess.PIPE, text=True)
    probe = KafkaConsumer(bootstrap_servers=own.kafka_bootstrap)

    def held() -> int:
        partitions = probe.partitions_for_topic("t") or set()
        ends = probe.end_offsets([TopicPartition("t", p) for p in partitions])
        return sum(ends.values())

    try:
        wait_for(lambda: held() >= 100, 60, "the broker to hold 100 replayed tweets")
        before_kill()
    except BaseException:
        replaying.kill()
        replaying.wait()
        raise
    finally:
        probe.close()
    os.kill(own.pids()["kafka"], signal.SIGKILL)
    return replaying


def test_replay_whose_broker_dies_ends_with_one_line_saying_where_to_resume(tmp_path):
    from fintweet.devstack.stack import EmbeddedStack

    csv_path = tmp_path / "many.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet number {i},{i % 20}" for i in range(5000)])
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        replaying = replay_then_kill_the_broker(own, csv_path, "--rate", "100", "--holdout",
                                                "--limit", "700")
        _, stderr = replaying.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert replaying.returncode == 2, stderr
    assert len(lines) <= 2, stderr  # the producer's one log line for the outage, then the error
    assert lines[-1].startswith("fintweet ingest replay: error: replay stopped: ")
    assert "tweets acknowledged before the broker failed" in lines[-1]
    # the flags that resume where it stopped: the rest of --limit, within the holdout again
    resume = re.search(r"resume with --from-row (\d+) --limit (\d+) --holdout \(", lines[-1])
    assert resume is not None, lines[-1]
    assert int(resume[1]) + int(resume[2]) == 700 and int(resume[1]) > 0
    # a broker that failed may have lost acknowledged tweets: the embedded one keeps none
    assert lines[-1].endswith("if the broker lost data (the embedded one keeps nothing over a "
                              "restart), replay from the start instead: tweets already counted "
                              "are not counted again")
    assert "Traceback" not in stderr


def test_a_replays_readiness_follows_its_broker(tmp_path):
    """/readyz answered "ready" throughout a replay, a broker that had died included."""
    from fintweet.devstack.process import free_port
    from fintweet.devstack.stack import EmbeddedStack
    from tests.helpers import http_get

    csv_path = tmp_path / "many.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet number {i},{i % 20}" for i in range(5000)])
    port = free_port()
    readyz = f"http://127.0.0.1:{port}/readyz"
    answers: list[tuple[int, str]] = []
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        replaying = replay_then_kill_the_broker(
            own, csv_path, "--rate", "100", "--metrics-port", str(port),
            before_kill=lambda: answers.append(http_get(readyz)))
        try:
            wait_for(lambda: http_get(readyz)[0] != 200, 30, "/readyz to see the broker gone")
            answers.append(http_get(readyz))
        finally:
            replaying.kill()
            replaying.communicate(timeout=60)
    assert answers[0] == (200, "replaying to t\n")
    assert answers[1] == (503, f"Kafka at {own.kafka_bootstrap} does not accept connections\n")


def test_a_second_ctrl_c_while_the_interrupted_replay_waits_for_acks_keeps_the_resume_line(
        tmp_path):
    """With the broker gone, the first Ctrl-C's wait for acknowledgements lasts its full 10 s,
    and a second Ctrl-C then ended the process with no word: the resume point was lost."""
    import signal
    import time

    from fintweet.devstack.stack import EmbeddedStack

    csv_path = tmp_path / "many.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet number {i},{i % 20}" for i in range(5000)])
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        replaying = replay_then_kill_the_broker(own, csv_path, "--rate", "100")
        time.sleep(0.3)
        replaying.send_signal(signal.SIGINT)
        time.sleep(1.5)
        still_waiting = replaying.poll() is None
        replaying.send_signal(signal.SIGINT)
        _, stderr = replaying.communicate(timeout=60)
    assert still_waiting, "the first Ctrl-C did not wait for acknowledgements: nothing tested"
    assert replaying.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    resume = re.fullmatch(r"fintweet ingest replay: replay interrupted: ([\d,]+) of 5,000 tweets "
                          r"acknowledged; resume with --from-row (\d+) \(ids are stable.*", last)
    assert resume is not None, stderr
    assert int(resume[1].replace(",", "")) == int(resume[2]) >= 100
    assert "Traceback" not in stderr


def test_a_failed_send_is_reported_with_its_key_then_its_error(tmp_path):
    import os
    import signal

    from fintweet.devstack.stack import EmbeddedStack

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        producer = TweetProducer(own.kafka_bootstrap, "t", linger_ms=0, max_block_ms=2_000,
                                 request_timeout_ms=1_000, delivery_timeout_ms=3_000)
        producer.publish_raw("warm-up", b"v")
        producer.flush(timeout=10)  # metadata known: the next send queues without blocking
        try:
            os.kill(own.pids()["kafka"], signal.SIGKILL)
            producer.publish_raw("the-key", b"v")
            with pytest.raises(PublishError) as failure:
                producer.flush(timeout=20)
        finally:
            producer._producer.close(timeout=1)
    message = str(failure.value)
    assert "1 tweet(s) were not acknowledged (the-key: " in message, message
    assert "Error" in message.split("the-key: ", 1)[1]


def test_replay_holdout_publishes_only_the_trainers_holdout_with_whole_file_ids(
        stack, topic, tmp_path):
    """--holdout replays exactly the rows `fintweet train --no-refit` never trains on, named as a
    replay of the whole file names them."""
    import numpy as np

    from fintweet.core.data import stratified_holdout

    rows = [f'"tweet {i} about $AAPL",{i % 4}' for i in range(40)]
    csv_path = tmp_path / "labelled.csv"
    write_csv(csv_path, ["text,label", *rows])
    env = {"FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINTWEET_TOPIC": topic,
           "PATH": "/usr/bin:/bin"}
    result = cli("ingest", "replay", str(csv_path), "--holdout", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    holdout = stratified_holdout(np.arange(40) % 4)[1]
    messages = read_topic(stack.kafka_bootstrap, topic, len(holdout))
    expected = {row_id(i + 1, f"tweet {i} about $AAPL") for i in holdout}
    assert {m["id"] for m in messages} == expected
    assert sorted(m["label"] for m in messages) == sorted((holdout % 4).tolist())


def test_replay_holdout_refuses_unlabelled_rows(tmp_path):
    csv_path = tmp_path / "unlabelled.csv"
    write_csv(csv_path, ["text", "no label here", "nor here"])
    result = cli("ingest", "replay", str(csv_path), "--holdout")
    assert result.returncode == 2
    assert "--holdout needs a label on every row" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_producer_failing_with_unsent_records_raises_the_original_error(tmp_path):
    """Closing after a failure with records still queued for a dead broker must not replace
    the failure (which says where to resume) by kafka-python's flush timeout."""
    import os
    import signal

    from fintweet.core.schema import Tweet, utcnow
    from fintweet.devstack.stack import EmbeddedStack

    def tweet(i: int) -> Tweet:
        now = utcnow()
        return Tweet(id=f"u{i}", text=f"tweet {i}", created_at=now, ingested_at=now,
                     source="replay")

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        with (pytest.raises(RuntimeError, match="the original failure"),
              TweetProducer(own.kafka_bootstrap, "t") as producer):
            producer.publish(tweet(0))
            producer.flush(30)  # metadata known: later sends queue without blocking
            os.kill(own.pids()["kafka"], signal.SIGKILL)
            for i in range(1, 50):
                producer.publish(tweet(i))
            raise RuntimeError("the original failure")
        # Closed for good: no I/O thread left retrying the dead broker, and nothing for the
        # client's __del__ to flush (and raise) later in unrelated code.
        client = producer._producer
        assert client._closed
        assert client._sender is None or not client._sender.is_alive()


def test_a_send_the_broker_cannot_take_is_a_publish_error_naming_the_tweet(tmp_path):
    """send() waits for a topic's metadata and gives up with kafka-python's KafkaTimeoutError
    once the broker is gone; the X ingester had no handler for that one (a traceback)."""
    import os
    import signal

    from fintweet.core.schema import Tweet, utcnow
    from fintweet.devstack.stack import EmbeddedStack

    now = utcnow()
    with (EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own,
          TweetProducer(own.kafka_bootstrap, "never-sent-to", max_block_ms=1000) as producer):
        os.kill(own.pids()["kafka"], signal.SIGKILL)
        with pytest.raises(PublishError, match=r"did not take 'x1' \(KafkaTimeoutError\)"):
            producer.publish(Tweet(id="x1", text="$AAPL", created_at=now, ingested_at=now,
                                   source="x"))


@pytest.mark.parametrize(("sig", "task"), [("SIGINT", "topic"), ("SIGTERM", "sentiment")])
def test_a_replay_stopped_with_ctrl_c_says_where_to_resume(stack, topic, tmp_path, sig, task):
    """Ctrl-C ended the replay with no word (exit 130): now the tweets already sent are given
    a moment to be acknowledged, and the last line says how to resume, as a broker failure's
    does. SIGTERM too (it ended the process outright), and with SIGINT inherited *ignored*, as
    in a job started in the background without job control (the replay then ran to its end).
    A sentiment replay's line names its task: resumed without it, its labels went out as
    topic ids (0-2 are valid ones) and spoilt the live topic accuracy."""
    import signal
    import time

    csv_path = tmp_path / "slow.csv"
    classes = 20 if task == "topic" else 3
    write_csv(csv_path, ["text,label"] + [f"tweet {i},{i % classes}" for i in range(2000)])
    replaying = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "ingest", "replay", str(csv_path),
         "--task", task,
         "--rate", "50", "--no-progress", "--bootstrap", stack.kafka_bootstrap, "--topic", topic],
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    probe = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                          auto_offset_reset="earliest", consumer_timeout_ms=1000)

    def count(polled: dict) -> int:
        return sum(len(records) for records in polled.values())

    received = 0
    try:
        deadline = time.monotonic() + 60
        while received < 20 and time.monotonic() < deadline:
            received += count(probe.poll(timeout_ms=200))
        assert received >= 20, "the replay never got going"
        replaying.send_signal(getattr(signal, sig))
        _, stderr = replaying.communicate(timeout=60)
        received += sum(1 for _ in probe)  # the rest, until a second passes without one
    finally:
        probe.close()
        if replaying.poll() is None:  # a failed assertion: not left publishing into the broker
            replaying.kill()
            replaying.wait()
    assert replaying.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    resume = re.fullmatch(r"fintweet ingest replay: replay interrupted: ([\d,]+) of 2,000 tweets "
                          r"acknowledged; resume with --from-row (\d+)"
                          + ("" if task == "topic" else " --task sentiment")
                          + r" \(ids are stable.*", last)
    assert resume is not None, stderr
    assert received >= int(resume[1].replace(",", "")) == int(resume[2]) >= 20
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("flags", "says"), [
    (["--from-row", "5"], "{csv}: --from-row 5 is outside 0..2"),
    (["--from-row", "-1"], "{csv}: --from-row -1 is outside 0..2"),
    (["--seed", "3"], "--seed 3 orders a shuffle: add --shuffle, or drop --seed"),
    # a gap between tweets no sleep takes: an OverflowError traceback after the first tweet
    (["--rate", "1e-300"], "argument --rate: 1e-300 is under one tweet a day (0.0000116); see "
     "fintweet ingest replay --help"),
])
def test_replay_flags_that_cannot_apply_are_refused_before_the_broker_is_asked(
        tmp_path, flags, says):
    """With no broker at the address, a refusal that came after connecting would be about
    Kafka instead."""
    csv_path = tmp_path / "rows.csv"
    write_csv(csv_path, ["text,label", "fine,3", "also fine,4"])
    result = cli("ingest", "replay", str(csv_path), *flags, "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fintweet ingest replay: error: {says.format(csv=csv_path)}"]


def test_replaying_the_sentiment_csv_as_topics_is_refused_unless_the_task_is_given(
        stack, topic, tmp_path):
    """Without --task sentiment its labels went out as topic ids, and the live topic accuracy
    counted them. A warning came too late: the ids were published, and the replay with --task
    sentiment it advised only added duplicates, whose labels the worker ignores."""
    csv_path = tmp_path / "sentiment.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet number {i} on $TSLA,{i % 3}" for i in range(60)])
    env = {"FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "FINTWEET_TOPIC": topic,
           "PATH": "/usr/bin:/bin"}
    result = cli("ingest", "replay", str(csv_path), "--no-progress", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fintweet ingest replay: error: {csv_path}: its labels are 0, 1 and 2 and no other, as "
        "in the sentiment CSV, but they are read as topics, and live topic accuracy would count "
        "them; replay it with --task sentiment (or --task topic if they are topic ids)"]
    assert read_topic(stack.kafka_bootstrap, topic, 0) == []
    for task in ("sentiment", "topic"):
        told = cli("ingest", "replay", str(csv_path), "--no-progress", "--task", task, env=env)
        assert told.returncode == 0 and "warning" not in told.stderr, told.stderr
    assert len(read_topic(stack.kafka_bootstrap, topic, 120)) == 120


def test_a_replay_to_a_topic_not_on_the_broker_says_no_worker_reads_it(stack, topic, tmp_path):
    """A misspelt --topic was created by the broker on the first tweet, and nothing said that
    the tweets went where no worker reads."""
    csv_path = tmp_path / "tweets.csv"
    write_csv(csv_path, ["text,label"] + [f"tweet number {i} on $TSLA,{i % 20}" for i in range(5)])
    env = {"FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap, "PATH": "/usr/bin:/bin"}
    misspelt = f"{topic}-typo"
    result = cli("ingest", "replay", str(csv_path), "--no-progress", "--topic", misspelt, env=env)
    assert result.returncode == 0, result.stderr  # published all the same: it may be meant
    warning = next(line for line in result.stderr.splitlines() if line.startswith("warning:"))
    assert f"topic '{misspelt}' does not exist on {stack.kafka_bootstrap}" in warning
    listed = warning.split("the topics there: ")[1].removesuffix(", …").split(", ")
    assert f"--topic {misspelt}" in warning and 1 <= len(listed) <= 10  # the session's, capped
    assert topic in listed or warning.endswith(", …")
    assert not any(name.endswith(".dlq") for name in listed) and misspelt not in listed
    assert len(read_topic(stack.kafka_bootstrap, misspelt, 5)) == 5
    again = cli("ingest", "replay", str(csv_path), "--no-progress", "--topic", misspelt, env=env)
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr  # it exists now
