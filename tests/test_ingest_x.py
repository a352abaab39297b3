"""``fintweet ingest x`` against a fake X API (tests/x_double.py: a real HTTP server tweepy talks to
unchanged), the real embedded broker and the real redis-server.

What must hold: payloads map to the schema with full text and real link destinations; the rule set
is reconciled, not piled up; search resumes from the since_id saved in Redis; 429s wait for the
reset, 5xx and dropped connections are retried, malformed lines are counted and skipped; every
served tweet reaches the topic exactly once; a rejected token ends the run with exit code 2 and a
message that does not contain it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tweepy
from prometheus_client import CollectorRegistry

from fintweet.cli.main import main as fintweet_main
from fintweet.core.backoff import Backoff
from fintweet.core.producer import TweetProducer
from fintweet.core.schema import MAX_URL_CHARS, MAX_URLS
from fintweet.core.text import MAX_TEXT_CHARS, prepare
from fintweet.devstack.process import free_port
from fintweet.ingest.x.errors import XAuthError, XRequestError, XRuleError, XStateError
from fintweet.ingest.x.ingester import RecentIds, XStats
from fintweet.ingest.x.mapping import MalformedTweet, tweet_from_api
from fintweet.ingest.x.policy import RetryPolicy, default_search_interval
from fintweet.ingest.x.rules import (
    DEFAULT_SEARCH_QUERY,
    DEFAULT_STREAM_RULES,
    RuleSpec,
    read_rules_file,
    reconcile_rules,
)
from fintweet.ingest.x.search import SearchIngester, SinceIdStore
from fintweet.ingest.x.stream import StreamIngester
from fintweet.ingest.x.token import BearerToken, TokenRedaction
from fintweet.ingest.x.transport import route_session
from fintweet.monitoring.ingest import IngestMetrics
from tests.helpers import consume_all, http_get, wait_for
from tests.x_double import (
    CLOSE,
    DISCONNECT,
    KEEPALIVE,
    Pause,
    Raw,
    Recorded,
    XApiDouble,
    make_tweet,
    snowflake,
    tweet_id,
)

FAST = RetryPolicy(network_base_s=0.05, network_cap_s=0.2, http_base_s=0.05, http_cap_s=0.2,
                   reset_margin_s=0.1, rate_limit_fallback_s=0.5)
SECRET = "AAAAAAAAAAAAAAAAAAAAAsecret%2Ftoken%3Dnever-print-me"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def api():
    with XApiDouble(token=SECRET) as double:
        yield double


@pytest.fixture
def token() -> BearerToken:
    return BearerToken(SECRET)


def ids_of(messages: list[dict]) -> Counter[str]:
    return Counter(m["id"] for m in messages)


def run_in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# -- mapping --------------------------------------------------------------------------------------


def test_long_tweet_maps_to_note_text_and_expanded_urls():
    note = "Full note: " + "the Fed held rates steady and signalled two cuts later this year. " * 8
    payload = make_tweet(1, "Full note: the Fed held rates steady and… https://t.co/cut",
                         urls=["https://www.reuters.com/markets/us/fed-holds-2024-05-01/"],
                         note_text=note, note_urls=["https://www.federalreserve.gov/statement"])
    tweet = tweet_from_api(payload)
    assert tweet.text == note  # not the truncated text
    assert tweet.id == tweet_id(1) and tweet.source == "x"
    assert tweet.author_id == "2000" and tweet.lang == "en"
    assert tweet.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert tweet.urls == ["https://www.federalreserve.gov/statement",
                          "https://www.reuters.com/markets/us/fed-holds-2024-05-01/"]


def test_expanded_urls_replace_tco_links_in_the_workers_link_extraction():
    payload = make_tweet(2, "$TSLA deliveries beat", urls=["https://www.cnbc.com/tesla-q2"])
    tweet = tweet_from_api(tweepy.Tweet(payload))  # tweepy's parsed object maps the same
    assert "https://t.co/" in tweet.text
    links = prepare(tweet.text, tweet.urls).links
    assert links.urls == ("https://www.cnbc.com/tesla-q2",)
    assert links.cashtags == ("TSLA",)


def test_missing_optional_fields_map_to_none_and_ingest_time():
    before = datetime.now(UTC)
    tweet = tweet_from_api({"id": "42", "text": "Gold hits a record"})
    assert (tweet.author_id, tweet.lang, tweet.urls) == (None, None, [])
    assert before - timedelta(seconds=1) <= tweet.created_at <= datetime.now(UTC)


def test_retweet_takes_the_full_text_of_the_original_from_includes():
    original = make_tweet(7, "A long original headline " + "x" * 200,
                          urls=["https://ft.com/a"])
    retweet = make_tweet(8, "RT @FT: A long original headline xxxx…")
    retweet["referenced_tweets"] = [{"type": "retweeted", "id": original["id"]}]
    tweet = tweet_from_api(retweet, {"tweets": [tweepy.Tweet(original)]})
    assert tweet.id == retweet["id"]
    assert tweet.text.startswith("A long original headline xxx") and len(tweet.text) > 200
    assert tweet.urls == ["https://ft.com/a"]


def test_text_longer_than_the_schema_allows_is_truncated_not_dropped():
    tweet = tweet_from_api(make_tweet(9, note_text="y" * (MAX_TEXT_CHARS + 500)))
    assert len(tweet.text) == MAX_TEXT_CHARS


@pytest.mark.parametrize("payload, field", [
    ({"text": "no id"}, "id"),
    ({"id": "5"}, "text"),
    ({"id": "5", "text": "   "}, "text"),
    ({"id": "5", "text": "ok", "created_at": "yesterday"}, "created_at"),
    (["not", "an", "object"], "JSON object"),
])
def test_unusable_payloads_raise_malformed_naming_the_field(payload, field):
    with pytest.raises(MalformedTweet, match=field):
        tweet_from_api(payload)


@pytest.mark.parametrize("odd", [
    {"entities": {"urls": 5}},
    {"entities": {"urls": {"expanded_url": "https://a.example"}}},
    {"referenced_tweets": 5},
    {"referenced_tweets": [{"type": "retweeted", "id": "9"}], "_includes": {"tweets": 7}},
    {"note_tweet": {"text": "the note", "entities": {"urls": "https://a.example"}}},
])
def test_a_field_of_the_wrong_json_type_costs_its_links_not_the_tweet(odd):
    """`"urls": 5` raised TypeError out of the mapper: `ingest x` stopped with a traceback, and in
    search mode read the same page, and stopped, on every restart."""
    payload = {"id": "42", "text": "Gold hits a record", **odd}
    tweet = tweet_from_api(payload, payload.pop("_includes", None))
    assert tweet.id == "42" and tweet.urls == []
    assert tweet.text in ("Gold hits a record", "the note")


def test_links_past_the_schemas_bounds_are_dropped_not_the_tweet():
    too_long = "https://a.example/" + "x" * MAX_URL_CHARS
    many = [f"https://b.example/{i}" for i in range(MAX_URLS + 20)]
    tweet = tweet_from_api(make_tweet(3, urls=[too_long, *many]))
    assert tweet.urls == many[:MAX_URLS]


# -- rules, policy pieces -------------------------------------------------------------------------


def test_rules_file_skips_comments_but_keeps_hashtag_rules(tmp_path):
    path = tmp_path / "rules.txt"
    path.write_text("# newswires\nfrom:Reuters -is:retweet\n\n  #earnings lang:en  \n#\n"
                    "## section\n$AAPL #fomc\nfrom:Reuters -is:retweet\n")
    assert [r.value for r in read_rules_file(path)] == ["from:Reuters -is:retweet",
                                                        "#earnings lang:en", "$AAPL #fomc"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(XRuleError, match=r"empty\.txt"):
        read_rules_file(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("$AAPL café\n".encode("latin-1"))
    with pytest.raises(XRuleError, match=r"latin1\.txt: not UTF-8 text"):  # a traceback before
        read_rules_file(latin1)
    with pytest.raises(XRuleError, match=r"Is a directory; give a text file"):
        read_rules_file(tmp_path)


def test_a_search_position_that_is_not_a_tweet_id_is_refused_in_one_line(redis_client):
    store = SinceIdStore(redis_client, "$AAPL")
    redis_client.set(store.key, "yesterday")  # a ValueError on the first poll before
    with pytest.raises(XStateError, match=r"'yesterday', not a tweet id; delete that key"):
        store.load()
    store.save("1790000000000000000")
    assert store.load() == "1790000000000000000"
    import redis

    gone = SinceIdStore(redis.Redis(port=free_port(), socket_connect_timeout=2), "$AAPL")
    with pytest.raises(XStateError, match=r"is Redis up\? \(`fintweet up`"):
        gone.load()  # said what to do, as every other command says it


def test_a_refused_redis_password_is_not_said_to_be_a_redis_that_is_down(tmp_path):
    """redis-py's AuthenticationError is a ConnectionError: a wrong password was told to check
    whether Redis is up. A real redis-server with a password, on loopback."""
    import redis

    from fintweet.devstack.process import redis_server_binary

    port = free_port()
    server = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--requirepass", "sesame", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        right = redis.Redis(port=port, password="sesame", socket_connect_timeout=2)
        wait_for(lambda: _answers(right), 20, "the redis-server with a password")
        wrong = SinceIdStore(redis.Redis(port=port, password="wrong",
                                         socket_connect_timeout=2), "$AAPL")
        with pytest.raises(XStateError) as refused:
            wrong.load()
        assert "is Redis up" not in str(refused.value)
        assert "password" in str(refused.value).lower()  # redis-py's own words: WRONGPASS
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_default_rules_fit_the_smallest_rule_length_and_skip_retweets():
    for rule in DEFAULT_STREAM_RULES:
        assert len(rule.value) <= 512 and "-is:retweet" in rule.value and rule.tag
    assert len(DEFAULT_SEARCH_QUERY) <= 512
    assert len({r.value for r in DEFAULT_STREAM_RULES}) == len(DEFAULT_STREAM_RULES)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets():
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, step in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays}) > 1  # jittered
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    long_outage = Backoff(0.1, 5.0)  # the worker's Redis and Kafka retries: ~4 s a try
    delays = [long_outage.next_delay() for _ in range(5000)]  # over 5 hours of them
    assert all(2.5 <= delay <= 5.0 for delay in delays[6:])  # 2.0**1024 overflowed before


def test_recent_ids_is_a_bounded_lru():
    recent = RecentIds(capacity=2)
    assert not recent.seen("a") and not recent.seen("b")
    assert recent.seen("a")  # refreshes "a"
    assert not recent.seen("c")  # evicts "b", the least recently seen
    assert recent.seen("a") and not recent.seen("b") and len(recent) == 2


def test_search_interval_follows_the_plans_limit():
    assert default_search_interval(60) == 60.0  # Basic-like: 60 requests / 15 min
    assert default_search_interval(300) == 12.0
    with pytest.raises(ValueError):
        default_search_interval(0)


@pytest.mark.parametrize("pasted, code_point, position", [
    ("\u201cAAAA%2Ftoken\u201d", "U+201C", 1),
    ("AAAA%2F\ntoken", "U+000A", 8),
    ("AAAA token", "U+0020", 5),
])
def test_a_token_with_what_no_token_holds_is_refused_naming_where(pasted, code_point, position):
    """Typographic quotes gave a UnicodeEncodeError traceback from the HTTP layer, and a line
    break a connection failure retried for ever: neither said the token was wrong."""
    with pytest.raises(XAuthError) as refused:
        BearerToken(pasted)
    assert str(refused.value) == (
        f"FINTWEET_X_BEARER_TOKEN has {code_point} at character {position}, which no bearer "
        "token holds: paste the token again, without quotes, spaces or line breaks")
    assert BearerToken("  AAAA%2Ftoken%3D\n").reveal() == "AAAA%2Ftoken%3D"  # trimmed, kept


def test_token_never_shows_in_reprs_or_tweepy_debug_logs(caplog):
    token = BearerToken(SECRET)
    assert SECRET not in repr(token) and SECRET not in f"{token}"
    with TokenRedaction(token), caplog.at_level(logging.DEBUG, logger="tweepy"):
        logging.getLogger("tweepy.client").debug("Headers: %s",
                                                 {"Authorization": f"Bearer {SECRET}"})
    assert "Bearer ***" in caplog.text and SECRET not in caplog.text


# -- rules reconcile against the double -----------------------------------------------------------


def rules_client(api: XApiDouble) -> tweepy.StreamingClient:
    client = tweepy.StreamingClient(api.token)
    route_session(client.session, api.base_url, FAST.request_timeout_s)
    return client


def test_reconcile_adds_missing_and_deletes_stale_rules(api):
    api.set_rules(["from:Reuters", "stale rule"])
    change = reconcile_rules(rules_client(api), [RuleSpec("from:Reuters"), RuleSpec("$NVDA")])
    assert sorted(api.rule_values) == ["$NVDA", "from:Reuters"]
    assert (change.added, change.deleted, change.kept) == (("$NVDA",), ("stale rule",),
                                                           ("from:Reuters",))
    posts = [r.body for r in api.requests_to("rules", "POST")]
    assert posts == [{"add": [{"value": "$NVDA", "tag": "fintweet"}]}] * 2 + [
        {"delete": {"ids": [posts[2]["delete"]["ids"][0]]}}]


def test_reconcile_is_a_no_op_when_rules_already_match(api):
    api.set_rules(["from:Reuters", "$NVDA"])
    change = reconcile_rules(rules_client(api), [RuleSpec("$NVDA"), RuleSpec("from:Reuters ")])
    assert not change.changed
    assert api.requests_to("rules", "POST") == []
    assert sorted(api.rule_values) == ["$NVDA", "from:Reuters"]


def test_reconcile_reports_the_rule_x_refused(api):
    with pytest.raises(XRuleError, match=r"'INVALID rule'.*UnprocessableEntity"):
        reconcile_rules(rules_client(api), [RuleSpec("INVALID rule"), RuleSpec("$AMD")])


def test_a_refused_rule_leaves_the_old_rules_in_place(api):
    """Deletes went first: a refused add then left the account with no rule at all, so the
    stream matched nothing until someone fixed the rules by hand."""
    api.set_rules(["from:Reuters", "$AAPL"])
    with pytest.raises(XRuleError, match=r"'INVALID rule'"):
        reconcile_rules(rules_client(api), [RuleSpec("INVALID rule")])
    assert sorted(api.rule_values) == ["$AAPL", "from:Reuters"]
    assert [r.body for r in api.requests_to("rules", "POST")] == [
        {"add": [{"value": "INVALID rule", "tag": "fintweet"}]}]  # no delete was sent


def test_a_refused_rule_adds_none_of_the_others(api):
    """X creates the valid rules of an add it partly refuses: the account was left with the old
    rules and some of the new, which the run that failed had not asked for."""
    api.set_rules(["from:Reuters"])
    with pytest.raises(XRuleError, match=r"'INVALID rule'"):
        reconcile_rules(rules_client(api), [RuleSpec("$NVDA"), RuleSpec("INVALID rule")])
    assert api.rule_values == ["from:Reuters"]
    checked = api.requests_to("rules", "POST")
    assert len(checked) == 1 and checked[0].params == {"dry_run": "true"}


def test_an_add_retried_after_its_response_was_lost_is_not_a_refusal(api, token):
    """The retrying call re-sends an add whose response never came; X already made the rule
    and answers the repeat with DuplicateRule, which ended the run as a refused rule. (The
    first POST is the dry run that checks the rules; the add's is the one lost.)"""
    api.set_rules(["from:FT"])
    api.lose_next_response("rules", "POST", after=1)
    ingester = StreamIngester(token, [], None, api_base=api.base_url, policy=FAST)
    change = reconcile_rules(ingester.client, [RuleSpec("$NVDA"), RuleSpec("from:FT"),
                                               RuleSpec("$AMD")], call=ingester.call)
    assert sorted(api.rule_values) == ["$AMD", "$NVDA", "from:FT"]
    assert (change.added, change.deleted) == (("$NVDA", "$AMD"), ())
    posts = api.requests_to("rules", "POST")
    assert [r.body for r in posts] == [{"add": [{"value": "$NVDA", "tag": "fintweet"},
                                                {"value": "$AMD", "tag": "fintweet"}]}] * 3
    assert [r.params for r in posts] == [{"dry_run": "true"}, {}, {}]
    assert ingester.stats.errors == {"connection": 1}


# -- search polling -------------------------------------------------------------------------------


def search_ingester(api, token, producer, redis_client, query="$AAPL lang:en", **kwargs):
    kwargs.setdefault("policy", FAST)
    return SearchIngester(token, query, producer, SinceIdStore(redis_client, query),
                          api_base=api.base_url, interval_s=0, **kwargs)


def test_search_pages_through_and_resumes_from_the_since_id_in_redis(api, token, stack, topic,
                                                                     redis_client):
    api.add_search_tweets(make_tweet(i) for i in range(250))
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        first = search_ingester(api, token, producer, redis_client)
        assert first.since_id is None
        assert first.poll_once() == 250
    pages = api.requests_to("search")
    assert [r.params.get("next_token") is not None for r in pages] == [False, True, True]
    assert {r.params["max_results"] for r in pages} == {"100"}
    assert "note_tweet" in pages[0].params["tweet.fields"]
    key = first.since_ids.key
    assert key.startswith("fintweet:x:since_id:") and len(key.rsplit(":", 1)[1]) == 40
    assert redis_client.get(key) == tweet_id(249).encode()

    # A restart: a new process, the same query → it starts from the saved since_id.
    api.add_search_tweets(make_tweet(i) for i in range(250, 255))
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        second = search_ingester(api, token, producer, redis_client)
        assert second.since_id == tweet_id(249)
        assert second.poll_once() == 5
        assert second.poll_once() == 0  # nothing new: no copies either
    assert api.requests_to("search")[3].params["since_id"] == tweet_id(249)
    assert redis_client.get(key) == tweet_id(254).encode()

    messages = consume_all(stack.kafka_bootstrap, topic, 255)
    counts = ids_of(messages)
    assert len(counts) == 255 and max(counts.values()) == 1
    assert {m["source"] for m in messages} == {"x"}


def test_a_search_page_with_tweets_tweepy_cannot_parse_publishes_the_rest(
        api, token, stack, topic, redis_client):
    """tweepy's parsing of a page built every tweet at once: one without text, or with a
    created_at without milliseconds, raised out of the poll with a traceback, and every restart
    read the same page again."""
    no_text = make_tweet(1)
    del no_text["text"]
    api.add_search_tweets([make_tweet(0), no_text, make_tweet(2, created_at="2024-05-01T12:00:00Z"),
                           make_tweet(3, author_id="not-a-number")])
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client)
        assert ingester.poll_once() == 3
    assert (ingester.stats.sent, ingester.stats.malformed) == (3, 1)
    assert ingester.stats.errors == {"invalid_tweet": 1}
    assert redis_client.get(ingester.since_ids.key) == tweet_id(3).encode()
    messages = consume_all(stack.kafka_bootstrap, topic, 3)
    assert sorted(ids_of(messages)) == [tweet_id(0), tweet_id(2), tweet_id(3)]
    assert {m["created_at"][:19] for m in messages} == {"2024-05-01T12:00:00"}


