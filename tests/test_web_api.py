"""The HTTP API, served by the real app on uvicorn on a loopback port, against the real Redis
(seeded with the documented layout by tests/seed.py) and the deterministic rule model
(tests/rule_model.py); and one end-to-end test through the real broker and worker."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from fintweet.core.labels import TOPIC_NAMES
from fintweet.core.reader import ResultReader
from fintweet.core.store import ResultStore
from fintweet.devstack.process import free_port
from fintweet.web.app import MAX_BODY_BYTES, create_app
from fintweet.web.server import ServerThread
from tests.helpers import http_get, make_tweets, publish, wait_for, worker_env
from tests.rule_model import RuleModel
from tests.seed import make_result, seed

EARNINGS = TOPIC_NAMES.index("Earnings")
OIL = TOPIC_NAMES.index("Energy | Oil")
BEARISH, BULLISH, NEUTRAL = range(3)


def build(stack, model=None, api_key: str = ""):
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    return create_app(ResultReader(client), ResultStore(client), model or RuleModel(),
                      api_key=api_key)


@pytest.fixture(scope="module")
def model() -> RuleModel:
    return RuleModel()


@pytest.fixture(scope="module")
def server(stack, model) -> Iterator[ServerThread]:
    with ServerThread(build(stack, model)) as running:
        yield running


@pytest.fixture
def api(server, redis_client) -> Iterator[httpx.Client]:
    """A client of the shared server; Redis is emptied first by ``redis_client``."""
    with httpx.Client(base_url=server.url, timeout=20) as client:
        yield client


def test_tweets_filters_pagination_and_unknown_id(api, redis_client) -> None:
    seed(redis_client, [make_result(f"id{i}", f"tweet {i} $TSLA" if i % 4 == 0 else f"t {i}",
                                    EARNINGS if i % 2 else OIL, (BULLISH, BEARISH, NEUTRAL)[i % 3])
                        for i in range(12)])
    body = api.get("/v1/tweets", params={"limit": 5}).json()
    assert [r["id"] for r in body["results"]] == ["id11", "id10", "id9", "id8", "id7"]
    rest = api.get("/v1/tweets", params={"limit": 500, "cursor": body["next_cursor"]}).json()
    assert [r["id"] for r in rest["results"]] == [f"id{i}" for i in range(6, -1, -1)]
    assert rest["next_cursor"] is None
    earnings = api.get("/v1/tweets", params={"topic": "Earnings"}).json()["results"]
    assert [r["id"] for r in earnings] == ["id11", "id9", "id7", "id5", "id3", "id1"]
    assert api.get("/v1/tweets", params={"topic": str(EARNINGS)}).json()["results"] == earnings
    tsla_bullish = api.get("/v1/tweets", params={"ticker": "tsla", "sentiment": "Bullish"}).json()
    assert [r["id"] for r in tsla_bullish["results"]] == ["id0"]  # 0, 4, 8 name $TSLA; 0 is 0 mod 3
    one = api.get("/v1/tweets/id4")
    assert one.status_code == 200 and one.json()["links"]["cashtags"] == ["TSLA"]
    missing = api.get("/v1/tweets/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    huge = api.get(f"/v1/tweets/{'x' * 60_000}")  # the id was sent back whole
    assert huge.status_code == 404 and len(huge.json()["detail"]) < 200
    bad = api.get("/v1/tweets", params={"sentiment": "ecstatic"})
    assert bad.status_code == 422 and "ecstatic" in bad.json()["detail"]
    assert api.get("/v1/tweets", params={"limit": 0}).status_code == 422


def test_classify_answers_each_text_in_one_batched_call(api, model) -> None:
    model.calls.clear()
    texts = ["$AAPL beats earnings estimates https://t.co/x1 @CNBC #stocks",
             "Oil prices plunge as OPEC+ talks collapse",
             "Markets are quiet today"]
    response = api.post("/v1/classify", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "rules@test"
    assert model.calls == [3]
    first, second, third = body["results"]
    assert first["topic"] == "Earnings" and first["sentiment"]["label"] == "Bullish"
    assert first["confidence"] == pytest.approx(0.9, abs=1e-4)
    assert first["top3"][0] == {"topic_id": EARNINGS, "topic": "Earnings", "p": 0.9}
    assert len(first["top3"]) == 3
    assert first["links"] == {"urls": ["https://t.co/x1"], "cashtags": ["AAPL"],
                              "mentions": ["CNBC"], "hashtags": ["stocks"]}
    assert second["topic"] == "Energy | Oil" and second["sentiment"]["label"] == "Bearish"
    assert third["topic"] == "Markets" and third["sentiment"]["label"] == "Neutral"


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"texts": []}, 422, "at least one"),
        ({"texts": ["x"] * 257}, 413, "257 texts"),
        ({"texts": ["ok", "y" * 10_001]}, 413, "texts[1]"),
        # what the worker dead-letters is no tweet here either
        ({"texts": ["ok", " &nbsp; "]}, 422, "texts[1]: text is blank"),
        ({"texts": ["bad\u0000text"]}, 422, "texts[0]: text contains a NUL character"),
        ({"texts": "not a list"}, 422, "texts"),
        ({"texts": [1, 2]}, 422, "texts[0]: Input should be a valid string"),
        ({"text": ["missing the right key"]}, 422, "texts: Field required"),
        (b"{not json", 422, "JSON"),
        # a million bad items: one pydantic error each took seconds of the event loop and a GB
        (b'{"texts":[' + b",".join([b"1"] * 1_000_000) + b"]}", 413, "1000000 texts"),
    ],
    ids=["empty", "too-many", "too-long", "blank", "nul", "not-a-list", "not-strings",
         "wrong-key", "not-json", "a-million-bad-items"],
)
def test_bad_classify_bodies_name_the_problem(api, body, status, names) -> None:
    if isinstance(body, bytes):
        response = api.post("/v1/classify", content=body,
                            headers={"content-type": "application/json"})
    else:
        response = api.post("/v1/classify", json=body)
    assert response.status_code == status, response.text[:2000]
    assert names in response.json()["detail"] and len(response.text) < 2000


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_classify_takes_json_only(api, content_type) -> None:
    """A page on another site can POST these without a preflight, so a browser on this machine
    would run the model for it."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = api.post("/v1/classify", content=b'{"texts": ["x"]}', headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_classify_bodies_received_at_once_are_capped(server, api, monkeypatch) -> None:
    """Each may be ~31 MB: the memory they hold is bounded by the cap, not by the clients."""
    monkeypatch.setattr("fintweet.web.app.MAX_CLASSIFY_UPLOADS", 1)
    classifying = server.server.config.app.state.classifying
    with socket.create_connection((server.host, server.port), timeout=10) as slow:
        slow.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{\"texts\": [")  # and then nothing
        wait_for(lambda: classifying.uploading == 1, 10, "the slow upload to be received")
        refused = api.post("/v1/classify", json={"texts": ["x"]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "1 classify requests are uploading" in refused.json()["detail"]
    wait_for(lambda: classifying.uploading == 0, 10, "the dropped upload's slot to come back")
    assert api.post("/v1/classify", json={"texts": ["x"]}).status_code == 200


def json_reply(sock: socket.socket) -> str:
    """A raw HTTP answer with a JSON body, read to the body's closing brace."""
    reply = ""
    while not reply.endswith("}"):
        chunk = sock.recv(4096).decode()
        if not chunk:
            break
        reply += chunk
    return reply


def test_a_classify_body_that_stops_arriving_is_a_408_and_frees_its_slot(server,
                                                                          monkeypatch) -> None:
    """uvicorn waits for a body for ever: four such clients held every upload slot."""
    monkeypatch.setattr("fintweet.web.app.CLASSIFY_UPLOAD_TIMEOUT_S", 1.0)
    classifying = server.server.config.app.state.classifying
    with socket.create_connection((server.host, server.port), timeout=20) as slow:
        slow.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{\"texts\": [")  # and then nothing
        reply = json_reply(slow)
    assert reply.startswith("HTTP/1.1 408"), reply
    assert "did not arrive within 1 s" in reply
    wait_for(lambda: classifying.uploading == 0, 10, "the upload slot to come back")


def test_oversized_body_is_refused_before_it_is_read(server) -> None:
    # A declared length over the limit is answered 413 at once, without sending the body.
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: " + str(MAX_BODY_BYTES + 1).encode() + b"\r\n\r\n")
        reply = json_reply(sock)
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "request body is" in reply


def test_a_chunked_body_over_the_limit_is_refused(api) -> None:
    """No declared length to check first: the body is counted as it arrives."""
    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        sent = 12
        while sent <= MAX_BODY_BYTES:
            yield b"x" * (1 << 20)
            sent += 1 << 20
        yield b'"]}'

    response = api.post("/v1/classify", content=chunks(),
                        headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert f"at most {MAX_BODY_BYTES:,}" in response.json()["detail"]


@pytest.mark.parametrize("params", [{"topic": "\u00b2"}, {"topic": "9" * 5000},
                                    {"topic": "X" * 5000}, {"ticker": "X" * 5000},
                                    {"sentiment": "\u00b9"}, {"sentiment": "X" * 5000},
                                    {"window": "9" * 5000}, {"window": "X" * 5000},
                                    {"cursor": "x" * 5000}, {"cursor": "never-stored"}])
def test_odd_filter_values_are_422_not_500(api, params) -> None:
    route = "/v1/tickers" if "window" in params else "/v1/tweets"
    response = api.get(route, params=params)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    # names the parameter, without sending the whole value back (it was 40 kB for 40 kB)
    assert detail and len(detail) < 300, len(detail)


def test_stats_tickers_and_series_routes(api, redis_client) -> None:
    seed(redis_client, [make_result("a", "$TSLA rally", EARNINGS, BULLISH),
                        make_result("b", "$TSLA $NVDA", OIL, BEARISH),
                        make_result("c", "$tsla", EARNINGS, BULLISH)])
    stats = api.get("/v1/stats").json()
    assert stats["processed"] == 3
    assert stats["topics"] == {"Earnings": 2, "Energy | Oil": 1}
    assert {k: v for k, v in stats["sentiments"].items() if v} == {"Bullish": 2, "Bearish": 1}
    tickers = api.get("/v1/tickers", params={"window": "1h"}).json()
    assert tickers["window_minutes"] == 60
    assert tickers["tickers"][0] == {"ticker": "TSLA", "count": 3,
                                     "sentiments": {"Bearish": 1, "Bullish": 2, "Neutral": 0}}
    series = api.get("/v1/series", params={"ticker": "TSLA", "window": "30m", "step": "5m"})
    # the last two points: a minute (or five) may have turned since the seed
    points = series.json()["points"]
    assert len(points) == 6 and sum(p["count"] for p in points[-2:]) == 3
    topic = api.get("/v1/series", params={"topic": "Earnings", "window": "1h"}).json()
    assert len(topic["points"]) == 60 and sum(p["count"] for p in topic["points"][-2:]) == 2
    two = api.get("/v1/series", params={"topic": "Earnings", "ticker": "TSLA"})
    assert two.status_code == 422 and "exactly one" in two.json()["detail"]
    assert api.get("/v1/tickers", params={"window": "forever"}).status_code == 422
    assert api.get("/v1/tickers", params={"window": "30d"}).status_code == 422


@pytest.mark.parametrize(("retention_s", "longest", "refused"),
                         [(86_400, "1d", "25h"), (30 * 86_400, "30d", "31d")])
def test_windows_reach_as_far_back_as_the_buckets_are_kept(stack, retention_s, longest,
                                                           refused) -> None:
    """Past the buckets' retention they have expired: a longer window summed zeros and showed
    a quiet stream, and a retention above 7 days could not be read at all."""
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    app = create_app(ResultReader(client), ResultStore(client, bucket_retention_s=retention_s),
                     RuleModel())
    with ServerThread(app) as running, httpx.Client(base_url=running.url, timeout=20) as api:
        assert api.get("/v1/tickers", params={"window": longest}).status_code == 200
        assert api.get("/v1/series", params={"sentiment": "Bullish", "window": longest,
                                             "step": "1h"}).status_code == 200
        answer = api.get("/v1/tickers", params={"window": refused})
        assert answer.status_code == 422
        assert f"outside 1 minute..{longest}, the per-minute buckets' retention" in (
            answer.json()["detail"])
        # what the page reads to offer only the ranges that work
        assert api.get("/v1/limits").json()["window_minutes_max"] == retention_s // 60


def test_stream_delivers_a_batch_written_after_connecting(server, redis_client) -> None:
    lines: queue.Queue[str] = queue.Queue()

    def listen() -> None:
        with httpx.Client(timeout=30) as client, client.stream(
                "GET", f"{server.url}/v1/stream") as response:
            lines.put(f"status {response.status_code} {response.headers['content-type']}")
            for line in response.iter_lines():
                lines.put(line)
                if line.startswith("data:"):
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert lines.get(timeout=10).startswith("status 200 text/event-stream")
    assert lines.get(timeout=10) == "retry: 2000"  # the server is now following the stream
    seed(redis_client, [make_result("s1", "$AMD up", EARNINGS, BULLISH),
                        make_result("s2", "oil", OIL, BEARISH)])
    received = []
    while not (received and received[-1].startswith("data:")):
        received.append(lines.get(timeout=10))
    assert "event: batch" in received
    data = json.loads(received[-1][len("data: "):])
    assert data["count"] == 2 and [r["id"] for r in data["results"]] == ["s1", "s2"]
    thread.join(timeout=10)


def test_stream_resumes_after_last_event_id(server, redis_client) -> None:
    seed(redis_client, [make_result("r1", "first", EARNINGS, BULLISH)])
    seen = ResultReader(redis_client).events_tail()
    seed(redis_client, [make_result("r2", "missed while away", OIL, BEARISH)])
    with httpx.Client(timeout=20) as client, client.stream(
            "GET", f"{server.url}/v1/stream", headers={"Last-Event-ID": seen}) as response:
        lines = response.iter_lines()
        event_id = next(line for line in lines if line.startswith("id: "))
        data = next(line for line in lines if line.startswith("data: "))
    assert event_id == f"id: {ResultReader(redis_client).events_tail()}"
    assert [r["id"] for r in json.loads(data[len("data: "):])["results"]] == ["r2"]


def test_stream_refuses_a_bad_last_event_id_and_too_many_streams(
        server, redis_client, monkeypatch) -> None:
    with httpx.Client(timeout=20) as client:
        for bad_id in ("yesterday", f"{2**64}-0", f"1-{2**64}"):  # Redis parts are 64-bit
            bad = client.get(f"{server.url}/v1/stream", headers={"Last-Event-ID": bad_id})
            assert bad.status_code == 422 and "not a stream id" in bad.json()["detail"], bad_id
        # an empty one (a client that has seen nothing yet) starts from now
        with client.stream("GET", f"{server.url}/v1/stream",
                           headers={"Last-Event-ID": ""}) as fresh:
            assert fresh.status_code == 200 and next(fresh.iter_lines()) == "retry: 2000"
        streams = server.server.config.app.state.streams
        # a stream whose client has gone is closed within the second it waits on Redis
        wait_for(lambda: streams.open == 0, 10, "the earlier tests' streams to close")
        monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 1)
        with client.stream("GET", f"{server.url}/v1/stream") as first:
            assert next(first.iter_lines()) == "retry: 2000"  # open, and counted
            second = client.get(f"{server.url}/v1/stream")
            assert second.status_code == 503 and "1 streams are open" in second.json()["detail"]
            assert client.get(f"{server.url}/v1/stats").status_code == 200


def test_a_stream_whose_redis_fails_says_so_and_ends(server, redis_client) -> None:
    """Once the response has started there is no 503 to give: the stream sends an ``error``
    event naming the problem and ends (the browser reconnects); no traceback in the log."""
    with httpx.Client(timeout=20) as client, client.stream(
            "GET", f"{server.url}/v1/stream", headers={"Last-Event-ID": "0-0"}) as response:
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        redis_client.set("fintweet:events", "not a stream")  # XREAD now answers WRONGTYPE
        rest = list(lines)  # ends: the server closed the stream
    assert "event: error" in rest
    detail = json.loads(next(line for line in rest if line.startswith("data: "))[6:])["detail"]
    assert detail == "Redis is unavailable (ResponseError); try again shortly"


def test_a_stream_resumed_from_far_back_starts_at_the_newest_with_a_reset(
        server, redis_client) -> None:
    """A page back from sleep: catching up batch by batch could mean 10,000 events to show 60
    rows. Past MAX_RESUME_BATCHES it starts at the tail and says reset (the page reloads)."""
    from fintweet.web.app import MAX_RESUME_BATCHES

    seed(redis_client, [make_result("old0", "before the sleep", EARNINGS, BULLISH)])
    slept_at = ResultReader(redis_client).events_tail()
    for i in range(MAX_RESUME_BATCHES + 1):  # one batch each
        seed(redis_client, [make_result(f"while{i}", "written while asleep", OIL, BEARISH)])
    tail = ResultReader(redis_client).events_tail()
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{server.url}/v1/stream",
                           headers={"Last-Event-ID": slept_at}) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(4)] == [
                "retry: 2000", f"id: {tail}", "event: reset", "data: {}"]
        # one batch fewer behind: caught up batch by batch, as before
        second = ResultReader(redis_client).follow(slept_at, block_ms=0, count=1,
                                                   with_results=False)[0].stream_id
        with client.stream("GET", f"{server.url}/v1/stream",
                           headers={"Last-Event-ID": second}) as response:
            lines = response.iter_lines()
            assert next(lines) == "retry: 2000"
            assert next(line for line in lines if line.startswith("data: ")).count("while1") == 1


