"""The store's one Lua write and ``stats()`` against the real redis-server: what each result adds
(topic, sentiment, tickers, per-minute buckets, live accuracy per task, index lists, the event
stream), that only newly counted ids add anything (a second write of the same batch changes no
key but ``duplicates``), and the results the worker builds with a two-head model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis

from fintweet.core.keys import Keys, epoch_minute
from fintweet.core.labels import SENTIMENT_NAMES
from fintweet.core.schema import Tweet
from fintweet.core.store import (
    INDEX_LENGTH,
    MAX_TICKERS_PER_TWEET,
    DeadLetterMark,
    ResultStore,
    StoredResult,
    redacted,
)
from fintweet.devstack.process import free_port
from fintweet.worker.classify import classify
from fintweet.worker.decode import Decoded
from tests.rule_model import RuleModel

NOW = 1_790_000_000.0  # a fixed write time, so the minute buckets are known
KEYS = Keys()


def store_at(client: redis.Redis, at: float = NOW, retention: int = 3600) -> ResultStore:
    return ResultStore(client, bucket_retention_s=retention, clock=lambda: at)


def result(i: int, topic: str = "Earnings", sentiment: str = "Bullish",
           tickers: tuple[str, ...] = (), true_topic: str | None = None,
           true_sentiment: str | None = None) -> StoredResult:
    payload = orjson.dumps({"id": f"r{i}", "topic": topic, "sentiment": {"label": sentiment}})
    return StoredResult(f"r{i}", payload, topic, sentiment, tickers, true_topic, true_sentiment)


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Every key's type and value (TTL rounded to presence), so two states can be compared;
    not the batches' receipts (``Keys.batch``), of which every write leaves one."""
    state: dict[str, Any] = {}
    for key in sorted(client.scan_iter(count=1000)):
        if key.decode().startswith(KEYS.batch("")):
            continue
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            raise AssertionError(f"unexpected {kind} at {key!r}")
        state[key.decode()] = (kind, value, client.ttl(key) > 0)
    return state