def test_a_tweet_the_mapper_cannot_read_is_skipped_and_the_page_still_publishes(
        api, token, stack, topic, redis_client):
    """Whatever a payload makes the mapper raise, the tweet is counted as malformed and the poll
    goes on; an id too long for ``str()`` (it raises ValueError) stands in for shapes no check
    foresaw."""
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client)
        assert ingester.offer({"id": 10 ** 5000, "text": "x"}) is False
        assert ingester.offer(make_tweet(1)) is True
        ingester.flush()
    assert (ingester.stats.sent, ingester.stats.malformed) == (1, 1)
    assert ingester.stats.errors == {"invalid_tweet": 1}
    assert sorted(ids_of(consume_all(stack.kafka_bootstrap, topic, 1))) == [tweet_id(1)]


def test_a_since_id_older_than_the_search_window_is_dropped_not_sent(
        api, token, stack, topic, redis_client, caplog):
    """X answers 400 to a since_id from before recent search's 7 days, on every poll: one saved
    before a week-long outage must not stop the ingester for good."""
    stale = str(snowflake(time.time() - 8 * 86400))
    api.add_search_tweets(make_tweet(i) for i in range(3))
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client)
        ingester.since_ids.save(stale)
        ingester.since_id = ingester.since_ids.load()
        with caplog.at_level("WARNING", logger="fintweet.ingest.x.search"):
            assert ingester.poll_once() == 3
    assert "since_id" not in api.requests_to("search")[0].params
    assert any("8.0 days old" in r.getMessage() for r in caplog.records)
    assert redis_client.get(ingester.since_ids.key) == tweet_id(2).encode()


