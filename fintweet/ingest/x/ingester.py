"""What both X modes share: mapping, dedupe, publishing, counting, waiting, stopping, and the
REST call wrapper that applies the status rules of :mod:`fintweet.ingest.x.policy`.

Delivery is at-least-once: a tweet counts as handled once Kafka acknowledged it (``acks=all``).
Copies (stream reconnects, overlapping polls) are dropped by a bounded in-memory LRU of recent
ids, and the worker dedupes by id in Redis for whatever survives a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import tweepy

from fintweet.core.backoff import Backoff
from fintweet.core.config import DEDUPE_CAPACITY
from fintweet.core.kafka_errors import BrokerUnavailable
from fintweet.core.producer import PublishError
from fintweet.core.schema import Tweet
from fintweet.ingest.x.errors import Stopped, XAuthError, XRequestError, XUnreachable
from fintweet.ingest.x.mapping import MalformedTweet, tweet_from_api
from fintweet.ingest.x.policy import Action, RetryPolicy, is_usage_cap, status_action
from fintweet.ingest.x.token import BearerToken
from fintweet.ingest.x.transport import RateLimit, ResponseWatch

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the ingest needs from :class:`fintweet.core.producer.TweetProducer`."""

    def publish(self, tweet: Tweet) -> None: ...

    def flush(self, timeout: float | None = ...) -> None: ...

    def reachable(self) -> bool: ...

    def renew(self) -> int: ...

    def abandon(self) -> None: ...


class IngestCounters(Protocol):
    """What the ingest needs from :class:`fintweet.monitoring.ingest.IngestMetrics`."""

    def record_error(self, reason: str, count: int = 1) -> None: ...

    def record_duplicates(self, count: int = 1) -> None: ...


@dataclass
class XStats:
    """What one run did; the CLI prints it and the tests read it."""

    # handed to the producer; a tweet a Kafka outage failed is counted again when it comes back
    sent: int = 0
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


class RecentIds:
    """A bounded LRU set of tweet ids published by this process."""

    def __init__(self, capacity: int = DEDUPE_CAPACITY) -> None:
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


