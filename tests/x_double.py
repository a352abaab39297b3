"""A stand-in for the X API v2: a real HTTP server on 127.0.0.1 that tweepy talks to unchanged.

It serves what the ingester uses, shaped like the real API:

* ``GET /2/tweets/search/recent`` — newest first, ``since_id``, ``max_results``, ``next_token``
  pagination, ``meta.newest_id``/``oldest_id``/``result_count``, ``x-rate-limit-*`` headers;
* ``GET /2/tweets/search/stream`` — HTTP/1.1 chunked, one JSON object per line, ``\\r\\n``
  keep-alives, following a script per connection;
* ``GET``/``POST /2/tweets/search/stream/rules`` — list, add (``DuplicateRule`` and invalid-rule
  errors as X reports them), delete.

Faults are scripted per endpoint (:meth:`XApiDouble.fail_next`): a 429 whose
``x-rate-limit-reset`` lies a moment ahead, a 503, a 403; a bearer token other than the double's
own gets a 401; a request carried out whose response never arrives
(:meth:`XApiDouble.lose_next_response`). Stream scripts can hold a malformed line, a keep-alive,
an abrupt disconnect mid-stream (the chunked body is cut, as a dropped TCP connection looks to the
client) or a clean close. Every request is recorded, so tests can check what tweepy actually sent.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

SEARCH_PATH = "/2/tweets/search/recent"
STREAM_PATH = "/2/tweets/search/stream"
RULES_PATH = "/2/tweets/search/stream/rules"
ENDPOINTS = {SEARCH_PATH: "search", STREAM_PATH: "stream", RULES_PATH: "rules"}

# Snowflakes as X makes them (ms since its epoch above the lowest 22 bits), from now: ids
# compare as numbers, and their age is what recent search's 7-day window checks.
X_EPOCH_MS = 1288834974657
SEARCH_WINDOW_S = 7 * 24 * 3600


def snowflake(at_s: float) -> int:
    return (int(at_s * 1000) - X_EPOCH_MS) << 22


FIRST_ID = snowflake(time.time())


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


KEEPALIVE = _Marker("KEEPALIVE")  # a blank "\r\n" line, as X sends every 20 s
DISCONNECT = _Marker("DISCONNECT")  # cut the connection mid-body (no terminating chunk)
CLOSE = _Marker("CLOSE")  # end the body cleanly (terminating chunk), as a server-side close


@dataclass(frozen=True)
class Raw:
    """A stream line sent exactly as given (malformed JSON, odd objects)."""

    line: bytes


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Fault:
    status: int
    reset_in: float | None = None  # 429: x-rate-limit-reset this many seconds ahead
    body: dict[str, Any] | None = None
    remaining: int = 0  # 429: x-rate-limit-remaining (>0: not a spent window)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    status: int
    at: float


@dataclass
class _Window:
    """A per-endpoint rate-limit window: ``limit`` requests per ``seconds``."""

    limit: int
    seconds: float
    started: float = 0.0
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, int]:
        """(allowed, remaining after this request, reset as unix seconds)."""
        if now >= self.started + self.seconds:
            self.started, self.used = now, 0
        reset = math.ceil(self.started + self.seconds)
        if self.used >= self.limit:
            return False, 0, reset
        self.used += 1
        return True, self.limit - self.used, reset


def make_tweet(
    n: int,
    text: str | None = None,
    *,
    urls: Sequence[str] = (),
    note_text: str | None = None,
    note_urls: Sequence[str] = (),
    author_id: str | None = "2000",
    lang: str | None = "en",
    created_at: str | None = "2024-05-01T12:00:00.000Z",
) -> dict[str, Any]:
    """A v2 tweet object. ``urls`` are expanded URLs; each gets a ``t.co`` link in the text and
    an ``entities.urls`` entry, as the API sends them. ``None`` leaves a field out."""
    tweet_id = str(FIRST_ID + n)
    short = [f"https://t.co/x{n}u{i}" for i in range(len(urls))]
    body = text if text is not None else f"Headline {n}: $AAPL beats estimates"
    if short:
        body = body + " " + " ".join(short)
    tweet: dict[str, Any] = {"id": tweet_id, "text": body, "edit_history_tweet_ids": [tweet_id]}
    if created_at is not None:
        tweet["created_at"] = created_at
    if author_id is not None:
        tweet["author_id"] = author_id
    if lang is not None:
        tweet["lang"] = lang
    if urls:
        tweet["entities"] = {"urls": [
            {"start": len(body) - 23, "end": len(body), "url": s, "expanded_url": u,
             "display_url": u.split("://", 1)[-1][:25]} for s, u in zip(short, urls, strict=True)
        ]}
    if note_text is not None:
        note: dict[str, Any] = {"text": note_text}
        if note_urls:
            note["entities"] = {"urls": [
                {"start": 0, "end": 23, "url": f"https://t.co/n{n}u{i}", "expanded_url": u}
                for i, u in enumerate(note_urls)
            ]}
        tweet["note_tweet"] = note
    return tweet


def tweet_id(n: int) -> str:
    return str(FIRST_ID + n)


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _State:
    search_tweets: list[dict[str, Any]] = field(default_factory=list)
    rules: dict[str, dict[str, str]] = field(default_factory=dict)  # id → {id, value, tag}
    next_rule_id: int = 1_700_000_000_000_000_000
    stream_scripts: deque[list[Any]] = field(default_factory=deque)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    windows: dict[str, _Window] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    stream_connections: int = 0
    streamed_ids: list[str] = field(default_factory=list)  # every tweet line written, repeats too
    sent_resets: list[int] = field(default_factory=list)  # x-rate-limit-reset of each 429 sent
    # [endpoint, method, requests of theirs still to answer before the one lost]
    lost_responses: list[list[Any]] = field(default_factory=list)
    stalls: dict[str, deque[float]] = field(default_factory=dict)  # endpoint → seconds


class XApiDouble:
    """Start with ``with XApiDouble() as api:``; point the ingester at ``api.base_url``."""

    def __init__(self, token: str = "test-bearer-token", *, keepalive_s: float = 0.05) -> None:
        self.token = token
        self.keepalive_s = keepalive_s
        self.state = _State()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.release = threading.Event()  # ends every held stream (clean close)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> XApiDouble:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="x-api-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> XApiDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting

    def add_search_tweets(self, tweets: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            self.state.search_tweets.extend(tweets)

    def script_stream(self, *items: Any) -> None:
        """What the next stream connection sends: tweet dicts (wrapped as ``{"data": …}``), full
        messages (dicts with ``data``/``errors``), :class:`Raw` lines, :data:`KEEPALIVE`,
        :class:`Pause`, then :data:`DISCONNECT` or :data:`CLOSE`; without either the connection
        is held open with keep-alives until :attr:`release` is set or the double stops."""
        with self.lock:
            self.state.stream_scripts.append(list(items))

    def fail_next(self, endpoint: str, status: int, *, times: int = 1,
                  reset_in: float | None = None, body: dict[str, Any] | None = None,
                  remaining: int = 0) -> None:
        """The next ``times`` requests to ``endpoint`` ("search", "stream", "rules") fail."""
        if endpoint not in ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ENDPOINTS.values())}")
        with self.lock:
            queue = self.state.faults.setdefault(endpoint, deque())
            queue.extend(Fault(status, reset_in, body, remaining) for _ in range(times))

    def lose_next_response(self, endpoint: str, method: str = "POST", after: int = 0) -> None:
        """The next ``method`` request to ``endpoint`` (past the next ``after`` of them, which
        are answered) is carried out, then the connection is closed without a response: what a
        client sees when a reply is lost in transit. For the JSON endpoints ("search",
        "rules"); the stream writes its own body."""
        if endpoint not in ("search", "rules"):
            raise ValueError(f"lose_next_response takes 'search' or 'rules', not {endpoint!r}")
        with self.lock:
            self.state.lost_responses.append([endpoint, method, after])

    def stall_next(self, endpoint: str, seconds: float) -> None:
        """The next request to ``endpoint`` gets no answer for ``seconds``: a connection gone
        silent (a NAT or proxy that dropped it without a reset). Then it is answered as usual."""
        if endpoint not in ENDPOINTS.values():
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {sorted(ENDPOINTS.values())}")
        with self.lock:
            self.state.stalls.setdefault(endpoint, deque()).append(seconds)

    def rate_limit(self, endpoint: str, limit: int, seconds: float) -> None:
        """Enforce ``limit`` requests per ``seconds`` on ``endpoint`` (429 beyond it)."""
        with self.lock:
            self.state.windows[endpoint] = _Window(limit, seconds)

    def set_rules(self, values: Iterable[str], tag: str = "preexisting") -> None:
        with self.lock:
            for value in values:
                self._create_rule(value, tag)

    def _create_rule(self, value: str, tag: str | None) -> dict[str, str]:
        self.state.next_rule_id += 1
        rule = {"id": str(self.state.next_rule_id), "value": value}
        if tag is not None:
            rule["tag"] = tag
        self.state.rules[rule["id"]] = rule
        return rule

    # -- inspection

    @property
    def rule_values(self) -> list[str]:
        with self.lock:
            return [rule["value"] for rule in self.state.rules.values()]

    def requests_to(self, endpoint: str, method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.state.requests
                    if ENDPOINTS.get(r.path) == endpoint and (method is None or r.method == method)]

    @property
    def stream_connections(self) -> int:
        with self.lock:
            return self.state.stream_connections


def _handler_for(api: XApiDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as the real API

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        # -- plumbing

        def _record(self, status: int, body: Any = None) -> None:
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            with api.lock:
                api.state.requests.append(
                    Recorded(self.command, url.path, params, body, status, time.time()))

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            if getattr(self, "_lose_response", False):
                self.close_connection = True  # the work is done; the client never hears of it
                return
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _problem(self, status: int, title: str, detail: str,
                     headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None
                     ) -> None:
            payload = {"title": title, "detail": detail, "type": "about:blank", "status": status}
            payload.update(extra or {})
            self._json(status, payload, headers)

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else None

        def _gate(self, endpoint: str, body: Any = None) -> bool:
            """Auth, scripted faults and rate limits; True when the request may proceed."""
            with api.lock:
                stalls = api.state.stalls.get(endpoint)
                stall = stalls.popleft() if stalls else 0.0
            if stall and api.stopping.wait(stall):
                return False
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                self._record(401, body)
                self._problem(401, "Unauthorized", "Unauthorized")
                return False
            now = time.time()
            with api.lock:
                queue = api.state.faults.get(endpoint)
                fault = queue.popleft() if queue else None
                window = api.state.windows.get(endpoint)
                allowed, remaining, reset = window.take(now) if window else (True, None, None)
            self._limit_headers = {} if window is None else {
                "x-rate-limit-limit": str(window.limit),
                "x-rate-limit-remaining": str(remaining),
                "x-rate-limit-reset": str(reset),
            }
            if fault is not None:
                self._record(fault.status, body)
                self._fault(fault, now)
                return False
            if not allowed:
                with api.lock:
                    api.state.sent_resets.append(int(self._limit_headers["x-rate-limit-reset"]))
                self._record(429, body)
                self._problem(429, "Too Many Requests", "Too Many Requests", self._limit_headers)
                return False
            with api.lock:
                lost = api.state.lost_responses
                planned = next((entry for entry in lost
                                if entry[:2] == [endpoint, self.command]), None)
                self._lose_response = planned is not None and planned[2] == 0
                if planned is not None:
                    if self._lose_response:
                        lost.remove(planned)
                    else:
                        planned[2] -= 1
            return True

        def _fault(self, fault: Fault, now: float) -> None:
            headers: dict[str, str] = {}
            if fault.status == 429 and fault.reset_in is not None:
                reset = math.ceil(now + fault.reset_in)
                headers = {"x-rate-limit-limit": "60",
                           "x-rate-limit-remaining": str(fault.remaining),
                           "x-rate-limit-reset": str(reset)}
                with api.lock:
                    api.state.sent_resets.append(reset)
            if fault.body is not None:
                self._json(fault.status, fault.body, headers)
                return
            titles = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
                      500: "Internal Server Error", 503: "Service Unavailable"}
            title = titles.get(fault.status, "Error")
            extra = {"reason": "client-not-enrolled"} if fault.status == 403 else None
            self._problem(fault.status, title, title, headers, extra)

        # -- routes

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == SEARCH_PATH:
                self._search()
            elif path == STREAM_PATH:
                self._stream()
            elif path == RULES_PATH:
                self._get_rules()
            else:
                self._record(404)
                self._problem(404, "Not Found Error", f"no route {path}")

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            body = self._read_body()
            if path != RULES_PATH:
                self._record(404, body)
                self._problem(404, "Not Found Error", f"no route {path}")
                return
            if not self._gate("rules", body):
                return
            self._record(200, body)
            if isinstance(body, dict) and "add" in body:
                self._add_rules(body["add"], dry_run=self._param("dry_run") == "true")
            elif isinstance(body, dict) and "delete" in body:
                self._delete_rules(body["delete"].get("ids", []))
            else:
                self._problem(400, "Invalid Request", "expected 'add' or 'delete'")

        def _param(self, name: str) -> str | None:
            values = parse_qs(urlparse(self.path).query).get(name)
            return values[-1] if values else None

        # -- search

        def _search(self) -> None:
            if not self._gate("search"):
                return
            query = self._param("query")
            if not query:
                self._record(400)
                self._problem(400, "Invalid Request",
                              "The `query` query parameter can not be empty")
                return
            since = int(self._param("since_id") or 0)
            if since and since < snowflake(time.time() - SEARCH_WINDOW_S):
                self._record(400)  # as X answers a since_id from before its window
                self._problem(400, "Invalid Request", "One or more parameters to your request "
                              "was invalid.", extra={"errors": [{
                                  "parameters": {"since_id": [str(since)]},
                                  "message": f"Invalid 'since_id':'{since}'. 'since_id' must be "
                                             "a tweet id created after the start of the window"}]})
                return
            self._record(200)
            token = self._param("next_token")
            before = int(token.removeprefix("before-")) if token else None
            size = int(self._param("max_results") or 10)
            with api.lock:
                tweets = [t for t in api.state.search_tweets if int(t["id"]) > since
                          and (before is None or int(t["id"]) < before)]
            tweets.sort(key=lambda t: int(t["id"]), reverse=True)
            page, rest = tweets[:size], tweets[size:]
            meta: dict[str, Any] = {"result_count": len(page)}
            payload: dict[str, Any] = {"meta": meta}
            if page:
                payload["data"] = page
                meta.update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
            if rest:
                meta["next_token"] = f"before-{page[-1]['id']}"
            self._json(200, payload, self._limit_headers)

        # -- rules

        def _get_rules(self) -> None:
            if not self._gate("rules"):
                return
            self._record(200)
            with api.lock:
                rules = list(api.state.rules.values())
            payload: dict[str, Any] = {"meta": {"sent": _iso_now(), "result_count": len(rules)}}
            if rules:
                payload["data"] = rules
            self._json(200, payload, self._limit_headers)

        def _add_rules(self, add: list[dict[str, str]], dry_run: bool) -> None:
            created, errors = [], []
            with api.lock:
                existing = {r["value"]: r["id"] for r in api.state.rules.values()}
                for item in add:
                    value = item.get("value", "")
                    if "INVALID" in value or not value.strip():
                        errors.append({
                            "value": value, "title": "UnprocessableEntity",
                            "details": ["Rules must contain a non-negation term"],
                            "type": "https://api.twitter.com/2/problems/invalid-rules"})
                    elif value in existing:
                        errors.append({
                            "value": value, "id": existing[value], "title": "DuplicateRule",
                            "type": "https://api.twitter.com/2/problems/duplicate-rules"})
                    elif dry_run:
                        created.append({"value": value, "tag": item.get("tag"), "id": "0"})
                    else:
                        rule = api._create_rule(value, item.get("tag"))
                        existing[value] = rule["id"]
                        created.append(rule)
            payload: dict[str, Any] = {"meta": {"sent": _iso_now(), "summary": {
                "created": len(created), "not_created": len(errors),
                "valid": len(created), "invalid": len(errors)}}}
            if created:
                payload["data"] = created
            if errors:
                payload["errors"] = errors
            self._json(201, payload, self._limit_headers)

        def _delete_rules(self, ids: list[str]) -> None:
            with api.lock:
                deleted = [i for i in ids if api.state.rules.pop(str(i), None) is not None]
            self._json(200, {"meta": {"sent": _iso_now(), "summary": {
                "deleted": len(deleted), "not_deleted": len(ids) - len(deleted)}}},
                self._limit_headers)

        # -- stream

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _stream(self) -> None:
            if not self._gate("stream"):
                return
            self._record(200)
            with api.lock:
                api.state.stream_connections += 1
                script = api.state.stream_scripts.popleft() if api.state.stream_scripts else []
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in self._limit_headers.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                for item in script:
                    if item is DISCONNECT:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    if item is CLOSE:
                        self._chunk(b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                        self.close_connection = True
                        return
                    self._send_item(item)
                while not (api.stopping.is_set() or api.release.is_set()):
                    self._chunk(b"\r\n")
                    time.sleep(api.keepalive_s)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away: that ends this connection
                pass
            self.close_connection = True

        def _send_item(self, item: Any) -> None:
            if item is KEEPALIVE:
                self._chunk(b"\r\n")
            elif isinstance(item, Pause):
                time.sleep(item.seconds)
            elif isinstance(item, Raw):
                self._chunk(item.line + b"\r\n")
            elif isinstance(item, dict):
                message = item if ("data" in item or "errors" in item) else {
                    "data": item, "matching_rules": [{"id": "1", "tag": "fintweet"}]}
                if isinstance(message.get("data"), dict) and "id" in message["data"]:
                    with api.lock:
                        api.state.streamed_ids.append(str(message["data"]["id"]))
                self._chunk(json.dumps(message).encode() + b"\r\n")
            else:
                raise TypeError(f"unknown stream script item {item!r}")

    return Handler