def test_a_429_whose_reset_is_already_past_backs_off(api, token, redis_client) -> None:
    """A reset in the past (a clock ahead of X's) must not mean a retry every second."""
    ingester = search_ingester(api, token, None, redis_client)
    http = Backoff(1.0, 64.0)

    def wait(reset_in: float) -> float:
        return ingester.after_status("GET /2/tweets/search/recent", 429, reason="Too Many "
                                     "Requests", detail="", reset_time=time.time() + reset_in,
                                     http=http)

    delays = [wait(-3) for _ in range(5)]
    assert delays[0] <= 1.0 and delays[-1] >= 8.0  # doubling: 1, 2, 4, 8, 16 (half jittered)
    started = time.time()
    waited = wait(2.0)  # a reset ahead is waited for, plus the margin
    assert 1.9 - (time.time() - started) <= waited <= 2.2


def test_search_429_waits_for_the_reset_then_succeeds_and_503_is_retried(api, token, stack, topic,
                                                                        redis_client):
    api.add_search_tweets(make_tweet(i) for i in range(30))
    api.fail_next("search", 429, reset_in=1.0)
    api.fail_next("search", 503, times=2)
    metrics = IngestMetrics("x", CollectorRegistry())
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client, metrics=metrics)
        assert ingester.run(max_polls=1).sent == 30
    statuses = [(r.status, r.at) for r in api.requests_to("search")]
    assert [s for s, _ in statuses] == [429, 503, 503, 200]
    reset = api.state.sent_resets[0]
    assert statuses[1][1] >= reset  # no request before the reset the API gave
    assert ingester.stats.errors == {"http_429": 1, "http_5xx": 2}
    errors = metrics.registry.get_sample_value
    assert errors("fintweet_ingest_errors_total", {"source": "x", "reason": "http_429"}) == 1
    assert errors("fintweet_ingest_errors_total", {"source": "x", "reason": "http_5xx"}) == 2
    assert len(ids_of(consume_all(stack.kafka_bootstrap, topic, 30))) == 30


