"""Live ingest from the X API v2: the filtered stream or recent-search polling, onto Kafka.

tweepy does the talking (requests, status → exception mapping, the stream's line loop, tweet
parsing); this module decides what happens between attempts, because tweepy's own policy does not
fit a long-running service: its stream waits a fixed 60 s on a 429 whatever the reset header says,
retries a rejected token forever, and its ``Client`` can only sleep through rate limits blindly.
So each stream connection is one tweepy attempt that hands control back here on any error, and
every REST call goes through :meth:`_XIngest.call`, which reads tweepy's exceptions:

* 429 → wait until ``x-rate-limit-reset`` (plus a margin), then retry;
* 5xx, dropped connections, a stream the server closed → exponential backoff with jitter, capped;
* 401/403 → :class:`XAuthError` (exit code 2 in the CLI), never retried;
* other 4xx → :class:`XRequestError` naming the request, never retried.

Delivery is at-least-once: a tweet counts as handled once Kafka acknowledged it (``acks=all``);
the search ``since_id`` is saved only after a flush. Copies (stream reconnects, overlapping polls)
are dropped by a bounded in-memory LRU of recent ids, and the worker dedupes by id in Redis for
whatever survives a restart.

The bearer token is held in :class:`BearerToken` (its repr is masked) and scrubbed from tweepy's
debug log, which would otherwise print the ``Authorization`` header.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

import requests
import tweepy
from requests.adapters import HTTPAdapter

from fintweet.core.backoff import Backoff
from fintweet.core.schema import Tweet
from fintweet.ingest.x_mapping import EXPANSIONS, TWEET_FIELDS, MalformedTweet, tweet_from_api
from fintweet.ingest.x_rules import RuleSpec, reconcile_rules

log = logging.getLogger(__name__)

API_HOST = "https://api.twitter.com"
RATE_LIMIT_WINDOW_S = 15 * 60
# Recent search: requests per 15-minute window on the plan (Basic has had 60; check yours).
DEFAULT_SEARCH_REQUESTS_PER_WINDOW = 60
# A poll may take several pages (and a restart re-polls); polling at a quarter of the allowed
# request rate leaves the rest for those, e.g. 60 per 15 min → one poll a minute.
POLL_PAGE_HEADROOM = 4
SEARCH_PAGE_SIZE = 100  # the most recent search returns per page


class XAuthError(RuntimeError):
    """The API rejected the bearer token (401) or refused it this endpoint (403). The CLI maps
    this class name to a one-line message and exit code 2; the message never holds the token."""


class XRequestError(ValueError):
    """The API refused a request as malformed (400, 404, …): a bad query, an unknown field.
    Retrying cannot help, so it ends the run with a one-line message (exit code 2)."""

    user_facing = True


class XUnreachable(RuntimeError):
    """A bounded run (``--max-polls``) gave up on a request that kept failing (network, 5xx,
    429): one line and exit code 2 instead of retrying forever."""

    user_facing = True


class XStateError(ValueError):
    """The ``since_id`` store (Redis) cannot be read at start-up: without it a restart would
    re-ingest up to seven days of matches, so the run refuses to start."""

    user_facing = True


class _Stopped(Exception):
    """Raised inside a wait when a stop was requested, to unwind a poll without saving state."""


# -- the token ------------------------------------------------------------------------------------


class BearerToken:
    """An app-only bearer token that never prints itself (repr, str, f-strings, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        if value is None or not value.strip():
            raise XAuthError("no X API bearer token: set FINTWEET_X_BEARER_TOKEN "
                             "(developer portal → your app → Keys and tokens → Bearer Token)")
        self._value = value.strip()

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "BearerToken('***')"

    __str__ = __repr__


class _RedactToken(logging.Filter):
    """tweepy logs request headers at DEBUG (``fintweet -v``); this masks the token in them."""

    def __init__(self, token: BearerToken) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._token.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_TWEEPY_LOGGERS = ("tweepy.client", "tweepy.streaming")


def _install_redaction(token: BearerToken) -> _RedactToken:
    redactor = _RedactToken(token)
    for name in _TWEEPY_LOGGERS:
        logging.getLogger(name).addFilter(redactor)
    return redactor


def _remove_redaction(redactor: _RedactToken) -> None:
    for name in _TWEEPY_LOGGERS:
        logging.getLogger(name).removeFilter(redactor)


# -- routing and response headers -----------------------------------------------------------------


class _RerouteAdapter(HTTPAdapter):
    """Sends what tweepy addresses to ``https://api.twitter.com`` to another base URL (a proxy,
    or the test double). tweepy hard-codes its host; this is requests' own extension point."""

    def __init__(self, api_base: str) -> None:
        super().__init__()
        self.api_base = api_base.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.url and request.url.startswith(API_HOST):
            request.url = self.api_base + request.url[len(API_HOST):]
        return super().send(request, **kwargs)


@dataclass
class RateLimit:
    """The latest ``x-rate-limit-*`` headers seen on a session."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # unix time

    def wait_s(self, now: float) -> float:
        """How long before another request is allowed: 0 unless the window is used up."""
        if self.remaining is None or self.remaining > 0 or self.reset_at is None:
            return 0.0
        return max(0.0, self.reset_at - now)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


class _ResponseWatch:
    """A requests response hook on tweepy's session: keeps the rate-limit headers (tweepy drops
    them), the body of the last error (tweepy's stream passes only the status code on), and the
    open stream response (so a stop can cut a read that would otherwise wait for a keep-alive)."""

    def __init__(self) -> None:
        self.rate_limit = RateLimit()
        self.error_status: int | None = None
        self.error_text = ""
        self.error_reset: float | None = None  # x-rate-limit-reset of the last error response
        self.stream_response: requests.Response | None = None

    def __call__(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        headers = response.headers
        remaining = _int_header(headers, "x-rate-limit-remaining")
        reset = _int_header(headers, "x-rate-limit-reset")
        if remaining is not None or reset is not None:
            self.rate_limit = RateLimit(_int_header(headers, "x-rate-limit-limit"), remaining,
                                        float(reset) if reset is not None else None)
        if response.status_code >= 300:
            self.error_status = response.status_code
            self.error_reset = float(reset) if reset is not None else None
            try:
                self.error_text = response.text[:1000]
            except requests.RequestException:
                self.error_text = ""
        elif urlparse(response.url or "").path.endswith("/stream"):
            self.stream_response = response

    def attach(self, session: requests.Session) -> None:
        session.hooks["response"].append(self)


def api_error_detail(body: str) -> str:
    """The readable part of an X API error body (v2 "problem" JSON or a v1-style ``errors``
    list); the raw start of the body when it is not JSON."""
    import json

    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if not isinstance(payload, dict):
        return body.strip()[:300]
    parts = [str(payload[k]) for k in ("title", "detail", "reason") if payload.get(k)]
    for error in payload.get("errors") or ():
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
    return "; ".join(dict.fromkeys(parts))[:500]


def route_session(session: requests.Session, api_base: str | None) -> _ResponseWatch:
    watch = _ResponseWatch()
    watch.attach(session)
    if api_base:
        session.mount(API_HOST, _RerouteAdapter(api_base))
    return watch


# -- policy pieces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts. Defaults follow X's reconnect guidance: network errors back off
    from a quarter second to 16 s, HTTP errors from 5 s to 320 s; a 429 waits for its reset
    (60 s when the header is missing), never longer than ``max_reset_wait_s``."""

    network_base_s: float = 0.25
    network_cap_s: float = 16.0
    http_base_s: float = 5.0
    http_cap_s: float = 320.0
    rate_limit_fallback_s: float = 60.0
    reset_margin_s: float = 1.0
    max_reset_wait_s: float = RATE_LIMIT_WINDOW_S + 60.0


class RecentIds:
    """A bounded LRU set of tweet ids published by this process."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"dedupe capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, tweet_id: str) -> bool:
        """True if ``tweet_id`` was already recorded; records it either way."""
        if tweet_id in self._ids:
            self._ids.move_to_end(tweet_id)
            return True
        self._ids[tweet_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


def default_search_interval(requests_per_window: int = DEFAULT_SEARCH_REQUESTS_PER_WINDOW) -> float:
    """Seconds between polls for a plan allowing ``requests_per_window`` per 15 minutes."""
    if requests_per_window < 1:
        raise ValueError(f"requests per window must be at least 1, got {requests_per_window}")
    return RATE_LIMIT_WINDOW_S / requests_per_window * POLL_PAGE_HEADROOM


class Publisher(Protocol):
    """What the ingest needs from :class:`fintweet.ingest.producer.TweetProducer`."""

    def publish(self, tweet: Tweet) -> None: ...

    def flush(self, timeout: float | None = ...) -> None: ...


class IngestCounters(Protocol):
    """What the ingest needs from :class:`fintweet.metrics.IngestMetrics`."""

    def record_error(self, reason: str, count: int = 1) -> None: ...

    def record_duplicates(self, count: int = 1) -> None: ...


@dataclass
class XStats:
    """What one run did; the CLI prints it and the tests read it."""

    sent: int = 0  # handed to the producer (acknowledged by the last flush)
    duplicates: int = 0
    malformed: int = 0
    polls: int = 0
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"sent {self.sent} tweets, skipped {self.duplicates} duplicates and "
                f"{self.malformed} malformed payloads; polls {self.polls}, stream connections "
                f"{self.connections}; errors: {errors}")


# -- the shared core ------------------------------------------------------------------------------


class _XIngest:
    """Mapping, dedupe, publishing, counting, waiting and stopping, shared by both modes."""

    def __init__(
        self,
        token: BearerToken,
        producer: Publisher,
        *,
        metrics: IngestCounters | None = None,
        policy: RetryPolicy | None = None,
        dedupe_capacity: int = 100_000,
        flush_every_s: float = 1.0,
    ) -> None:
        self.producer = producer
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.recent = RecentIds(dedupe_capacity)
        self.stats = XStats()
        self.stopping = threading.Event()
        self.flush_every_s = flush_every_s
        self._token = token
        self._last_flush = time.monotonic()
        self._watch = _ResponseWatch()  # replaced by the subclass's routed session's watch
        self.api_ok: bool | None = None  # the last API call succeeded (None: none made yet)
        # Tries per request before giving up; None retries until stopped (a long-running
        # ingester rides out outages). A bounded run (--max-polls) sets it, so it can end.
        self.max_attempts: int | None = None

    # -- lifecycle

    def stop(self) -> None:
        """Safe from a signal handler or another thread: the run loop returns promptly."""
        self.stopping.set()

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise _Stopped

    # -- counting

    def _error(self, reason: str) -> None:
        self.stats.errors[reason] += 1
        if self.metrics is not None:
            self.metrics.record_error(reason)

    def _scrub(self, text: str) -> str:
        return self._token.scrub(text)

    # -- publishing

    def offer(self, payload: Any, includes: Mapping[str, Any] | None = None) -> bool:
        """Map, dedupe and publish one API tweet; False when it was skipped."""
        try:
            tweet = tweet_from_api(payload, includes)
        except MalformedTweet as exc:
            self.reject(exc.reason, str(exc))
            return False
        if self.recent.seen(tweet.id):
            self.stats.duplicates += 1
            if self.metrics is not None:
                self.metrics.record_duplicates()
            log.debug("tweet %s already published, skipped", tweet.id)
            return False
        self.producer.publish(tweet)
        self.stats.sent += 1
        return True

    def offer_all(self, payloads: Iterable[Any], includes: Mapping[str, Any] | None) -> int:
        return sum(self.offer(payload, includes) for payload in payloads)

    def reject(self, reason: str, detail: str) -> None:
        self.stats.malformed += 1
        self._error(reason)
        log.warning("skipped a malformed X payload (%s): %s", reason, detail[:300])

    def flush(self) -> None:
        self.producer.flush()
        self._last_flush = time.monotonic()

    def maybe_flush(self) -> None:
        """The stream never ends by itself, so broker failures are surfaced every second or so
        rather than only at shutdown."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    # -- REST calls with the retry policy

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one tweepy call until it succeeds, waiting as the response says; raise for what
        retrying cannot fix. ``what`` names the request in logs and errors."""
        http = Backoff(self.policy.http_base_s, self.policy.http_cap_s)
        network = Backoff(self.policy.network_base_s, self.policy.network_cap_s)
        attempts = 0
        last_error = ""
        while True:
            if self.stopping.is_set():
                raise _Stopped
            if self.max_attempts is not None and attempts >= self.max_attempts:
                raise XUnreachable(f"{what} failed {attempts} times in a row (last: {last_error});"
                                   " check the network, --api-base, or the X API status")
            attempts += 1
            window_wait = self._watch.rate_limit.wait_s(time.time())
            if window_wait > 0:
                delay = min(window_wait + self.policy.reset_margin_s, self.policy.max_reset_wait_s)
                log.info("%s: rate-limit window used up, waiting %.1fs for its reset", what, delay)
                self._sleep(delay)
                self._watch.rate_limit = RateLimit()
            try:
                result = fn(*args, **kwargs)
                self.api_ok = True
                return result
            except tweepy.TooManyRequests as exc:
                last_error = "HTTP 429"
                self._error("http_429")
                delay = self._reset_delay(exc.reset_time)
                log.warning("%s: rate limited (429); waiting %.1fs for the reset", what, delay)
            except tweepy.TwitterServerError as exc:
                last_error = f"HTTP {exc.response.status_code}"
                self._error("http_5xx")
                delay = http.next_delay()
                log.warning("%s: server error (%s); retrying in %.2fs", what,
                            self._scrub(str(exc)).splitlines()[0], delay)
            except (tweepy.Unauthorized, tweepy.Forbidden) as exc:
                self._error(f"http_{exc.response.status_code}")
                raise self._auth_error(what, exc.response.status_code, exc.response.reason,
                                       exc.api_messages) from None
            except tweepy.HTTPException as exc:
                self._error(f"http_{exc.response.status_code}")
                raise XRequestError(f"X API refused {what}: {self._scrub(str(exc))}") from None
            except requests.RequestException as exc:
                last_error = type(exc).__name__
                self._error("connection")
                delay = network.next_delay()
                log.warning("%s: connection failed (%s); retrying in %.2fs", what,
                            type(exc).__name__, delay)
            self.api_ok = False
            self._sleep(delay)

    def _reset_delay(self, reset_time: float | None) -> float:
        if reset_time is None:
            return self.policy.rate_limit_fallback_s
        wait = float(reset_time) - time.time() + self.policy.reset_margin_s
        return min(max(wait, self.policy.reset_margin_s), self.policy.max_reset_wait_s)

    def _auth_error(self, what: str, status: int, reason: str,
                    messages: Sequence[str]) -> XAuthError:
        detail = self._scrub("; ".join(m for m in messages if m))
        if status == 401:
            text = (f"X API rejected the bearer token (HTTP 401 {reason}) on {what}; check "
                    "FINTWEET_X_BEARER_TOKEN (regenerate it in the developer portal if revoked)")
        else:
            text = (f"X API refused the bearer token access to {what} (HTTP {status} {reason}); "
                    "the token is valid but the app's plan may not include this endpoint "
                    "(see docs/x-ingest.md)")
        return XAuthError(f"{text}: {detail}" if detail else text)


# A bounded run tries each request this often before counting the poll as failed.
BOUNDED_RUN_ATTEMPTS = 5

# -- recent search --------------------------------------------------------------------------------


class SinceIdStore:
    """The newest tweet id already ingested for one query, in Redis, so a restart resumes there
    instead of re-reading seven days of matches. Keyed by a hash of the query: a changed query
    starts fresh rather than skipping what the new one matches."""

    def __init__(self, client: Any, query: str, prefix: str = "fintweet") -> None:
        self.client = client
        self.query = query
        self.key = f"{prefix}:x:since_id:{hashlib.sha1(query.encode()).hexdigest()}"

    def load(self) -> str | None:
        import redis

        try:
            value = self.client.get(self.key)
        except redis.RedisError as exc:
            raise XStateError(f"cannot read the search position {self.key} from Redis: {exc}"
                              ) from None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def save(self, tweet_id: str) -> None:
        self.client.set(self.key, tweet_id)


def _newer(a: str | None, b: str | None) -> str | None:
    """The larger of two tweet ids (snowflakes grow with time; compare as numbers)."""
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


class SearchIngester(_XIngest):
    """Polls ``GET /2/tweets/search/recent`` for tweets newer than ``since_id``, following
    ``next_token`` through every page of a poll before moving ``since_id`` on."""

    def __init__(
        self,
        token: BearerToken,
        query: str,
        producer: Publisher,
        since_ids: SinceIdStore,
        *,
        api_base: str | None = None,
        interval_s: float | None = None,
        max_pages: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(token, producer, **kwargs)
        if not query.strip():
            raise XRequestError("the search query is empty")
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        if interval_s is not None and interval_s < 0:
            raise ValueError(f"interval must not be negative, got {interval_s}")
        self.query = query
        self.since_ids = since_ids
        self.interval_s = default_search_interval() if interval_s is None else interval_s
        self.max_pages = max_pages
        self.client = tweepy.Client(bearer_token=token.reveal(), wait_on_rate_limit=False)
        self._watch = route_session(self.client.session, api_base)
        self.since_id: str | None = since_ids.load()
        self._since_saved = self.since_id

    def ready(self) -> tuple[bool, str]:
        if self.api_ok is False:
            return False, "the X API is failing; retrying"
        return True, "polling"

    def poll_once(self) -> int:
        """One poll: every page newer than ``since_id`` (at most ``max_pages``), published and
        flushed, then the new ``since_id`` saved. Returns the tweets published."""
        published = 0
        newest: str | None = None
        next_token: str | None = None
        for _page in range(self.max_pages):
            response = self.call(
                "GET /2/tweets/search/recent", self.client.search_recent_tweets, self.query,
                since_id=self.since_id, next_token=next_token, max_results=SEARCH_PAGE_SIZE,
                tweet_fields=list(TWEET_FIELDS), expansions=list(EXPANSIONS),
            )
            meta = response.meta or {}
            newest = _newer(newest, meta.get("newest_id"))
            published += self.offer_all(response.data or [], response.includes)
            next_token = meta.get("next_token")
            if not next_token:
                break
        else:
            if next_token:
                log.warning("poll stopped after %d pages (--max-pages); older matches since "
                            "the last poll are skipped", self.max_pages)
        self.flush()
        self.stats.polls += 1
        if newest is not None:
            self.since_id = _newer(self.since_id, newest)
        self._save_since_id()
        return published

    def _save_since_id(self) -> None:
        import redis

        if self.since_id is None or self.since_id == self._since_saved:
            return
        try:
            self.since_ids.save(self.since_id)
            self._since_saved = self.since_id
        except redis.RedisError as exc:  # kept in memory; saved at the next poll
            self._error("redis")
            log.warning("could not save since_id %s to Redis (%s); will retry", self.since_id, exc)

    def run(self, max_polls: int | None = None) -> XStats:
        """Poll until stopped (or ``max_polls``). Waits ``interval_s`` between polls, longer when
        the rate-limit headers say the window is used up."""
        log.info("polling recent search every %.0fs for %r (since_id %s)", self.interval_s,
                 self.query, self.since_id or "none: the last 7 days")
        if max_polls is not None and self.max_attempts is None:
            self.max_attempts = BOUNDED_RUN_ATTEMPTS
        attempted = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                attempted += 1
                try:
                    count = self.poll_once()
                except _Stopped:
                    break
                except XUnreachable as exc:
                    if max_polls is not None and attempted >= max_polls:
                        if self.stats.polls == 0:
                            raise XUnreachable(f"every poll failed ({attempted} of {attempted}):"
                                               f" {exc}") from None
                        break
                    log.warning("poll %d failed: %s", attempted, exc)
                    count = 0
                else:
                    log.info("poll %d: %d new tweets (since_id %s)", self.stats.polls, count,
                             self.since_id)
                if max_polls is not None and attempted >= max_polls:
                    break
                try:
                    self._sleep(self.interval_s - (time.monotonic() - started))
                except _Stopped:
                    break
        finally:
            self.flush()
        return self.stats


# -- filtered stream ------------------------------------------------------------------------------


class _OneConnectionStream(tweepy.StreamingClient):
    """tweepy's stream loop, one connection per ``filter()`` call: every way a connection can end
    (HTTP error, network error, server close) records why and disconnects, so the ingester, not
    tweepy's fixed waits, decides when to reconnect."""

    def __init__(self, ingest: StreamIngester, token: BearerToken, **kwargs: Any) -> None:
        super().__init__(token.reveal(), **kwargs)
        self._ingest = ingest
        self.ended: tuple[str, Any] = ("closed", None)
        self.received = False

    def on_connect(self) -> None:
        self.ended = ("closed", None)
        self.received = False
        self._ingest.connected()

    def on_data(self, raw_data: bytes) -> None:
        self.received = True
        self._ingest.on_line(raw_data, self)

    def on_keep_alive(self) -> None:
        self.received = True
        self._ingest.maybe_flush()

    def on_request_error(self, status_code: int) -> None:
        self.ended = ("http", status_code)
        self.disconnect()

    def on_connection_error(self) -> None:
        self.ended = ("connection", None)
        self.disconnect()

    def on_closed(self, response: requests.Response) -> None:
        self.ended = ("closed", None)
        self.disconnect()

    def on_exception(self, exception: Exception) -> None:
        self.ended = ("exception", exception)

    def on_disconnect(self) -> None:
        log.debug("stream connection ended: %s", self.ended[0])


class StreamIngester(_XIngest):
    """Reconciles the rule set, then holds the filtered stream open until stopped."""

    def __init__(
        self,
        token: BearerToken,
        rules: Sequence[RuleSpec],
        producer: Publisher,
        *,
        api_base: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(token, producer, **kwargs)
        self.rules = list(rules)
        self.client = _OneConnectionStream(self, token, wait_on_rate_limit=False)
        self._watch = route_session(self.client.session, api_base)
        self.is_connected = False

    def ready(self) -> tuple[bool, str]:
        return (True, "stream connected") if self.is_connected else (False, "stream not connected")

    def stop(self) -> None:
        super().stop()
        self.client.disconnect()
        self._cut_open_read()

    def _cut_open_read(self) -> None:
        """Shut the socket of the open stream so a read blocked until the next keep-alive (20 s
        on X) returns now. Best effort: a miss only delays the stop to that keep-alive."""
        response = self._watch.stream_response
        raw = getattr(response, "raw", None)
        connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def connected(self) -> None:
        self.stats.connections += 1
        self.is_connected = True
        log.info("filtered stream connected (connection %d)", self.stats.connections)

    def on_line(self, raw: bytes, client: tweepy.StreamingClient) -> None:
        """One stream line. tweepy's own ``on_data`` would end the stream on a line that is not
        JSON and on a ``matching_rules`` entry without a tag; here such lines are counted and
        skipped. The payload still goes through tweepy's ``Tweet`` and includes parsing."""
        import json

        try:
            message = json.loads(raw)
        except ValueError:
            self.reject("malformed_json", f"not JSON: {raw[:200]!r}")
            return
        if not isinstance(message, dict):
            self.reject("malformed_json", f"not a JSON object: {raw[:200]!r}")
            return
        if "data" not in message:
            if message.get("errors"):  # operational notices, e.g. an upcoming disconnect
                self._error("stream_error")
                log.warning("X stream reported: %s", self._scrub(str(message["errors"]))[:500])
            else:
                self.reject("invalid_tweet", f"a stream message without data: {raw[:200]!r}")
            return
        try:
            tweet = tweepy.Tweet(message["data"])
            includes = client._process_includes(dict(message.get("includes") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            self.reject("invalid_tweet", f"{type(exc).__name__}: {exc}; line {raw[:200]!r}")
            return
        self.offer(tweet, includes)
        self.maybe_flush()

    def run(self) -> XStats:
        """Reconcile rules, then connect, reconnecting on every failure until stopped."""
        try:
            change = reconcile_rules(self.client, self.rules, call=self.call)
        except _Stopped:
            return self.stats
        log.info("stream rules: %d added, %d deleted, %d unchanged", len(change.added),
                 len(change.deleted), len(change.kept))
        http = Backoff(self.policy.http_base_s, self.policy.http_cap_s)
        network = Backoff(self.policy.network_base_s, self.policy.network_cap_s)
        try:
            while not self.stopping.is_set():
                self.client.filter(tweet_fields=list(TWEET_FIELDS), expansions=list(EXPANSIONS))
                self.is_connected = False
                self._watch.stream_response = None
                if self.stopping.is_set():
                    break
                if self.client.received:
                    http.reset()
                    network.reset()
                self._sleep(self._after_connection(http, network))
        except _Stopped:
            pass
        finally:
            self.flush()
        return self.stats

    def _after_connection(self, http: Backoff, network: Backoff) -> float:
        """Why the last connection ended → how long to wait (or raise when waiting is futile)."""
        kind, detail = self.client.ended
        if kind == "exception":
            raise detail
        if kind == "http":
            status = int(detail)
            if status in (401, 403):
                self._error(f"http_{status}")
                messages = [api_error_detail(self._watch.error_text)]
                raise self._auth_error("GET /2/tweets/search/stream", status,
                                       "Unauthorized" if status == 401 else "Forbidden", messages)
            if status in (420, 429):
                self._error("http_429")
                reset = self._watch.error_reset
                delay = self._reset_delay(reset) if reset else max(
                    self.policy.rate_limit_fallback_s, http.next_delay())
                log.warning("stream rate limited (%d); reconnecting in %.2fs", status, delay)
                return delay
            if status >= 500 or status == 408:
                self._error("http_5xx" if status >= 500 else "http_408")
                delay = http.next_delay()
                log.warning("stream HTTP %d; reconnecting in %.2fs", status, delay)
                return delay
            self._error(f"http_{status}")
            raise XRequestError(f"X API refused the stream connection (HTTP {status}): "
                                f"{self._scrub(api_error_detail(self._watch.error_text))}")
        self._error("disconnect" if kind == "closed" else "connection")
        delay = network.next_delay()
        log.warning("stream %s; reconnecting in %.2fs",
                    "closed by the server" if kind == "closed" else "connection dropped", delay)
        return delay


# -- logging ---------------------------------------------------------------------------------


class TokenRedaction:
    """Context manager: the token is masked in tweepy's log records while it is active."""

    def __init__(self, token: BearerToken) -> None:
        self.token = token
        self._filter: _RedactToken | None = None

    def __enter__(self) -> TokenRedaction:
        self._filter = _install_redaction(self.token)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._filter is not None:
            _remove_redaction(self._filter)