def test_a_stream_resumed_from_an_id_past_the_newest_starts_at_the_newest(
        server, redis_client) -> None:
    """An id from before Redis lost its data: new batches, numbered lower, would never reach
    it. (The largest id Redis takes was a 503: XRANGE refuses to start after it.)"""
    seed(redis_client, [make_result("now", "the newest", EARNINGS, BULLISH)])
    tail = ResultReader(redis_client).events_tail()
    for future in (f"{2**64 - 1}-{2**64 - 1}", "99999999999999"):
        with httpx.Client(timeout=20) as client, client.stream(
                "GET", f"{server.url}/v1/stream", headers={"Last-Event-ID": future}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert [next(lines) for _ in range(3)] == ["retry: 2000", f"id: {tail}",
                                                       "event: reset"]


def test_a_stream_resumed_while_redis_fails_is_a_503(server, redis_client) -> None:
    """A resumed stream touched Redis only once open: it opened and ended every 2 s while Redis
    was down, and the page, seeing it open, never backed off."""
    redis_client.set("fintweet:events", "not a stream")  # every stream read now fails
    with httpx.Client(timeout=20) as client:
        resumed = client.get(f"{server.url}/v1/stream", headers={"Last-Event-ID": "1-0"})
    assert resumed.status_code == 503 and "Redis is unavailable" in resumed.json()["detail"]


def test_streams_opened_together_never_pass_the_cap(server, redis_client, monkeypatch) -> None:
    """Each stream's slot is taken before it first waits on Redis: eight clients arriving at
    once against a cap of two get two streams and six 503s, and every slot comes back."""
    streams = server.server.config.app.state.streams
    wait_for(lambda: streams.open == 0, 10, "the earlier tests' streams to close")
    monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 2)
    start, done = threading.Barrier(8), threading.Barrier(9)
    statuses: queue.Queue[int] = queue.Queue()

    def connect() -> None:
        with httpx.Client(timeout=20) as client:
            start.wait()
            with client.stream("GET", f"{server.url}/v1/stream") as response:
                statuses.put(response.status_code)
                done.wait(timeout=20)  # every client holds its answer until all have one

    threads = [threading.Thread(target=connect, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    done.wait(timeout=20)
    for thread in threads:
        thread.join(timeout=20)
    answers = sorted(statuses.get_nowait() for _ in range(8))
    assert answers == [200, 200] + [503] * 6
    wait_for(lambda: streams.open == 0, 10, "the two streams' slots to come back")


def test_the_served_app_gives_up_on_a_silent_redis() -> None:
    """A Redis that stops answering without closing the socket must not hold a stream's
    thread (and its slot) for ever."""
    from fintweet.core.config import Settings
    from fintweet.core.store import CLIENT_TIMEOUTS
    from fintweet.web.server import build_app

    app = build_app(Settings().override(redis_url="redis://127.0.0.1:1/0"), None)
    kwargs = app.state.reader.client.connection_pool.connection_kwargs
    assert CLIENT_TIMEOUTS and CLIENT_TIMEOUTS.items() <= kwargs.items()


def test_the_served_app_takes_its_key_prefix_and_retention_from_the_settings(
        stack, redis_client) -> None:
    """``fintweet serve`` builds its app from the settings: had it dropped the API key, the
    production page would be open, and every test that builds the app itself would pass."""
    from fintweet.core.config import Settings
    from fintweet.web.server import build_app

    key = uuid.uuid4().hex
    seed(redis_client, [make_result("mine", "$TSLA rises", EARNINGS, BULLISH)], prefix="other")
    seed(redis_client, [make_result("not-mine", "$AMD falls", OIL, BEARISH)])
    settings = Settings().override(redis_url=stack.redis_url, redis_prefix="other",
                                   api_key=key, bucket_retention_s=1800)
    with ServerThread(build_app(settings, RuleModel())) as running, httpx.Client(
            base_url=running.url, timeout=20) as client:
        assert client.get("/v1/stats").status_code == 401
        client.headers["Authorization"] = f"Bearer {key}"
        assert [r["id"] for r in client.get("/v1/tweets").json()["results"]] == ["mine"]
        assert client.get("/v1/stats").json()["processed"] == 1
        assert client.get("/v1/limits").json()["window_minutes_max"] == 30


def test_a_silent_redis_is_an_error_after_one_timeout_not_after_ten_retries() -> None:
    """redis-py retries a timed-out command ten times with backoff in a client that builds its
    own pool (``Redis(host=...)``: ~2 minutes at our 10 s timeout), not in one from a URL, which
    is how every client here is made: one timeout, and the caller decides what next."""
    from fintweet.core.store import CLIENT_TIMEOUTS

    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    accepted.append(silent.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        client = redis.Redis.from_url(url, **{**CLIENT_TIMEOUTS, "socket_timeout": 0.3})
        with pytest.raises(redis.TimeoutError):
            client.ping()
        client.close()
    assert len(accepted) == 1  # eleven connections, one per try, with redis-py's retries
    for connection in accepted:
        connection.close()


def test_redis_down_is_503_with_a_message(model) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=2)  # nothing listens there
    app = create_app(ResultReader(client), ResultStore(client), model)
    with ServerThread(app) as running, httpx.Client(base_url=running.url, timeout=20) as api:
        for route in ("/v1/stats", "/v1/tweets", "/v1/tweets/x"):
            response = api.get(route)
            assert response.status_code == 503, route
            assert "Redis is unavailable" in response.json()["detail"]


def test_health_ready_openapi_and_metrics_count_requests(api) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "rules@test"
    paths = api.get("/openapi.json").json()["paths"]
    for route in ("/v1/classify", "/v1/tweets", "/v1/tweets/{tweet_id}", "/v1/stats",
                  "/v1/tickers", "/v1/series", "/v1/stream"):
        assert route in paths

    def count() -> float:
        text = api.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("fintweet_web_requests_total{") and \
                    'route="/v1/tweets/{tweet_id}"' in line and 'status="404"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    for i in range(3):
        assert api.get(f"/v1/tweets/missing-{i}").status_code == 404
    assert count() == before + 3
    metrics = api.get("/metrics").text
    assert 'fintweet_web_request_duration_seconds_bucket{le="0.005",method="GET",' \
           'route="/v1/tweets/{tweet_id}"}' in metrics
    assert 'route="/v1/tweets/missing-0"' not in metrics  # templates, not raw paths
    for i in range(3):  # made-up methods share one label too
        api.request(f"X{i}", "/v1/stats")
    metrics = api.get("/metrics").text
    assert 'method="OTHER"' in metrics and 'method="X0"' not in metrics
    # The page's files are told apart from 404s (a mount has no route template).
    assert api.get("/static/app.js").status_code == 200
    assert api.get("/no-such-page").status_code == 404
    metrics = api.get("/metrics").text
    assert 'route="/static",status="200"' in metrics
    assert 'route="<unmatched>",status="404"' in metrics
    assert "_created" not in metrics  # no creation-time gauge beside every series


def test_page_and_its_assets_are_served(api) -> None:
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        response = api.get(asset)
        assert response.status_code == 200 and len(response.text) > 500
        assert response.headers["cache-control"] == "no-cache"  # as old as the page, never older
        etag = response.headers["etag"]
        assert api.get(asset, headers={"if-none-match": etag}).status_code == 304
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN


def test_api_key_is_required_on_every_v1_route_when_set(stack, redis_client) -> None:
    key = uuid.uuid4().hex
    with ServerThread(build(stack, api_key=key)) as running, httpx.Client(
            base_url=running.url, timeout=20) as client:
        routes = [("GET", "/v1/tweets"), ("GET", "/v1/tweets/x"), ("GET", "/v1/stats"),
                  ("GET", "/v1/tickers"), ("GET", "/v1/series?topic=Earnings"),
                  ("GET", "/v1/stream"), ("POST", "/v1/classify")]
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
                response = client.request(method, path, headers=headers, json={"texts": ["x"]})
                assert response.status_code == 401, (method, path, headers)
                assert "API key" in response.json()["detail"]
                assert response.headers["www-authenticate"] == "Bearer"
        # the key is checked before the body is read: a stranger's body costs no parsing
        bad_body = client.post("/v1/classify", content=b"{not json" + b" " * 100_000,
                               headers={"content-type": "application/json"})
        assert bad_body.status_code == 401, bad_body.text
        good = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/tweets", headers=good).status_code == 200
        assert client.post("/v1/classify", headers={**good, "content-type": "application/json"},
                           content=b"{not json").status_code == 422
        assert client.post("/v1/classify", headers=good, json={"texts": ["x"]}).status_code == 200
        assert client.get("/v1/tweets?access_token=" + key).status_code == 401  # stream only
        # the tweet whose id is "stream" is not the stream (the path's ending once sufficed)
        assert client.get("/v1/tweets/stream?access_token=" + key).status_code == 401
        with client.stream("GET", f"/v1/stream?access_token={key}") as response:
            assert response.status_code == 200
        # Outside /v1: probes, metrics and the page stay open.
        for path in ("/healthz", "/readyz", "/metrics", "/", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_replay_through_worker_reads_back_through_api(
        stack, topic, redis_client, models_dir: Path, tmp_path: Path, workers) -> None:
    """End to end: tweets replayed through the broker and the real worker (the real Lua writer)
    are listed by `fintweet serve`'s /v1/tweets with their filters, announced on the events
    stream, and /v1/classify and `fintweet classify` give the worker's answers for the same
    texts (same model artifact, same text preparation)."""
    tweets = make_tweets(20, prefix="e2e")
    group = f"web-e2e-{uuid.uuid4().hex[:6]}"
    reader = ResultReader(redis_client)
    tail = reader.events_tail()
    publish(stack.kafka_bootstrap, topic, tweets)
    env = worker_env(stack, topic, models_dir, group)
    worker = workers.start(env, "--until-idle", "5", log=tmp_path / "worker.log")
    try:
        wait_for(lambda: int(redis_client.get("fintweet:processed") or 0) == 20, 120,
                 "the worker to store 20 results")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    port = free_port()
    serve_env = {**env, "FINTWEET_WEB_PORT": str(port)}
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "fintweet.cli.main", "serve"],
                                  env=serve_env, stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, 180,
                     f"`fintweet serve` to be ready (log: {tmp_path / 'serve.log'})")
            compare_with_worker(base, reader, tail, tweets)
        finally:
            server.terminate()
            server.wait(timeout=30)
    texts = [t.text for t in tweets]
    stored = {r["id"]: r for r in reader.latest(limit=500)[0]}
    cli = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "classify", "--json", "--models",
         str(models_dir), *texts[:5]], capture_output=True, text=True, timeout=300, check=False)
    assert cli.returncode == 0, cli.stderr
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [r["topic"] for r in rows] == [stored[t.id]["topic"] for t in tweets[:5]]