def test_a_search_page_that_never_answers_times_out_and_is_retried(api, token, stack, topic,
                                                                  redis_client):
    """tweepy sets no timeout on its REST calls: a stalled connection blocked the poll (and the
    ingester's stop) for ever."""
    api.add_search_tweets(make_tweet(i) for i in range(3))
    api.stall_next("search", 60)
    policy = replace(FAST, request_timeout_s=0.5)
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client, policy=policy)
        started = time.monotonic()
        assert ingester.poll_once() == 3
    assert time.monotonic() - started < 30
    assert ingester.stats.errors == {"connection": 1}
    assert len(api.requests_to("search")) == 1  # the stalled one never got as far as an answer


def test_search_honours_rate_limit_headers_instead_of_hitting_429(api, token, stack, topic,
                                                                  redis_client):
    api.add_search_tweets(make_tweet(i) for i in range(300))
    api.rate_limit("search", limit=2, seconds=1.5)  # three pages need two windows
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client)
        assert ingester.poll_once() == 300
    assert [r.status for r in api.requests_to("search")] == [200, 200, 200]


# -- filtered stream ------------------------------------------------------------------------------


def test_stream_skips_malformed_lines_reconnects_and_publishes_each_tweet_once(
        api, token, stack, topic):
    api.set_rules(["stale"])
    api.fail_next("stream", 503)
    api.script_stream(make_tweet(1), Raw(b'{"data": {"id": "1", "te'), KEEPALIVE,
                      make_tweet(2), Raw(b'{"data": {"text": "no id"}}'), make_tweet(3),
                      DISCONNECT)
    # after the reconnect the server repeats what it sent last, as backfill_minutes asks
    api.script_stream(make_tweet(2), make_tweet(3), make_tweet(4), CLOSE)
    # the third connection is held open with keep-alives until the stop
    api.script_stream(make_tweet(3), make_tweet(5),
                      {"errors": [{"title": "operational-disconnect"}]})
    metrics = IngestMetrics("x", CollectorRegistry())
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=FAST, metrics=metrics, backfill_minutes=2)
        thread = run_in_thread(ingester.run)
        wait_for(lambda: ingester.stats.sent == 5, 15, "5 distinct tweets")
        ingester.stop()
        thread.join(5)  # the double keeps the stream open: only the stop can end it
        assert not thread.is_alive()
    assert api.rule_values == ["$AAPL"]
    assert api.stream_connections == 3
    # every connection asks for the minutes it may have missed
    assert [r.params.get("backfill_minutes") for r in api.requests_to("stream")] == ["2"] * 4
    stats = ingester.stats
    assert (stats.sent, stats.duplicates, stats.malformed) == (5, 3, 2)
    assert stats.errors["malformed_json"] == 1 and stats.errors["invalid_tweet"] == 1
    assert stats.errors["http_5xx"] == 1 and stats.errors["stream_error"] == 1
    assert stats.errors["connection"] == 1 and stats.errors["disconnect"] == 1  # cut, then closed
    sample = metrics.registry.get_sample_value
    assert sample("fintweet_ingest_errors_total", {"source": "x", "reason": "malformed_json"}) == 1
    assert sample("fintweet_ingest_duplicates_total", {"source": "x"}) == 3
    counts = ids_of(consume_all(stack.kafka_bootstrap, topic, 5))
    assert counts == Counter({tweet_id(i): 1 for i in range(1, 6)})


