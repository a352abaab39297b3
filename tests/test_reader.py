"""core/reader.py against the real Redis, seeded with the documented layout (tests/seed.py)."""

from __future__ import annotations

import pytest
import redis

from fintweet.core.keys import epoch_minute
from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.reader import FilterError, ResultReader
from tests.seed import make_result, seed

EARNINGS = TOPIC_NAMES.index("Earnings")
OIL = TOPIC_NAMES.index("Energy | Oil")
BEARISH, BULLISH, NEUTRAL = range(3)


def corpus(n: int = 30) -> list[dict]:
    """Tweet i: Earnings when even, Oil when odd; Bullish when i % 3 == 0, Bearish when 1,
    Neutral when 2; $AAPL on multiples of 5, $XOM on every oil tweet."""
    results = []
    for i in range(n):
        topic = EARNINGS if i % 2 == 0 else OIL
        text = f"tweet {i}"
        if i % 5 == 0:
            text += " $aapl"
        if topic == OIL:
            text += " $XOM https://t.co/abc"
        results.append(make_result(f"id{i}", text, topic, (BULLISH, BEARISH, NEUTRAL)[i % 3]))
    return results


@pytest.fixture
def reader(redis_client: redis.Redis) -> ResultReader:
    return ResultReader(redis_client)


def ids(results: list[dict]) -> list[str]:
    return [r["id"] for r in results]


def test_latest_is_newest_first_and_filters_by_name_or_id(redis_client, reader) -> None:
    for start in range(0, 30, 10):  # three batches, like three worker writes
        seed(redis_client, corpus()[start:start + 10])
    page, cursor = reader.latest(limit=5)
    assert ids(page) == ["id29", "id28", "id27", "id26", "id25"]
    assert cursor == "id25"
    by_name, _ = reader.latest(topic="Earnings", limit=100)
    by_id, _ = reader.latest(topic=str(EARNINGS), limit=100)
    by_key, _ = reader.latest(topic=f"LABEL_{EARNINGS}", limit=100)
    assert ids(by_name) == ids(by_id) == ids(by_key) == [f"id{i}" for i in range(28, -1, -2)]
    bearish, _ = reader.latest(sentiment="bearish", limit=100)
    assert ids(bearish) == [f"id{i}" for i in range(29, -1, -1) if i % 3 == 1]
    assert ids(reader.latest(sentiment="0", limit=100)[0]) == ids(bearish)
    aapl, _ = reader.latest(ticker="$aapl", limit=100)
    assert ids(aapl) == ["id25", "id20", "id15", "id10", "id5", "id0"]
    # Two filters: the intersection, newest first.
    both, _ = reader.latest(topic="Energy | Oil", sentiment="Bullish", limit=100)
    assert ids(both) == [f"id{i}" for i in range(29, -1, -1) if i % 2 == 1 and i % 3 == 0]
    assert all(r["links"]["cashtags"] == ["XOM"] or "XOM" in r["links"]["cashtags"] for r in both)


def test_pages_neither_repeat_nor_skip_when_results_arrive_between_them(
        redis_client, reader) -> None:
    seed(redis_client, corpus(20))
    first, cursor = reader.latest(limit=7)
    seed(redis_client, [make_result("late", "late tweet", EARNINGS, NEUTRAL)])
    seen = ids(first)
    while cursor:
        page, cursor = reader.latest(limit=7, cursor=cursor)
        seen += ids(page)
    assert seen == [f"id{i}" for i in range(19, -1, -1)]
    filtered_seen: list[str] = []
    cursor = None
    while True:
        page, cursor = reader.latest(topic="Earnings", limit=3, cursor=cursor)
        filtered_seen += ids(page)
        if cursor is None:
            break
    assert filtered_seen == ["late", *[f"id{i}" for i in range(18, -1, -2)]]


def test_a_page_read_in_chunks_stays_whole_when_results_arrive_between_chunks(
        redis_client, reader, monkeypatch) -> None:
    """Two filters read the shorter index in chunks, with an MGET between them; a worker's write
    then pushes the list down. The next chunk starts after the last id read, not at an offset,
    which read 150 ids of the first chunk again."""
    seed(redis_client, corpus(900))
    real_mget = reader.client.mget
    chunks: list[int] = []

    def mget_then_a_write(keys):
        got = real_mget(keys)
        if not chunks:
            seed(redis_client, [make_result(f"new{i}", f"new {i}", OIL, BULLISH)
                                for i in range(150)])
        chunks.append(len(keys))
        return got

    monkeypatch.setattr(reader.client, "mget", mget_then_a_write)
    page, cursor = reader.latest(topic="Energy | Oil", sentiment="Bullish", limit=120)
    assert len(chunks) == 2  # the write landed between the two chunks
    oil_and_bullish = [f"id{i}" for i in range(899, -1, -1) if i % 6 == 3]
    assert ids(page) == oil_and_bullish[:120]
    assert cursor == "id183"