def compare_with_worker(base: str, reader: ResultReader, tail: str, tweets: list) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        listed = client.get("/v1/tweets", params={"limit": 500}).json()["results"]
        assert sorted(r["id"] for r in listed) == sorted(t.id for t in tweets)
        first = listed[0]
        by_topic = client.get("/v1/tweets", params={"topic": first["topic"], "limit": 500})
        assert first["id"] in [r["id"] for r in by_topic.json()["results"]]
        label = first["sentiment"]["label"]
        by_sentiment = client.get("/v1/tweets", params={"sentiment": label, "limit": 500})
        same = by_sentiment.json()["results"]
        assert first["id"] in [r["id"] for r in same]
        assert all(r["sentiment"]["label"] == label for r in same)
        aapl = client.get("/v1/tweets", params={"ticker": "AAPL", "limit": 500}).json()
        assert sorted(r["id"] for r in aapl["results"]) == sorted(
            t.id for t in tweets if "$AAPL" in t.text)
        announced = [i for event in reader.follow(tail, block_ms=100, count=1000)
                     for i in event.ids]
        assert sorted(announced) == sorted(t.id for t in tweets)
        stored = {r["id"]: r for r in listed}
        texts = [t.text for t in tweets]
        answers = client.post("/v1/classify", json={"texts": texts}).json()["results"]
        for tweet, answer in zip(tweets, answers, strict=True):
            worker_said = stored[tweet.id]
            assert answer["topic"] == worker_said["topic"], tweet.text
            assert answer["sentiment"]["label"] == worker_said["sentiment"]["label"], tweet.text
            assert answer["confidence"] == pytest.approx(worker_said["confidence"], abs=2e-4)
            assert answer["links"] == worker_said["links"]