def test_a_batch_counts_topics_sentiments_tickers_buckets_and_accuracy(redis_client):
    store = store_at(redis_client)
    batch = [
        result(1, "Earnings", "Bullish", ("TSLA", "AAPL"), "Earnings", None),
        result(2, "Earnings", "Bearish", ("TSLA",), "Markets", None),
        result(3, "Markets", "Neutral", (), None, "Neutral"),
        result(4, "Fed | Central Banks", "Bearish", ("SPY",), None, "Bullish"),
    ]
    outcome = store.write_batch(batch, [DeadLetterMark("t/0/5", "not_json")], model="rules@1")
    assert outcome.new == [True] * 4 and outcome.dead_new == [True]

    stats = store.stats()
    assert stats["processed"] == 4
    assert stats["topics"] == {"Earnings": 2, "Fed | Central Banks": 1, "Markets": 1}
    assert stats["sentiments"] == {"Bearish": 2, "Bullish": 1, "Neutral": 1}
    assert stats["topic_sentiment"] == {
        "Earnings": {"Bearish": 1, "Bullish": 1, "Neutral": 0},
        "Fed | Central Banks": {"Bearish": 1, "Bullish": 0, "Neutral": 0},
        "Markets": {"Bearish": 0, "Bullish": 0, "Neutral": 1},
    }
    assert stats["tickers"] == [
        {"ticker": "TSLA", "count": 2, "sentiments": {"Bearish": 1, "Bullish": 1, "Neutral": 0}},
        {"ticker": "AAPL", "count": 1, "sentiments": {"Bearish": 0, "Bullish": 1, "Neutral": 0}},
        {"ticker": "SPY", "count": 1, "sentiments": {"Bearish": 1, "Bullish": 0, "Neutral": 0}},
    ]  # equal counts in name order, as the windowed reader ranks them
    topic_acc = stats["live_accuracy"]["topic"]
    assert (topic_acc["labelled"], topic_acc["correct"], topic_acc["accuracy"]) == (2, 1, 0.5)
    assert topic_acc["per_class"] == {
        "Earnings": {"labelled": 1, "correct": 1, "accuracy": 1.0},
        "Markets": {"labelled": 1, "correct": 0, "accuracy": 0.0},
    }
    sentiment_acc = stats["live_accuracy"]["sentiment"]
    assert (sentiment_acc["labelled"], sentiment_acc["correct"]) == (2, 1)
    assert set(sentiment_acc["per_class"]) == {"Neutral", "Bullish"}
    assert (stats["labelled"], stats["accuracy"]) == (2, 0.5)  # the topic task's figures
    assert stats["dlq"] == 1 and stats["models"] == {"rules@1": 4}

    minute = epoch_minute(NOW)
    buckets = {what: redis_client.hgetall(KEYS.minute(minute, what))
               for what in ("topics", "sentiments", "tickers", "ticker_sentiment")}
    assert buckets["topics"] == {b"Earnings": b"2", b"Markets": b"1", b"Fed | Central Banks": b"1"}
    assert buckets["sentiments"] == {b"Bullish": b"1", b"Bearish": b"2", b"Neutral": b"1"}
    assert buckets["tickers"] == {b"TSLA": b"2", b"AAPL": b"1", b"SPY": b"1"}
    assert buckets["ticker_sentiment"] == {
        b"TSLA|Bullish": b"1", b"TSLA|Bearish": b"1", b"AAPL|Bullish": b"1", b"SPY|Bearish": b"1"}

    assert redis_client.lrange(KEYS.recent, 0, -1) == [b"r4", b"r3", b"r2", b"r1"]
    assert redis_client.lrange(KEYS.index("topic", "Earnings"), 0, -1) == [b"r2", b"r1"]
    assert redis_client.lrange(KEYS.index("sentiment", "Bearish"), 0, -1) == [b"r4", b"r2"]
    assert redis_client.lrange(KEYS.index("ticker", "TSLA"), 0, -1) == [b"r2", b"r1"]
    assert redis_client.lrange(KEYS.index("ticker", "SPY"), 0, -1) == [b"r4"]
    events = redis_client.xrange(KEYS.events)
    assert len(events) == 1
    assert json.loads(events[0][1][b"ids"]) == ["r1", "r2", "r3", "r4"]
    assert json.loads(redis_client.get(KEYS.tweet("r4")))["sentiment"] == {"label": "Bearish"}


def test_a_ticker_named_twice_in_one_tweet_counts_once(redis_client):
    store = store_at(redis_client)
    store.write_batch([result(1, tickers=("TSLA", "TSLA"))], model="m@1")
    assert redis_client.zscore(KEYS.tickers, "TSLA") == 1
    assert redis_client.hgetall(KEYS.ticker("TSLA")) == {b"Bullish": b"1"}
    assert redis_client.lrange(KEYS.index("ticker", "TSLA"), 0, -1) == [b"r1"]
    minute = epoch_minute(NOW)
    assert redis_client.hget(KEYS.minute(minute, "tickers"), "TSLA") == b"1"


def test_writing_the_same_batch_twice_changes_nothing_but_duplicates(redis_client):
    batch = [result(i, topic=("Earnings", "Markets")[i % 2],
                    sentiment=SENTIMENT_NAMES[i % 3], tickers=(f"T{i % 4}", "SPY"),
                    true_topic="Earnings", true_sentiment="Neutral") for i in range(50)]
    store_at(redis_client).write_batch(batch, [DeadLetterMark("t/0/1", "not_json")], "m@1")
    before = snapshot(redis_client)
    # Again, a minute later (a redelivery after a crash): no new bucket, no event, no count.
    again = store_at(redis_client, NOW + 60).write_batch(
        batch, [DeadLetterMark("t/0/1", "not_json")], "m@1")
    assert again.new == [False] * 50 and again.dead_new == [False]
    after = snapshot(redis_client)
    duplicates = after.pop(KEYS.duplicates)
    assert duplicates == ("string", b"50", False)
    assert after == before
    assert any(key.startswith(f"{KEYS.prefix}:minute:") for key in before)
    assert any(key.startswith(f"{KEYS.prefix}:index:ticker:") for key in before)