def test_an_id_written_again_after_its_result_expired_is_paged_once_and_paging_ends(
        redis_client, reader) -> None:
    """A CSV replayed after the result retention brings its row ids back as new tweets, and
    their old places are still in lists the stream has not pushed them out of. The cursor, found
    at the id's newer place, sent paging back from its older one, for ever."""
    seed(redis_client, corpus(6))
    for again in ("id1", "id2"):
        redis_client.delete(reader.keys.tweet(again))  # as if expired
    seed(redis_client, [r for r in corpus(6) if r["id"] in ("id1", "id2")])
    assert [i.decode() for i in redis_client.lrange(reader.keys.recent, 0, -1)] == [
        "id2", "id1", "id5", "id4", "id3", "id2", "id1", "id0"]
    for limit in (1, 2, 4, 50):
        seen: list[str] = []
        cursor = None
        for _ in range(20):
            page, cursor = reader.latest(limit=limit, cursor=cursor)
            seen += ids(page)
            if cursor is None:
                break
        assert cursor is None, f"paging by {limit} did not end"
        assert seen == ["id2", "id1", "id5", "id4", "id3", "id0"], limit
    both, _ = reader.latest(topic="Earnings", sentiment="Bullish", limit=10)  # read in chunks
    assert ids(both) == ["id0"]
    # Only older places left after a full page: that page is the last (no cursor to an empty one).
    redis_client.delete(reader.keys.tweet("id0"))
    seed(redis_client, [r for r in corpus(6) if r["id"] == "id0"])
    page, cursor = reader.latest(limit=6)
    assert ids(page) == ["id0", "id2", "id1", "id5", "id4", "id3"] and cursor is None


def test_unknown_filters_and_limits_are_errors_naming_the_value(reader) -> None:
    with pytest.raises(FilterError, match="unknown topic 'Sports'"):
        reader.latest(topic="Sports")
    with pytest.raises(FilterError, match="unknown sentiment 'happy'"):
        reader.latest(sentiment="happy")
    with pytest.raises(FilterError, match="topic id 42"):
        reader.latest(topic="42")
    with pytest.raises(FilterError, match="limit 0"):
        reader.latest(limit=0)
    assert reader.latest(ticker="NOPE") == ([], None)


def test_missing_result_and_trimmed_cursor(redis_client, reader) -> None:
    """A cursor trimmed off the capped list ends the paging; one that names no result, or is
    no id at all, is an error (it was an empty last page, as if the list had ended there)."""
    seed(redis_client, corpus(3))
    assert reader.result("id1")["topic"] == "Energy | Oil"
    assert reader.result("nope") is None
    redis_client.lrem(reader.keys.recent, 0, "id0")  # as the cap trims the oldest
    assert reader.result("id0") is not None
    assert reader.latest(cursor="id0") == ([], None)
    with pytest.raises(FilterError, match="cursor 'not-in-the-list' names no stored result"):
        reader.latest(cursor="not-in-the-list")
    with pytest.raises(FilterError, match="cursor 'id 1; drop' is not a tweet id"):
        reader.latest(cursor="id 1; drop")
    # a cursor of another filter's pages: read as the end of this list (an empty 200) before
    other_topic = reader.result("id1")["topic"]
    assert reader.result("id2")["topic"] != other_topic
    with pytest.raises(FilterError, match="cursor 'id2' is a result these filters do not list"):
        reader.latest(topic=other_topic, cursor="id2")
    assert reader.latest(topic=other_topic, cursor="id1") == ([], None)  # its own: the end