def stream_after_a_429(api, token, stack, topic) -> tuple[StreamIngester, list[Recorded]]:
    """A stream ingester run until the tweet the connection after the scripted 429 sends; the
    ingester and its stream requests."""
    api.script_stream(make_tweet(1))
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=FAST)
        thread = run_in_thread(ingester.run)
        wait_for(lambda: ingester.stats.sent == 1, 10, "the tweet after the 429")
        ingester.stop()
        thread.join(5)
    return ingester, api.requests_to("stream")


def test_stream_429_waits_until_the_reset_before_reconnecting(api, token, stack, topic):
    api.fail_next("stream", 429, reset_in=1.0)
    _, attempts = stream_after_a_429(api, token, stack, topic)
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at >= api.state.sent_resets[0]
    assert set(attempts[1].params["tweet.fields"].split(",")) >= {
        "created_at", "author_id", "lang", "entities", "note_tweet"}
    assert attempts[1].params["expansions"] == "referenced_tweets.id"
    assert "backfill_minutes" not in attempts[1].params  # only when asked: plans refuse it


def test_a_stream_429_with_requests_left_backs_off_instead_of_waiting_out_the_window(
        api, token, stack, topic):
    """X's TooManyConnections (a restart while its last connection is still open on X's side)
    comes with requests left: waiting for the window's reset lost up to 15 minutes of stream."""
    api.fail_next("stream", 429, reset_in=600.0, remaining=48, body={
        "title": "ConnectionException", "type": "https://api.twitter.com/2/problems/streaming-"
        "connection", "detail": "This stream is currently at the maximum allowed connection "
        "limit.", "connection_issue": "TooManyConnections"})
    ingester, attempts = stream_after_a_429(api, token, stack, topic)
    assert [r.status for r in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= FAST.rate_limit_fallback_s / 2  # backed off
    assert ingester.stats.errors["http_429"] == 1


def test_a_spent_usage_cap_ends_the_stream_with_one_line(api, token, stack, topic, caplog):
    """The plan's monthly cap is a 429 too, but no reset within weeks cures it: retried, it
    logged "rate limited" every 15 minutes and never said why."""
    api.fail_next("stream", 429, reset_in=600.0, body={
        "title": "UsageCapExceeded", "type": "https://api.twitter.com/2/problems/usage-capped",
        "detail": "Usage cap exceeded: Monthly product cap", "period": "Monthly"})
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=FAST)
        with pytest.raises(XRequestError, match=r"usage cap is reached.*Monthly product cap"):
            ingester.run()
    assert [r.status for r in api.requests_to("stream")] == [429]


def test_a_spent_usage_cap_ends_the_search_too(api, token, stack, topic, redis_client):
    api.fail_next("search", 429, reset_in=600.0, body={
        "title": "UsageCapExceeded", "type": "https://api.twitter.com/2/problems/usage-capped",
        "detail": "Usage cap exceeded: Monthly product cap", "period": "Monthly"})
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = search_ingester(api, token, producer, redis_client)
        with pytest.raises(XRequestError, match="usage cap is reached"):
            ingester.poll_once()
    assert [r.status for r in api.requests_to("search")] == [429]


def test_stream_backoff_keeps_doubling_after_a_good_connection(api, token, stack, topic):
    """tweepy calls on_connect only on HTTP 200, where "this connection delivered data" was
    reset: after one good connection every later 503 still counted as following data, reset
    the backoff, and was retried at the base delay forever."""
    policy = RetryPolicy(network_base_s=0.05, network_cap_s=0.2, http_base_s=0.05,
                         http_cap_s=10.0)
    api.script_stream(make_tweet(1), CLOSE)
    api.script_stream(make_tweet(2), CLOSE)
    # the third connection is held open until the stop
    delays: list[float] = []
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=policy)
        real_sleep = ingester._sleep

        def sleep(seconds: float) -> None:
            delays.append(seconds)
            if len(delays) == 1:  # after the first good connection: five 503s
                api.fail_next("stream", 503, times=5)
            elif len(delays) == 7:  # after the second good connection: one 503
                api.fail_next("stream", 503)
            real_sleep(0)

        ingester._sleep = sleep  # type: ignore[method-assign]
        thread = run_in_thread(ingester.run)
        wait_for(lambda: ingester.stats.connections == 3, 15, "the third connection")
        ingester.stop()
        thread.join(5)
        assert not thread.is_alive()
    assert [r.status for r in api.requests_to("stream")] == [200, *[503] * 5, 200, 503, 200]
    assert len(delays) == 8
    closed_after_data = [delays[0], delays[6]]
    assert all(0.025 <= d <= 0.05 for d in closed_after_data)  # network backoff, reset
    for delay, step in zip(delays[1:6], [0.05, 0.1, 0.2, 0.4, 0.8], strict=True):
        assert step / 2 <= delay <= step, delays  # doubling, not reset to 0.05 each time
    assert 0.025 <= delays[7] <= 0.05  # a connection that delivered data resets it again
    assert ingester.stats.errors["http_5xx"] == 6


def test_a_stop_before_tweepy_marks_the_stream_running_still_ends_it(api, token, stack, topic):
    """tweepy's _connect sets running = True as it starts, undoing the disconnect of a stop()
    that landed just before: the run then held the stream open until the server closed it."""
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=FAST)
        real_filter = ingester.client.filter

        def filter_after_a_stop(**kwargs):
            ingester.stop()  # between the run loop's check and tweepy's running = True
            return real_filter(**kwargs)

        ingester.client.filter = filter_after_a_stop  # type: ignore[method-assign]
        thread = run_in_thread(ingester.run)
        thread.join(5)  # the double holds the stream open: only the stop can end it
        assert not thread.is_alive()
    assert api.stream_connections == 1 and ingester.stats.connections == 1