def test_only_the_new_ids_of_a_mixed_batch_count(redis_client):
    store = store_at(redis_client)
    store.write_batch([result(1, tickers=("TSLA",))], model="m@1")
    outcome = store.write_batch([result(1, tickers=("TSLA",)), result(2, tickers=("TSLA",))],
                                model="m@1")
    assert outcome.new == [False, True]
    stats = store.stats()
    assert stats["processed"] == 2 and stats["duplicates"] == 1
    assert stats["tickers"][0]["count"] == 2
    events = [json.loads(fields[b"ids"]) for _, fields in redis_client.xrange(KEYS.events)]
    assert events == [["r1"], ["r2"]]


def test_minute_buckets_expire_after_the_retention(redis_client):
    store_at(redis_client, retention=900).write_batch([result(1, tickers=("TSLA",))], model="m")
    minute = epoch_minute(NOW)
    for what in ("topics", "sentiments", "tickers", "ticker_sentiment"):
        ttl = redis_client.ttl(KEYS.minute(minute, what))
        assert 890 <= ttl <= 900, (what, ttl)
    # The totals are kept for good.
    assert redis_client.ttl(KEYS.counts) == -1 and redis_client.ttl(KEYS.tickers) == -1
    with pytest.raises(ValueError, match="positive"):
        ResultStore(redis_client, bucket_retention_s=0)


def test_a_write_retried_with_its_token_answers_what_the_first_counted(redis_client):
    """A retry after a lost reply (the script ran, the answer never came) must not read the
    batch as duplicates: the worker's stats, metrics and live accuracy follow these flags."""
    store = store_at(redis_client)
    batch = [result(1, true_topic="Earnings"), result(2)]
    dead = [DeadLetterMark("tweets/0/7", "not_json")]
    first = store.write_batch(batch, dead, model="m", token="b1")
    before = snapshot(redis_client)
    again = store.write_batch(batch, dead, model="m", token="b1")
    assert again == first and first.new == [True, True] and first.dead_new == [True]
    assert snapshot(redis_client) == before  # nothing written, nothing counted
    assert 3590 <= redis_client.ttl(KEYS.batch("b1")) <= 3600
    # another batch carrying the same tweets (a redelivery) is what duplicates are
    later = store.write_batch(batch, dead, model="m", token="b2")
    assert later.new == [False, False] and later.dead_new == [False]
    assert redis_client.get(KEYS.duplicates) == b"2"


def test_results_and_dead_letters_expire_after_their_retention_and_count_once_until_then(
        redis_client):
    """Every tweet ever classified stayed in Redis before; its key is also the mark that
    tells a redelivery from a new tweet, so a repeat within the retention still counts once."""
    store = ResultStore(redis_client, result_retention_s=120)
    assert store.write_batch([result(1), result(2)], model="m").new == [True, True]
    assert 110 <= redis_client.ttl(KEYS.tweet("r1")) <= 120
    assert store.write_batch([result(1)], model="m").new == [False]
    assert redis_client.get(KEYS.processed) == b"2"
    # A dead letter's mark too: it was one member of a set that grew for ever.
    letter = DeadLetterMark("tweets/0/9", "not_json")
    assert store.write_batch([], [letter], model="m").dead_new == [True]
    assert 110 <= redis_client.ttl(KEYS.dlq_seen("tweets/0/9")) <= 120
    assert store.write_batch([], [letter], model="m").dead_new == [False]
    assert redis_client.get(KEYS.dlq) == b"1"
    # A ticker's index list goes with its results: a stream can name any number of tickers.
    named = result(3, tickers=("ZZZQ",))
    assert store.write_batch([named], model="m").new == [True]
    assert 110 <= redis_client.ttl(KEYS.index("ticker", "ZZZQ")) <= 120
    assert redis_client.ttl(KEYS.index("topic", named.topic)) == -1  # 20 of them, kept
    with pytest.raises(ValueError, match="positive"):
        ResultStore(redis_client, result_retention_s=0)


