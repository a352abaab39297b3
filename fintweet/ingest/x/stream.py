"""The filtered stream: reconcile the account's rules, then hold ``GET /2/tweets/search/stream``
open, reconnecting after every failure as :mod:`fintweet.ingest.x.policy` says.

tweepy's own stream policy does not fit a long-running service (it waits a fixed 60 s on a 429
whatever the reset header says, and retries a rejected token forever), so each connection is one
tweepy attempt that hands control back here on any error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import requests
import tweepy

from fintweet.core.backoff import Backoff
from fintweet.core.producer import PublishError
from fintweet.ingest.x.errors import Stopped
from fintweet.ingest.x.ingester import Publisher, XIngest, XStats
from fintweet.ingest.x.mapping import EXPANSIONS, TWEET_FIELDS
from fintweet.ingest.x.rules import RuleSpec, reconcile_rules
from fintweet.ingest.x.token import BearerToken
from fintweet.ingest.x.transport import api_error_detail, route_session

log = logging.getLogger(__name__)

STREAM_ROUTE = "GET /2/tweets/search/stream"


class _OneConnectionStream(tweepy.StreamingClient):
    """tweepy's stream loop, one connection per ``filter()`` call: every way a connection can end
    (HTTP error, network error, server close) records why and disconnects, so the ingester, not
    tweepy's fixed waits, decides when to reconnect."""

    def __init__(self, ingest: StreamIngester, token: BearerToken, **kwargs: Any) -> None:
        super().__init__(token.reveal(), **kwargs)
        self._ingest = ingest
        self.ended: tuple[str, Any] = ("closed", None)
        self.received = False

    def begin(self) -> None:
        """Forget how the previous connection went. tweepy calls ``on_connect`` only on HTTP 200,
        so a flag set by an earlier good connection would otherwise outlive it, and every later
        failure would look like one that followed delivered data (resetting the backoff)."""
        self.ended = ("closed", None)
        self.received = False

    def _stop_if_asked(self) -> None:
        """tweepy's ``_connect`` sets ``running = True`` when it starts, overwriting the
        ``disconnect()`` of a stop that landed between the run loop's check and that moment; a
        stop is therefore re-applied at each callback, where tweepy checks ``running`` next."""
        if self._ingest.stopping.is_set():
            self.disconnect()

    def on_connect(self) -> None:
        self.ended = ("closed", None)
        self.received = False
        self._ingest.connected()
        self._stop_if_asked()

    def on_data(self, raw_data: bytes) -> None:
        self.received = True
        self._ingest.on_line(raw_data, self)
        self._stop_if_asked()

    def on_keep_alive(self) -> None:
        self.received = True
        self._ingest.maybe_flush()
        self._stop_if_asked()

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


# X's filtered stream recovers at most this many minutes on reconnecting (plans that allow it).
MAX_BACKFILL_MINUTES = 5


class StreamIngester(XIngest):
    """Reconciles the rule set, then holds the filtered stream open until stopped."""

    def __init__(
        self,
        token: BearerToken,
        rules: Sequence[RuleSpec],
        producer: Publisher,
        *,
        api_base: str | None = None,
        backfill_minutes: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(token, producer, **kwargs)
        if not 0 <= backfill_minutes <= MAX_BACKFILL_MINUTES:
            raise ValueError(f"backfill_minutes must be 0..{MAX_BACKFILL_MINUTES}, got "
                             f"{backfill_minutes}")
        self.rules = list(rules)
        self.backfill_minutes = backfill_minutes
        self.client = _OneConnectionStream(self, token, wait_on_rate_limit=False)
        self._watch = route_session(self.client.session, api_base,
                                    self.policy.request_timeout_s)
        self.is_connected = False

    def ready(self) -> tuple[bool, str]:
        if self.kafka_down:
            return False, "Kafka is not taking tweets; the stream is closed until it does"
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
        except Stopped:
            return self.stats
        log.info("stream rules: %d added, %d deleted, %d unchanged", len(change.added),
                 len(change.deleted), len(change.kept))
        http = Backoff(self.policy.http_base_s, self.policy.http_cap_s)
        network = Backoff(self.policy.network_base_s, self.policy.network_cap_s)
        kafka = Backoff(self.policy.kafka_base_s, self.policy.kafka_cap_s)
        try:
            while not self.stopping.is_set():
                self.client.begin()
                # Without backfill, what X matched while no connection was open (a reconnect,
                # a restart) is never sent: the stream does not replay. With it, X sends those
                # minutes again on every connection and the dedupe (or the worker's, after a
                # restart) drops the tweets already published.
                backfill = ({"backfill_minutes": self.backfill_minutes}
                            if self.backfill_minutes else {})
                self.client.filter(tweet_fields=list(TWEET_FIELDS), expansions=list(EXPANSIONS),
                                   **backfill)
                self.is_connected = False
                self._watch.stream_response = None
                if self.stopping.is_set():
                    break
                if self.client.received and not self._kafka_failed():
                    http.reset()
                    network.reset()
                    kafka.reset()
                self._sleep(self._after_connection(http, network, kafka))
        except Stopped:
            pass
        finally:
            self.flush()
        return self.stats

    def _kafka_failed(self) -> bool:
        kind, detail = self.client.ended
        return kind == "exception" and isinstance(detail, PublishError)

    def _after_connection(self, http: Backoff, network: Backoff, kafka: Backoff) -> float:
        """Why the last connection ended → how long to wait (or raise when waiting is futile).
        An HTTP status goes through the same rules as a REST call's. Kafka not taking tweets
        closes the stream (read on, every tweet would fail) until it does."""
        kind, detail = self.client.ended
        if self._kafka_failed():
            self.ride_out_kafka_outage(detail, kafka, then=(
                f"reconnect the stream, which sends the last {self.backfill_minutes} minute(s) "
                "again" if self.backfill_minutes else "reconnect the stream; what X matches "
                "until then is lost (--backfill-minutes recovers up to 5 minutes)"))
            return 0.0
        if kind == "exception":
            raise detail
        if kind == "http":
            status = int(detail)
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            return self.after_status(
                STREAM_ROUTE, status, reason=reason,
                detail=api_error_detail(self._watch.error_text),
                reset_time=self._watch.error_reset, remaining=self._watch.error_remaining,
                http=http)
        self._error("disconnect" if kind == "closed" else "connection")
        delay = network.next_delay()
        log.warning("stream %s; reconnecting in %.2fs",
                    "closed by the server" if kind == "closed" else "connection dropped", delay)
        return delay