class GatedModel(RuleModel):
    """The rule model, held inside ``predict_proba`` until the test opens the gate: a batch
    that takes as long as the test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.inside = 0
        self._lock = threading.Lock()

    def predict_proba(self, texts):
        with self._lock:
            self.inside += 1
        self.gate.wait(timeout=30)
        return super().predict_proba(texts)


def test_classify_past_its_cap_is_503_while_the_reads_still_answer(stack, redis_client) -> None:
    """Slow batches take at most MAX_CLASSIFY threads, of a pool of their own: one more
    request is told to come back (503, Retry-After) instead of waiting, and the read routes
    answer at once meanwhile."""
    import time

    from fintweet.web.app import MAX_CLASSIFY

    model = GatedModel()
    statuses: queue.Queue[int] = queue.Queue()
    with ServerThread(build(stack, model)) as running, httpx.Client(
            base_url=running.url, timeout=30) as client:

        def classify() -> None:
            with httpx.Client(base_url=running.url, timeout=30) as own:
                statuses.put(own.post("/v1/classify", json={"texts": ["oil"]}).status_code)

        held = [threading.Thread(target=classify, daemon=True) for _ in range(MAX_CLASSIFY)]
        try:
            for thread in held:
                thread.start()
            wait_for(lambda: model.inside == MAX_CLASSIFY, 10, "the batches to reach the model")
            for _ in range(3):
                refused = client.post("/v1/classify", json={"texts": ["gold"]}, timeout=5)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                assert f"{MAX_CLASSIFY} classify requests are running" in refused.json()["detail"]
            started = time.monotonic()
            assert client.get("/v1/stats").status_code == 200
            assert client.get("/v1/tweets").status_code == 200
            assert time.monotonic() - started < 10.0  # not held behind the gate (30 s)
            assert model.inside == MAX_CLASSIFY  # the refused ones never reached the model
        finally:
            model.gate.set()
            for thread in held:
                thread.join(timeout=30)
        assert sorted(statuses.get_nowait() for _ in range(MAX_CLASSIFY)) == [200] * MAX_CLASSIFY
        # the slots came back
        assert client.post("/v1/classify", json={"texts": ["oil"]}).status_code == 200


def test_no_swagger_ui_or_redoc_only_the_schema(api) -> None:
    """Both load their scripts from a CDN and would be open without the API key."""
    assert api.get("/docs").status_code == 404
    assert api.get("/redoc").status_code == 404
    assert api.get("/docs/oauth2-redirect").status_code == 404
    assert "/v1/classify" in api.get("/openapi.json").json()["paths"]


def test_probes_and_the_page_answer_head(api) -> None:
    for path in ("/healthz", "/readyz", "/"):
        response = api.head(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response.content == b"", path
    assert api.head("/static/app.js").status_code == 200


def test_serve_with_redis_down_says_so_when_it_starts(models_dir: Path) -> None:
    """It serves anyway (the page and /readyz recover with Redis), but a terminal that showed
    only the address left the user guessing at the 503s."""
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "serve", "--port", "0", "--redis-url", dead,
         "--models", str(models_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = server.stdout.readline()  # the address line comes once the model is loaded
        assert ready.startswith("fintweet serve: http://127.0.0.1:"), ready
        base = ready.split()[2].rstrip("/")
        assert http_get(f"{base}/readyz")[0] == 503
    finally:
        server.terminate()
        err = server.communicate(timeout=30)[1]
    assert f"cannot reach Redis at {dead}" in err and "serving anyway" in err


def test_a_server_on_an_ipv6_host_gives_a_url_that_reaches_it(stack) -> None:
    """`serve --host ::1` printed http://::1:8000/, which is no URL."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with ServerThread(build(stack), host="::1") as server:
        assert server.url == f"http://[::1]:{server.port}"
        assert httpx.get(server.url + "/healthz", timeout=10).json() == {"status": "ok"}