@pytest.mark.parametrize(("name", "field", "default"), [
    ("FINTWEET_BUCKET_RETENTION_S", "bucket_retention_s", 7 * 24 * 3600),
    ("FINTWEET_RESULT_RETENTION_S", "result_retention_s", 30 * 24 * 3600),
])
def test_retentions_come_from_the_environment(monkeypatch, name, field, default):
    from fintweet.core.config import Settings

    assert getattr(Settings(), field) == default
    monkeypatch.setenv(name, "3600")
    assert getattr(Settings(), field) == 3600
    assert ResultStore.from_settings(Settings()).__dict__[field] == 3600
    monkeypatch.setenv(name, "0")
    with pytest.raises(ValueError, match=name):
        getattr(Settings(), field)
    with pytest.raises(ValueError, match=name):
        ResultStore.from_settings(Settings())


def test_index_lists_keep_the_newest_thousand(redis_client):
    store = store_at(redis_client)
    n = INDEX_LENGTH + 300
    store.write_batch([result(i, tickers=("TSLA",)) for i in range(700)], model="m")
    store.write_batch([result(i, tickers=("TSLA",)) for i in range(700, n)], model="m")
    for key in (KEYS.recent, KEYS.index("topic", "Earnings"), KEYS.index("sentiment", "Bullish"),
                KEYS.index("ticker", "TSLA")):
        ids = redis_client.lrange(key, 0, -1)
        assert len(ids) == INDEX_LENGTH, key
        assert ids[0] == f"r{n - 1}".encode() and ids[-1] == f"r{n - INDEX_LENGTH}".encode()


def decoded(tweet_id: str, text: str, label: int | None = None,
            sentiment_label: int | None = None) -> Decoded:
    now = datetime.now(UTC)
    tweet = Tweet(id=tweet_id, text=text, created_at=now, source="replay", label=label,
                  sentiment_label=sentiment_label, ingested_at=now)
    return Decoded(tweet, None)


def test_classify_builds_the_agreed_result_json_with_one_model_call():
    model = RuleModel()
    batch = [
        decoded("a", "$TSLA beats earnings &amp; $tsla jumps https://t.co/x", label=5),
        decoded("b", "Oil falls as OPEC cuts output", sentiment_label=0),
        decoded("c", "Quiet day", label=5, sentiment_label=2),
    ]
    classified = classify(model, batch)
    assert model.calls == [3]
    first = json.loads(classified.results[0].payload)
    assert first["topic"] == "Earnings" and first["topic_id"] == 5
    assert first["sentiment"] == {"id": 1, "label": "Bullish", "confidence": 0.8}
    assert first["top3"][0] == {"topic_id": 5, "topic": "Earnings", "p": 0.9}
    assert first["links"]["cashtags"] == ["TSLA"]
    assert first["text"].startswith("$TSLA beats earnings & $tsla")
    assert first["label_id"] == 5 and first["label"] == "Earnings"
    assert "true_sentiment" not in first
    second = json.loads(classified.results[1].payload)
    assert second["sentiment"]["label"] == "Bearish"
    assert second["true_sentiment"] == {"id": 0, "label": "Bearish"}
    assert "label" not in second and "label_id" not in second
    assert set(first) >= {"id", "text", "topic_id", "topic", "confidence", "top3", "sentiment",
                          "links", "model", "source", "created_at", "ingested_at", "processed_at"}
    assert classified.results[0].tickers == ("TSLA",)
    assert classified.results[0].sentiment == "Bullish"
    assert classified.results[2].true_topic == "Earnings"
    assert classified.results[2].true_sentiment == "Neutral"
    assert classified.sentiment_predicted.tolist() == [1, 0, 2]
    assert classified.sentiment_truth.tolist() == [-1, 0, 2]
    assert classified.topic_truth.tolist() == [5, -1, 5]
    assert classified.model == "rules@test"