def test_top_tickers_and_series_sum_the_minute_buckets_of_the_window(
        redis_client, reader) -> None:
    now = epoch_minute() * 60 + 30.0
    # Ten minutes ago: 3 $TSLA (2 Bullish, 1 Bearish). Now: 2 $TSLA Bearish, 4 $NVDA Bullish.
    # Two hours ago: 50 $OLD, outside a 1h window.
    old = [make_result(f"old{i}", "$OLD up", OIL, BULLISH) for i in range(50)]
    seed(redis_client, old, at=now - 7200)
    seed(redis_client, [make_result("a", "$TSLA up", EARNINGS, BULLISH),
                        make_result("b", "$TSLA up", EARNINGS, BULLISH),
                        make_result("c", "$TSLA down", EARNINGS, BEARISH)], at=now - 600)
    seed(redis_client, [make_result("d", "$tsla", EARNINGS, BEARISH),
                        make_result("e", "$TSLA", OIL, BEARISH),
                        *[make_result(f"n{i}", "$NVDA", EARNINGS, BULLISH) for i in range(4)]],
         at=now)
    top = reader.top_tickers_in_window(60, 10, now=now)
    assert top == [
        {"ticker": "TSLA", "count": 5, "sentiments": {"Bearish": 3, "Bullish": 2, "Neutral": 0}},
        {"ticker": "NVDA", "count": 4, "sentiments": {"Bearish": 0, "Bullish": 4, "Neutral": 0}},
    ]
    assert reader.top_tickers_in_window(180, 1, now=now)[0]["ticker"] == "OLD"
    series = reader.series("ticker", "$tsla", 60, 5, now=now)
    assert series["value"] == "TSLA" and len(series["points"]) == 12
    counts = [p["count"] for p in series["points"]]
    assert counts[-1] == 2 and counts[-3] == 3 and sum(counts) == 5  # -600 s is 2 steps back
    assert series["points"][-1]["sentiments"] == {"Bearish": 2, "Bullish": 0, "Neutral": 0}
    assert series["points"][-1]["t"] == (epoch_minute(now) - 4) * 60
    topic = reader.series("topic", "Earnings", 30, 1, now=now)
    assert [p["count"] for p in topic["points"]][-1] == 5
    assert sum(p["count"] for p in topic["points"]) == 8
    sentiment = reader.series("sentiment", "2", 60, 60, now=now)  # id → name
    assert sentiment["value"] == SENTIMENT_NAMES[2] and sentiment["points"][0]["count"] == 0
    with pytest.raises(FilterError, match="longer than the window"):
        reader.series("topic", "Earnings", 5, 10, now=now)
    # nine 7-minute points would cover 63 minutes of a 60-minute window
    with pytest.raises(FilterError, match="step 7 min does not divide the window 60 min"):
        reader.series("topic", "Earnings", 60, 7, now=now)


def test_follow_reads_batches_written_after_the_tail(redis_client, reader) -> None:
    seed(redis_client, corpus(4))
    tail = reader.events_tail()
    assert reader.follow(tail, block_ms=50) == []
    seed(redis_client, [make_result("new1", "Fed holds rates", EARNINGS, NEUTRAL),
                        make_result("new2", "$AAPL beats", EARNINGS, BULLISH)])
    events = reader.follow(tail, block_ms=1000)
    assert len(events) == 1
    assert events[0].ids == ["new1", "new2"]
    assert ids(events[0].results) == ["new1", "new2"]
    assert reader.follow(events[0].stream_id, block_ms=50) == []
    assert ResultReader(redis_client, "other").events_tail() == "0-0"


def test_two_filters_read_the_rarest_value_s_list_when_both_lists_are_full(reader,
                                                                          redis_client) -> None:
    """Both index lists hold their 1,000 newest ids: the Neutral one only the Oil tweets written
    last, the Earnings one all the Earnings tweets. The lengths tie, and reading the Neutral
    list found none of the 100 Earnings-and-Neutral tweets."""
    earnings = [make_result(f"e{i}", f"earnings {i}", EARNINGS,
                            NEUTRAL if i % 10 == 0 else BULLISH) for i in range(1000)]
    oil = [make_result(f"o{i}", f"oil {i}", OIL, NEUTRAL) for i in range(1000)]
    seed(redis_client, earnings)
    seed(redis_client, oil)
    found, cursor = reader.latest(topic="Earnings", sentiment="Neutral", limit=500)
    assert ids(found) == [f"e{i}" for i in range(990, -1, -10)] and cursor is None


def test_paging_two_filters_goes_on_when_the_rarest_value_changes_between_pages(
        reader, redis_client) -> None:
    """Page one read the Neutral list (the rarer value then); more Neutral tweets made Earnings
    the rarer by the next page, whose list no longer holds the cursor (newer Earnings tweets
    pushed it out): paging ended there, with 30 results never shown."""
    old = [make_result(f"n{i}", f"earnings note {i}", EARNINGS, NEUTRAL) for i in range(50)]
    newer = [make_result(f"b{i}", f"earnings beat {i}", EARNINGS, BULLISH) for i in range(1000)]
    seed(redis_client, old)
    seed(redis_client, newer)
    first, cursor = reader.latest(topic="Earnings", sentiment="Neutral", limit=20)
    assert ids(first) == [f"n{i}" for i in range(49, 29, -1)] and cursor == "n30"
    redis_client.hincrby(reader.keys.sentiments, "Neutral", 5000)  # now the commoner value
    rest: list[str] = []
    while cursor is not None:
        page, cursor = reader.latest(topic="Earnings", sentiment="Neutral", limit=20,
                                     cursor=cursor)
        rest += ids(page)
    assert rest == [f"n{i}" for i in range(29, -1, -1)]