def test_stream_with_rejected_token_raises_without_retrying(api, stack, topic):
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(BearerToken("wrong-token-123"), [RuleSpec("$AAPL")], producer,
                                  api_base=api.base_url, policy=FAST)
        with pytest.raises(XAuthError, match="rejected the bearer token") as caught:
            ingester.run()
    assert "wrong-token-123" not in str(caught.value)
    assert len(api.requests_to("rules")) == 1  # one attempt, no retry loop


def test_stream_forbidden_says_the_plan_may_lack_access(api, token, stack, topic):
    api.fail_next("stream", 403)
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                  policy=FAST)
        with pytest.raises(XAuthError, match=r"plan may not include.*client-not-enrolled"):
            ingester.run()


# -- the command ----------------------------------------------------------------------------------


def cli_env(stack, topic: str, token: str) -> dict[str, str]:
    return {**os.environ, "FINTWEET_X_BEARER_TOKEN": token, "FINTWEET_TOPIC": topic,
            "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
            "FINTWEET_REDIS_URL": stack.redis_url, "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("mode", [["--search", "$AAPL"], ["--stream", "--rule", "$AAPL"]])
def test_bad_token_exits_2_with_a_message_that_hides_the_token(api, stack, topic, monkeypatch,
                                                              capsys, caplog, mode):
    bad = "bad-token-" + "s3cr3t" * 6
    for name, value in cli_env(stack, topic, bad).items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)  # tweepy logs request headers at DEBUG
    code = fintweet_main(["ingest", "x", *mode, "--api-base", api.base_url])
    out, err = capsys.readouterr()
    assert code == 2
    assert "rejected the bearer token (HTTP 401" in err and "FINTWEET_X_BEARER_TOKEN" in err
    assert "Bearer ***" in caplog.text
    assert bad not in out + err + caplog.text


def test_cli_search_once_publishes_and_saves_the_position(api, stack, topic, redis_client):
    api.add_search_tweets(make_tweet(i, urls=[f"https://example.com/{i}"]) for i in range(12))
    done = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "ingest", "x", "--search", "from:Reuters",
         "--max-polls", "1", "--api-base", api.base_url],
        env=cli_env(stack, topic, SECRET), capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "sent 12 tweets" in done.stderr and SECRET not in done.stderr + done.stdout
    messages = consume_all(stack.kafka_bootstrap, topic, 12)
    assert len(ids_of(messages)) == 12
    assert all(m["urls"][0].startswith("https://example.com/") for m in messages)
    assert redis_client.get(SinceIdStore(redis_client, "from:Reuters").key) == \
        tweet_id(11).encode()


def test_cli_stream_serves_metrics_then_flushes_and_exits_0_on_sigterm(api, stack, topic):
    api.script_stream(*(make_tweet(i) for i in range(20)), Raw(b"garbage"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "-v", "ingest", "x", "--stream", "--rule",
         "$AAPL", "--api-base", api.base_url, "--metrics-port", str(port)],
        env=cli_env(stack, topic, SECRET), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO)
    try:
        published = 'fintweet_ingest_published_total{source="x"} 20.0'
        wait_for(lambda: published in metrics_text(port), 30, "20 acknowledged tweets")
        text = metrics_text(port)
        assert 'fintweet_ingest_errors_total{reason="malformed_json",source="x"} 1.0' in text
        assert http_get(f"http://127.0.0.1:{port}/readyz") == (200, "stream connected\n")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "sent 20 tweets" in err
    assert "Bearer ***" in err and SECRET not in err  # -v: tweepy's header log, masked
    assert len(ids_of(consume_all(stack.kafka_bootstrap, topic, 20))) == 20


# Both ingest commands wait this little for a broker that is gone (PUBLISH_TIMEOUTS, shortened).
QUICK_GIVE_UP = {"max_block_ms": 2_000, "request_timeout_ms": 1_000, "delivery_timeout_ms": 3_000}


def recorded_metrics(monkeypatch) -> list[IngestMetrics]:
    """The IngestMetrics the command makes, kept for the test to read its counters."""
    from fintweet.monitoring import ingest as ingest_metrics

    made: list[IngestMetrics] = []

    class Recorded(IngestMetrics):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(ingest_metrics, "IngestMetrics", Recorded)
    return made


def test_a_publish_failure_is_counted_as_replay_counts_it(api, monkeypatch, capsys, tmp_path):
    """`ingest replay` counts a PublishError in fintweet_ingest_errors_total{reason="publish"};
    `ingest x` ended with the same error uncounted. Its broker is SIGKILLed while a search page
    is on its way, so the page's tweets find no broker."""
    from fintweet.core import producer as producer_module
    from fintweet.devstack.stack import EmbeddedStack

    made = recorded_metrics(monkeypatch)
    monkeypatch.setattr(producer_module, "PUBLISH_TIMEOUTS", QUICK_GIVE_UP)
    api.add_search_tweets(make_tweet(i) for i in range(3))
    api.stall_next("search", 3)
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        for name, value in cli_env(own, "t", SECRET).items():
            monkeypatch.setenv(name, value)

        def kill_the_broker_once_the_page_is_asked_for() -> None:
            wait_for(lambda: not api.state.stalls.get("search"), 60, "the search request")
            os.kill(own.pids()["kafka"], signal.SIGKILL)

        killer = run_in_thread(kill_the_broker_once_the_page_is_asked_for)
        code = fintweet_main(["ingest", "x", "--search", "$AAPL", "--max-polls", "1",
                              "--api-base", api.base_url, "--metrics-port", str(free_port())])
        killer.join(10)
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fintweet ingest x: error: 3 tweet(s) were not acknowledged"), err
    sample = made[0].registry.get_sample_value
    assert sample("fintweet_ingest_errors_total", {"source": "x", "reason": "publish"}) == 1


# kafka_base_s: an ingester's first probe for the broker comes 2-4 s after it noticed the
# outage, time for the test to resume the broker first
OUTAGE = RetryPolicy(network_base_s=0.05, network_cap_s=0.2, http_base_s=0.05, http_cap_s=0.2,
                     kafka_base_s=4.0, kafka_cap_s=8.0)