def test_a_tweet_naming_tsla_twice_counts_once_through_classify(redis_client):
    classified = classify(RuleModel(), [
        decoded("x1", "$TSLA up, $TSLA again and $tsla once more"),
        decoded("x2", "$TSLA and $AAPL"),
    ])
    store_at(redis_client).write_batch(classified.results, model=classified.model)
    tickers = {t["ticker"]: t["count"] for t in store_at(redis_client).stats()["tickers"]}
    assert tickers == {"TSLA": 2, "AAPL": 1}


def test_a_tweet_naming_more_tickers_than_any_post_does_counts_its_first_ones(redis_client):
    """A 10,000-character text can name ~1,400 cashtags: a batch of such tweets held Redis for
    seconds (every other client got BUSY) and grew each per-minute ticker hash by as many
    fields."""
    names = tuple(f"T{i:03d}" for i in range(MAX_TICKERS_PER_TWEET + 30))
    store = store_at(redis_client)
    store.write_batch([result(1, tickers=names)])
    counted = {t["ticker"] for t in store.top_tickers(len(names))}
    assert counted == set(names[:MAX_TICKERS_PER_TWEET])
    minute = redis_client.hgetall(KEYS.minute(epoch_minute(NOW), "tickers"))
    assert {name.decode() for name in minute} == counted


def test_redacted_hides_the_password():
    assert redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    # redis-py's way for a socket: the password in the query, shown whole before
    assert redacted("unix:///tmp/r.sock?db=1&password=S3CRET") == (
        "unix:///tmp/r.sock?db=1&password=***")


def run_stats(env_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "FINTWEET_REDIS_URL": env_url}
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", "stats", *flags], env=env,
                          capture_output=True, text=True, timeout=60)


