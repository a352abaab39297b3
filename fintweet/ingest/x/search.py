"""Recent-search polling: ``GET /2/tweets/search/recent`` every interval, resuming from the
newest id already ingested, which is kept in Redis and saved only after a flush (so a crash
re-reads rather than skips)."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import tweepy

from fintweet.core.backoff import Backoff
from fintweet.core.keys import DEFAULT_PREFIX, Keys
from fintweet.core.producer import PublishError
from fintweet.ingest.x.errors import Stopped, XRequestError, XStateError, XUnreachable
from fintweet.ingest.x.ingester import Publisher, XIngest, XStats
from fintweet.ingest.x.mapping import EXPANSIONS, TWEET_FIELDS
from fintweet.ingest.x.policy import BOUNDED_RUN_ATTEMPTS, SEARCH_PAGE_SIZE, default_search_interval
from fintweet.ingest.x.token import BearerToken
from fintweet.ingest.x.transport import route_session

log = logging.getLogger(__name__)

# X's ids are snowflakes: milliseconds since X's epoch in the bits above the lowest 22.
X_EPOCH_MS = 1288834974657
# Recent search answers 400 to a since_id from before its 7 days; ten minutes of margin for skew.
SEARCH_WINDOW_S = 7 * 24 * 3600 - 600


def tweet_created_s(tweet_id: str) -> float:
    """When a tweet id was made, in epoch seconds."""
    return ((int(tweet_id) >> 22) + X_EPOCH_MS) / 1000


def searchable_since_id(since_id: str | None, now: float) -> str | None:
    """``since_id`` while recent search still takes it, else None (with a warning). Why: past
    its 7 days X answers 400 to every poll, so an ingester that was down for a week, or whose
    query matched nothing for one, would never poll again; the tweets in between are beyond
    recent search's reach either way."""
    if since_id is None or not since_id.isdigit():
        return since_id
    age_s = now - tweet_created_s(since_id)
    if age_s <= SEARCH_WINDOW_S:
        return since_id
    log.warning("the saved search position (since_id %s) is %.1f days old, older than recent "
                "search's 7 days: polling from the oldest tweets it still has; anything older "
                "was missed", since_id, age_s / 86400)
    return None


class SinceIdStore:
    """The newest tweet id already ingested for one query, in Redis, so a restart resumes there
    instead of re-reading seven days of matches. Keyed by a hash of the query: a changed query
    starts fresh rather than skipping what the new one matches."""

    def __init__(self, client: Any, query: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.query = query
        self.key = Keys(prefix).x_since_id(hashlib.sha1(query.encode()).hexdigest())

    def load(self) -> str | None:
        import redis

        try:
            value = self.client.get(self.key)
        except redis.RedisError as exc:
            remedy = ("; is Redis up? (`fintweet up` starts the embedded one; set "
                      "FINTWEET_REDIS_URL or --redis-url)"
                      if isinstance(exc, redis.ConnectionError | redis.TimeoutError)
                      and not isinstance(exc, redis.AuthenticationError) else "")
            raise XStateError(f"cannot read the search position {self.key} from Redis: "
                              f"{exc}{remedy}") from None
        if value is None:
            return None
        since_id = value.decode() if isinstance(value, bytes) else str(value)
        if not since_id.isascii() or not since_id.isdigit():  # tweet ids are decimal numbers
            raise XStateError(f"the search position {self.key} in Redis is {since_id[:40]!r}, "
                              "not a tweet id; delete that key to start from the recent window")
        return since_id

    def save(self, tweet_id: str) -> None:
        self.client.set(self.key, tweet_id)


def _tweet_id_or_none(value: Any) -> str | None:
    """``meta.newest_id`` when it is a tweet id (decimal digits), else None: it becomes the
    saved search position, which must be one."""
    text = str(value) if isinstance(value, (str, int)) else ""
    return text if text.isascii() and text.isdigit() else None


def _newer(a: str | None, b: str | None) -> str | None:
    """The larger of two tweet ids (snowflakes grow with time; compare as numbers)."""
    if a is None or b is None:
        return a or b
    return a if int(a) >= int(b) else b


class SearchIngester(XIngest):
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
        if interval_s is not None and not (math.isfinite(interval_s) and interval_s >= 0):
            # nan passed a "< 0" check and polled without pause; inf overflows Event.wait
            raise ValueError(f"interval must be a finite number of seconds, at least 0, got "
                             f"{interval_s}")
        self.query = query
        self.since_ids = since_ids
        self.interval_s = default_search_interval() if interval_s is None else interval_s
        self.max_pages = max_pages
        # Pages come back as the API's JSON, each tweet mapped (or refused) on its own: tweepy's
        # own parsing builds every tweet of a page at once, and one it could not parse (no
        # text, a created_at without milliseconds) failed the page, and every poll after it.
        self.client = tweepy.Client(bearer_token=token.reveal(), wait_on_rate_limit=False,
                                    return_type=dict)
        self._watch = route_session(self.client.session, api_base,
                                    self.policy.request_timeout_s)
        self.since_id: str | None = since_ids.load()
        self._since_saved = self.since_id

    def ready(self) -> tuple[bool, str]:
        if self.kafka_down:
            return False, "Kafka is not taking tweets; waiting for it"
        if self.api_ok is False:
            return False, "the X API is failing; retrying"
        return True, "polling"

    def poll_once(self) -> int:
        """One poll: every page newer than ``since_id`` (at most ``max_pages``), published and
        flushed, then the new ``since_id`` saved. Returns the tweets published."""
        published = 0
        newest: str | None = None
        next_token: str | None = None
        self.since_id = searchable_since_id(self.since_id, time.time())
        for _page in range(self.max_pages):
            response = self.call(
                "GET /2/tweets/search/recent", self.client.search_recent_tweets, self.query,
                since_id=self.since_id, next_token=next_token, max_results=SEARCH_PAGE_SIZE,
                tweet_fields=list(TWEET_FIELDS), expansions=list(EXPANSIONS),
            )
            if not isinstance(response, dict):
                self.reject("malformed_json", f"a search page that is not a JSON object: "
                                              f"{str(response)[:200]!r}")
                break
            meta: dict[str, Any] = response.get("meta") or {}
            if not isinstance(meta, dict):
                meta = {}
            newest = _newer(newest, _tweet_id_or_none(meta.get("newest_id")))
            tweets = response.get("data") or []
            includes = response.get("includes")
            published += self.offer_all(tweets if isinstance(tweets, list) else [tweets],
                                        includes if isinstance(includes, dict) else None)
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
        kafka = Backoff(self.policy.kafka_base_s, self.policy.kafka_cap_s)
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                attempted += 1
                try:
                    count = self.poll_once()
                    kafka.reset()
                except Stopped:
                    break
                except PublishError as exc:
                    if max_polls is not None:  # a bounded run ends, and says so
                        raise
                    try:
                        # since_id is saved only after a flush: the poll starts where it did
                        self.ride_out_kafka_outage(exc, kafka, then="poll again from since_id "
                                                                    f"{self.since_id or 'none'}")
                    except Stopped:
                        break
                    continue
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
                except Stopped:
                    break
        finally:
            self.flush()
        return self.stats