def test_the_stream_rides_out_a_kafka_outage_and_its_backfill_brings_back_what_failed(
        api, token, tmp_path):
    """Kafka stopped taking tweets mid-stream: the ingester ended (exit 2) and every tweet X
    matched until someone restarted it was lost. Now it closes the stream, waits for the
    broker, reconnects, and the backfill sends the failed tweet again, which the dedupe must
    not skip. The broker is the test's own, stopped (SIGSTOP) and resumed: its topic stays."""
    from fintweet.devstack.stack import EmbeddedStack

    api.script_stream(make_tweet(1), Pause(1.0), make_tweet(2))  # then held open
    api.script_stream(make_tweet(2), make_tweet(3))  # the reconnection's backfill, and a new one
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        broker = own.pids()["kafka"]
        with TweetProducer(own.kafka_bootstrap, "t", **QUICK_GIVE_UP) as producer:
            ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer,
                                      api_base=api.base_url, policy=OUTAGE, backfill_minutes=1)
            thread = run_in_thread(ingester.run)
            wait_for(lambda: producer.published == 1, 30, "tweet 1 acknowledged")
            os.kill(broker, signal.SIGSTOP)
            try:
                wait_for(lambda: ingester.stats.errors["publish"] >= 1, 60, "the failed publish")
                assert not ingester.ready()[0]  # the stream is closed meanwhile
            finally:
                os.kill(broker, signal.SIGCONT)
            wait_for(lambda: producer.published >= 3, 60, "tweets 2 and 3 after the outage")
            ingester.stop()
            thread.join(10)
            assert not thread.is_alive()  # it was running all along, and stopped when asked
        received = ids_of(consume_all(own.kafka_bootstrap, "t", 3))
    assert set(received) == {tweet_id(1), tweet_id(2), tweet_id(3)}
    assert api.stream_connections == 2


def warm_up(producer: TweetProducer) -> None:
    """One record acknowledged on another topic: a producer that never reached the broker
    before it stopped waits out its flush timeout (a minute), not its delivery timeout, for an
    id it has not got, and the outage would take that long to show."""
    producer.publish_raw(None, b"warm-up", topic="warm-up")
    producer.flush()


def test_search_rides_out_a_kafka_outage_and_polls_again_from_its_saved_position(
        api, token, tmp_path, redis_client):
    """The first poll's tweets find the broker stopped: the poll is abandoned unsaved, and
    once the broker is back the same tweets are polled and published (not skipped by the
    dedupe that recorded them), then the position is saved."""
    from fintweet.devstack.stack import EmbeddedStack

    api.add_search_tweets(make_tweet(i) for i in range(3))
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        broker = own.pids()["kafka"]
        with TweetProducer(own.kafka_bootstrap, "t", **QUICK_GIVE_UP) as producer:
            ingester = search_ingester(api, token, producer, redis_client, policy=OUTAGE)
            warm_up(producer)
            os.kill(broker, signal.SIGSTOP)
            try:
                thread = run_in_thread(ingester.run)
                wait_for(lambda: ingester.stats.errors["publish"] >= 1, 60, "the failed poll")
                assert ingester.ready() == (False, "Kafka is not taking tweets; waiting for it")
                assert redis_client.get(ingester.since_ids.key) is None  # nothing saved
            finally:
                os.kill(broker, signal.SIGCONT)
            wait_for(lambda: redis_client.get(ingester.since_ids.key) == tweet_id(2).encode(),
                     60, "the poll after the outage to be saved")
            assert ingester.ready()[0]
            ingester.stop()
            thread.join(10)
            assert not thread.is_alive()
        received = ids_of(consume_all(own.kafka_bootstrap, "t", 3))
    assert set(received) == {tweet_id(i) for i in range(3)}


def test_a_stop_during_a_kafka_outage_ends_the_run_at_once_and_cleanly(api, token, tmp_path):
    """Stopped while waiting for the broker, the run returns its stats (exit code 0) at once:
    its client is abandoned, not flushed and closed, which on a client still holding records
    the outage left stuck waited a minute, then raised (exit code 2; a container's stop grace
    is 10 s). Here the failed tweet left nothing held, so this checks the outcome only."""
    from fintweet.devstack.stack import EmbeddedStack

    api.script_stream(make_tweet(1))  # then held open
    outcome: list[object] = []
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        broker = own.pids()["kafka"]
        try:
            with TweetProducer(own.kafka_bootstrap, "t", **QUICK_GIVE_UP) as producer:
                ingester = StreamIngester(token, [RuleSpec("$AAPL")], producer,
                                          api_base=api.base_url, policy=OUTAGE)
                warm_up(producer)
                os.kill(broker, signal.SIGSTOP)

                def run() -> None:
                    try:
                        outcome.append(ingester.run())
                    except BaseException as exc:  # what the CLI would see
                        outcome.append(exc)

                thread = run_in_thread(run)
                wait_for(lambda: ingester.kafka_down, 60, "the outage to be noticed")
                stopped_at = time.monotonic()
                ingester.stop()
                thread.join(30)
                assert not thread.is_alive()
            ended_in = time.monotonic() - stopped_at  # the producer's close included
        finally:
            os.kill(broker, signal.SIGCONT)
    assert isinstance(outcome[0], XStats), outcome  # returned its stats: no error raised
    assert ended_in < 30, ended_in  # not the stuck client's 60 s flush timeout, then its close


def test_a_replay_publish_failure_is_counted_the_same_way(monkeypatch, capsys, tmp_path):
    """`ingest replay` shares the count with `ingest x` (cli.ingest_x.publish_errors_counted):
    its broker is SIGKILLed part way through."""
    from kafka import KafkaConsumer, TopicPartition

    from fintweet.core import producer as producer_module
    from fintweet.devstack.stack import EmbeddedStack

    made = recorded_metrics(monkeypatch)
    monkeypatch.setattr(producer_module, "PUBLISH_TIMEOUTS", QUICK_GIVE_UP)
    csv = tmp_path / "rows.csv"
    csv.write_text("text,label\n" + "".join(f"$AAPL up {i},1\n" for i in range(5000)),
                   encoding="utf-8")
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:

        def kill_the_broker_once_it_holds_some() -> None:
            probe = KafkaConsumer(bootstrap_servers=own.kafka_bootstrap)
            try:
                wait_for(lambda: sum(probe.end_offsets([TopicPartition("t", p) for p in
                                                        probe.partitions_for_topic("t") or ()])
                                     .values()) >= 50, 60, "the broker to hold 50 tweets")
            finally:
                probe.close()
            os.kill(own.pids()["kafka"], signal.SIGKILL)

        killer = run_in_thread(kill_the_broker_once_it_holds_some)
        code = fintweet_main(["ingest", "replay", str(csv), "--bootstrap", own.kafka_bootstrap,
                              "--topic", "t", "--rate", "200", "--no-progress",
                              "--metrics-port", str(free_port())])
        killer.join(10)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "fintweet ingest replay: error: replay stopped: " in err.strip().splitlines()[-1]
    sample = made[0].registry.get_sample_value
    assert sample("fintweet_ingest_errors_total", {"source": "replay", "reason": "publish"}) == 1