def test_stats_json_has_the_sentiment_and_ticker_fields(stack, redis_client):
    classified = classify(RuleModel(), [
        decoded("s1", "$TSLA beats earnings", label=5, sentiment_label=1),
        decoded("s2", "$TSLA falls after Fed hikes", label=1, sentiment_label=2),
    ])
    ResultStore.from_url(stack.redis_url).write_batch(classified.results, model=classified.model)
    done = run_stats(stack.redis_url, "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["processed"] == 2
    assert stats["sentiments"] == {"Bearish": 1, "Bullish": 1, "Neutral": 0}
    assert stats["topic_sentiment"]["Earnings"]["Bullish"] == 1
    assert stats["tickers"] == [
        {"ticker": "TSLA", "count": 2, "sentiments": {"Bearish": 1, "Bullish": 1, "Neutral": 0}}]
    assert stats["live_accuracy"]["topic"]["accuracy"] == 1.0
    assert stats["live_accuracy"]["sentiment"]["accuracy"] == 0.5
    table = run_stats(stack.redis_url)
    assert table.returncode == 0, table.stderr
    for needle in ("Bullish", "TSLA", "sentiment accuracy", "topic accuracy"):
        assert needle in table.stdout, needle


def test_stats_with_redis_down_is_one_line_naming_the_url():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    done = run_stats(url, "--json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fintweet stats: error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "hunter2" not in done.stderr and "FINTWEET_REDIS_URL" in lines[0]
    assert done.stdout == ""


def test_the_all_time_ticker_table_keeps_the_most_named_tickers(redis_client) -> None:
    """Any cashtag can be invented, so the table is capped: past it the least named ticker
    leaves with its sentiment mix and its index list, and the others keep their counts."""
    store = ResultStore(redis_client, max_tickers=3)
    named = [("AAA", 4), ("BBB", 3), ("CCC", 2)]
    i = 0
    for ticker, times in named:
        for _ in range(times):
            store.write_batch([result(i, tickers=(ticker,))], model="m")
            i += 1
    store.write_batch([result(i, tickers=("NEW",))], model="m")  # a fourth: CCC (2) > NEW (1)
    assert [(e["ticker"], e["count"]) for e in store.top_tickers(10)] == [
        ("AAA", 4), ("BBB", 3), ("CCC", 2)]
    assert not redis_client.exists(KEYS.ticker("NEW"), KEYS.index("ticker", "NEW"))
    assert redis_client.exists(KEYS.ticker("CCC")) and redis_client.llen(
        KEYS.index("ticker", "CCC")) == 2
    assert redis_client.get(KEYS.processed) == b"10"  # the tweet itself is counted as ever
    with pytest.raises(ValueError, match="max_tickers"):
        ResultStore(redis_client, max_tickers=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_all_time_and_windowed_top_tickers_break_ties_alike(redis_client, n) -> None:
    """`stats --top N` read equal counts in reverse name order and `/v1/tickers?n=N` in name
    order, so at a tie on the cut the two named different tickers."""
    from fintweet.core.reader import ResultReader

    store = store_at(redis_client, NOW)
    named = {"AAA": 3, "ZZZ": 2, "MMM": 2, "BBB": 2, "CCC": 1}
    mentions = [ticker for ticker, times in named.items() for _ in range(times)]
    results = [result(i, tickers=(ticker,)) for i, ticker in enumerate(mentions)]
    store.write_batch(results, model="m")
    all_time = [(e["ticker"], e["count"]) for e in store.top_tickers(n)]
    windowed = [(e["ticker"], e["count"]) for e in
                ResultReader(redis_client).top_tickers_in_window(60, n, now=NOW)]
    ranked = [("AAA", 3), ("BBB", 2), ("MMM", 2), ("ZZZ", 2), ("CCC", 1)]
    assert all_time == windowed == ranked[:n]


@pytest.fixture
def password_on_redis(redis_client) -> Iterator[str]:
    """The session's Redis asks for a password for the length of one test."""
    redis_client.config_set("requirepass", "hunter2")
    try:
        yield "hunter2"
    finally:
        authed = redis.Redis(host=redis_client.connection_pool.connection_kwargs["host"],
                             port=redis_client.connection_pool.connection_kwargs["port"],
                             password="hunter2")
        authed.config_set("requirepass", "")
        authed.close()


def test_a_wrong_password_a_missing_one_and_a_missing_database_say_so(stack, password_on_redis):
    """Each is a URL to fix, not a Redis to start: "is it up?" would send the user the wrong
    way."""
    address = stack.redis_url.removeprefix("redis://").split("/")[0]
    for url in (f"redis://:wrong@{address}/0", f"redis://{address}/0"):
        done = run_stats(url)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "refused the connection's credentials" in lines[0], lines
        assert "is it up" not in lines[0] and "wrong" not in lines[0]
    done = run_stats(f"redis://:{password_on_redis}@{address}/99")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "has no such database" in lines[0] and password_on_redis not in lines[0]
    assert run_stats(f"redis://:{password_on_redis}@{address}/0").returncode == 0


def test_show_hides_the_password_when_the_id_is_not_there(stack, password_on_redis) -> None:
    address = stack.redis_url.removeprefix("redis://").split("/")[0]
    env = {**os.environ, "FINTWEET_REDIS_URL": f"redis://:{password_on_redis}@{address}/0"}
    done = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "show", "nope"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no result for tweet id 'nope'" in done.stderr
    assert password_on_redis not in done.stderr and ":***@" in done.stderr