class XIngest:
    """The shared core of :class:`~fintweet.ingest.x.search.SearchIngester` and
    :class:`~fintweet.ingest.x.stream.StreamIngester`."""

    def __init__(
        self,
        token: BearerToken,
        producer: Publisher,
        *,
        metrics: IngestCounters | None = None,
        policy: RetryPolicy | None = None,
        dedupe_capacity: int = DEDUPE_CAPACITY,
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
        self._watch = ResponseWatch()  # replaced by the subclass's routed session's watch
        self.api_ok: bool | None = None  # the last API call succeeded (None: none made yet)
        self.kafka_down = False  # riding out a Kafka outage (not ready meanwhile)
        # Tries per request before giving up; None retries until stopped (a long-running
        # ingester rides out outages). A bounded run (--max-polls) sets it, so it can end.
        self.max_attempts: int | None = None

    # -- lifecycle

    def stop(self) -> None:
        """Safe from a signal handler or another thread: the run loop returns promptly."""
        self.stopping.set()

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: whether this ingester can publish now, and why not."""
        raise NotImplementedError

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise Stopped

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
        except Exception as exc:  # a shape the mapper did not foresee: skip it, keep ingesting
            # In search mode the position is saved only after the page, so a crash here would
            # read the same page, and crash, on every restart.
            self.reject("invalid_tweet", f"unexpected payload ({type(exc).__name__}: {exc})")
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

    def ride_out_kafka_outage(self, exc: PublishError, backoff: Backoff, then: str) -> None:
        """Kafka stopped taking tweets: wait until a broker accepts connections again (Kafka's
        outage need not end the ingest, nor use up a container's restarts), then return for the
        caller to ``then``. The dedupe is forgotten: the tweets that failed were recorded in it
        as published, and when they come again (search from its saved since_id, the stream's
        backfill) they must be published, not skipped; the repeats of acknowledged ones are
        counted once by the worker, which keys on the tweet id."""
        self.kafka_down = True
        self._error("publish")
        log.error("%s; will %s once Kafka takes tweets again", exc, then)
        self.recent = RecentIds(self.recent.capacity)
        dropped = None
        try:
            while dropped is None:
                self._sleep(backoff.next_delay())
                if not self.producer.reachable():
                    continue
                # A fresh client: the old one may never send again. What it still held is
                # dropped with it, and comes again as said above.
                try:
                    dropped = self.producer.renew()
                except BrokerUnavailable as still:  # accepts connections, answers nothing yet
                    log.warning("%s", still)
        except Stopped:
            # Stopped meanwhile: the stuck client would hold the stop for its flush timeout,
            # then fail it; what it holds is lost either way, and was reported above.
            self.producer.abandon()
            raise
        self.kafka_down = False
        if dropped:
            log.warning("%d tweet(s) failed or were dropped with the old Kafka client",
                        dropped)
        self._last_flush = time.monotonic()
        log.info("Kafka accepts connections again: going on")

    def maybe_flush(self) -> None:
        """The stream never ends by itself, so broker failures are surfaced every second or so
        rather than only at shutdown."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    # -- the status rules, applied

    def after_status(self, what: str, status: int, *, reason: str, detail: str,
                     reset_time: float | None, http: Backoff,
                     remaining: int | None = None) -> float:
        """Count an HTTP error and return how long to wait before trying again, or raise what
        retrying cannot fix (:func:`~fintweet.ingest.x.policy.status_action` decides which).
        ``detail`` is the API's own explanation; ``reset_time`` and ``remaining`` its
        ``x-rate-limit-reset`` and ``x-rate-limit-remaining``."""
        action, counted_as = status_action(status)
        self._error(counted_as)
        detail = self._scrub(detail).strip()
        if action is Action.WAIT_FOR_RESET and is_usage_cap(detail):
            # The plan's monthly tweet cap: no wait short of the month's end helps, and waiting
            # for window resets would say "rate limited" every 15 minutes for weeks.
            raise XRequestError(f"X API refused {what}: the app's usage cap is reached (HTTP "
                                f"{status}: {detail}); it resets with the plan's billing period "
                                "(see the developer portal's usage page), or upgrade the plan")
        if action is Action.AUTH:
            raise self._auth_error(what, status, reason, detail)
        if action is Action.REFUSE:
            text = f"X API refused {what} (HTTP {status} {reason})".replace(" )", ")")
            raise XRequestError(f"{text}: {detail}" if detail else text)
        if action is Action.WAIT_FOR_RESET:
            explained = f": {detail}" if detail else ""
            # Only a spent window (remaining 0, or not said) ends at its reset. A 429 with
            # requests left is something else (TooManyConnections: the last connection to the
            # stream is still open on X's side), and a reset already past (a clock ahead of
            # X's) says nothing: both back off, from a minute as X advises, so 429s cannot come
            # every second, nor hold a stream up for a whole window.
            if (reset_time is not None and reset_time > time.time()
                    and (remaining is None or remaining <= 0)):
                delay = self._reset_delay(reset_time)
                log.warning("%s: rate limited (HTTP %d%s); waiting %.1fs for the reset", what,
                            status, explained, delay)
                return delay
            delay = max(self.policy.rate_limit_fallback_s, http.next_delay())
            log.warning("%s: HTTP %d%s; retrying in %.1fs", what, status, explained, delay)
            return delay
        delay = http.next_delay()
        log.warning("%s: HTTP %d (%s); retrying in %.2fs", what, status, reason or "error", delay)
        return delay

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one tweepy call until it succeeds, waiting as the response says; raise for what
        retrying cannot fix. ``what`` names the request in logs and errors."""
        http = Backoff(self.policy.http_base_s, self.policy.http_cap_s)
        network = Backoff(self.policy.network_base_s, self.policy.network_cap_s)
        attempts = 0
        last_error = ""
        while True:
            if self.stopping.is_set():
                raise Stopped
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
            except tweepy.HTTPException as exc:
                status = exc.response.status_code
                last_error = f"HTTP {status}"
                delay = self.after_status(
                    what, status, reason=str(exc.response.reason or ""),
                    detail="; ".join(m for m in exc.api_messages if m),
                    reset_time=getattr(exc, "reset_time", None), http=http,
                    remaining=self._watch.error_remaining)
            except requests.RequestException as exc:
                last_error = type(exc).__name__
                self._error("connection")
                delay = network.next_delay()
                log.warning("%s: connection failed (%s); retrying in %.2fs", what,
                            type(exc).__name__, delay)
            self.api_ok = False
            self._sleep(delay)

    def _reset_delay(self, reset_time: float) -> float:
        wait = float(reset_time) - time.time() + self.policy.reset_margin_s
        return min(max(wait, self.policy.reset_margin_s), self.policy.max_reset_wait_s)

    def _auth_error(self, what: str, status: int, reason: str, detail: str) -> XAuthError:
        detail = self._scrub(detail)
        if status == 401:
            text = (f"X API rejected the bearer token (HTTP 401 {reason}) on {what}; check "
                    "FINTWEET_X_BEARER_TOKEN (regenerate it in the developer portal if revoked)")
        else:
            text = (f"X API refused the bearer token access to {what} (HTTP {status} {reason}); "
                    "the token is valid but the app's plan may not include this endpoint "
                    "(see docs/x-ingest.md)")
        return XAuthError(f"{text}: {detail}" if detail else text)