@pytest.mark.parametrize("query", ["", " "])
def test_an_empty_search_query_is_refused_as_a_blank_one_was(query, capsys):
    """`--search ""` polled the default query without a word, while `--search " "` was refused:
    only a bare `--search` means the default."""
    with pytest.raises(SystemExit) as leaving:
        fintweet_main(["ingest", "x", "--search", query])
    assert leaving.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fintweet ingest x: error: --search QUERY is empty: give a query, or --search alone for "
        "the default; see fintweet ingest x --help")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e300", "-1"])
def test_interval_must_be_a_finite_number_of_seconds(value, capsys):
    """float() takes "inf" and "nan": inf was an OverflowError traceback at the first wait,
    nan a poll loop without any pause."""
    with pytest.raises(SystemExit) as leaving:
        fintweet_main(["ingest", "x", "--search", f"--interval={value}"])
    assert leaving.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("fintweet ingest x: error: --interval must be a finite number of "
                          f"seconds, at least 0, got {float(value)}")


@pytest.mark.parametrize("args", [["--backfill-minutes", "6"], ["--backfill-minutes", "0"],
                                  ["--search", "--backfill-minutes", "2"]])
def test_backfill_is_one_to_five_minutes_of_the_stream(args, capsys):
    with pytest.raises(SystemExit) as leaving:
        fintweet_main(["ingest", "x", *(["--stream"] if "--search" not in args else []), *args])
    assert leaving.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backfill-minutes" in err


@pytest.mark.parametrize("option", [["--max-pages", "3"], ["--redis-url", "redis://h:1/0"],
                                    ["--interval", "5"]])
def test_search_options_given_with_the_stream_are_refused(option, capsys):
    """--max-pages and --redis-url were taken with --stream and silently did nothing."""
    with pytest.raises(SystemExit) as leaving:
        fintweet_main(["ingest", "x", "--stream", "--rule", "$AAPL", *option])
    assert leaving.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option[0]} apply to --search, not --stream" in err


@pytest.mark.parametrize("value", ["not-a-url", "ftp://host/", "http://", "127.0.0.1:8080"])
def test_api_base_must_be_an_http_url_with_a_host(value, capsys):
    """One that can never connect was retried for ever, as if X were down."""
    with pytest.raises(SystemExit) as leaving:
        fintweet_main(["ingest", "x", "--stream", "--rule", "$AAPL", "--api-base", value])
    assert leaving.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--api-base" in err and "http(s) URL" in err


def test_search_ingester_refuses_a_non_finite_interval(token, redis_client):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number of seconds"):
            SearchIngester(token, "$AAPL", None, SinceIdStore(redis_client, "$AAPL"),
                           interval_s=bad)


def metrics_text(port: int) -> str:
    try:
        return http_get(f"http://127.0.0.1:{port}/metrics")[1]
    except OSError:  # not listening yet
        return ""


# -- double → ingest → broker → worker → Redis ----------------------------------------------------


@pytest.fixture
def serving_model(models_dir: Path) -> Path:
    """The suite's ANN artifact (tests/conftest.py): this test checks delivery, not accuracy."""
    return models_dir / "ann"


def test_end_to_end_every_served_tweet_lands_in_redis_once(api, token, stack, topic, redis_client,
                                                           serving_model):
    from fintweet.core.config import Settings
    from fintweet.core.store import ResultStore
    from fintweet.models import load
    from fintweet.worker.app import Worker
    from fintweet.worker.consumer import FAST_GROUP_SETTINGS

    api.add_search_tweets(make_tweet(i, urls=[f"https://example.com/{i}"]) for i in range(150))
    api.fail_next("search", 503)
    api.script_stream(*(make_tweet(i) for i in range(140, 160)), DISCONNECT)  # overlaps search
    api.script_stream(*(make_tweet(i) for i in range(155, 170)))
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        search = search_ingester(api, token, producer, redis_client)
        search.run(max_polls=1)
        stream = StreamIngester(token, [RuleSpec("$AAPL")], producer, api_base=api.base_url,
                                policy=FAST)
        thread = run_in_thread(stream.run)
        try:  # 35 streamed, 5 of them repeated after the reconnect
            wait_for(lambda: stream.stats.sent == 30, 15, "the stream's tweets to be sent")
        finally:
            stream.stop()
            thread.join(5)
    published = search.stats.sent + stream.stats.sent
    assert published == 180  # the stream's overlap with the search is the worker's to drop
    settings = Settings().override(kafka_bootstrap=stack.kafka_bootstrap,
                                   redis_url=stack.redis_url, topic=topic, group=f"{topic}-g")

    def done(stats) -> None:
        if stats.consumed >= published:
            worker.stopping.set()

    worker = Worker(settings, load(serving_model), consumer_options=FAST_GROUP_SETTINGS,
                    on_batch=done, until_idle=20)
    stats = worker.run()
    assert (stats.classified, stats.duplicates) == (170, 10)
    store = ResultStore.from_url(stack.redis_url)
    figures = store.stats()
    assert figures["processed"] == 170 and sum(figures["topics"].values()) == 170
    assert all(store.result(tweet_id(i)) is not None for i in range(170))
    assert store.result(tweet_id(3))["links"]["urls"] == ["https://example.com/3"]


def test_cli_search_with_max_polls_exits_when_every_poll_fails(stack, topic, redis_client):
    done = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "ingest", "x", "--search", "$AAPL",
         "--max-polls", "1", "--api-base", f"http://127.0.0.1:{free_port()}"],
        env=cli_env(stack, topic, SECRET), capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fintweet ingest x: error: every poll failed (1 of 1)")
    assert "ConnectionError" in last and SECRET not in done.stderr
