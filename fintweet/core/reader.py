"""The read side of the Redis layout in :mod:`fintweet.core.keys`: what the web API, ``fintweet
show`` and ``fintweet tail`` ask of the results the worker's one Lua write leaves behind.

Why it reads only what the writer keeps (capped id lists, per-minute buckets, the events stream)
and never SCANs ``{p}:tweet:*``: every answer here costs a bounded number of round trips whatever
the number of stored tweets, so a page refresh stays cheap while millions of tweets are stored.

Filters take the NAMES the writer indexes by (topic name, sentiment name, ticker without ``$``);
topic and sentiment ids (``5``, ``LABEL_5``) are accepted too and mapped to names here, once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis

from fintweet.core.errors import UserError
from fintweet.core.keys import DEFAULT_PREFIX, ID_PATTERN, Keys, epoch_minute
from fintweet.core.labels import (
    SENTIMENT_NAMES,
    TOPIC_NAMES,
    is_class_index,
    sentiment_id,
    topic_id,
)

# How many ids one round trip of a filtered page reads ahead (LRANGE + MGET per chunk).
_CHUNK = 200
MAX_LIMIT = 500
FIELDS = ("topic", "sentiment", "ticker")


class FilterError(UserError, ValueError):
    """A filter value that names no topic, sentiment or ticker; its message says which are
    accepted, so the API and the CLI can show it as is."""


def shown(value: str, limit: int = 80) -> str:
    """A value quoted in an error, cut to ``limit`` characters: a 40 kB query parameter must not
    come back as a 40 kB error."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value):,} chars)"


def topic_filter(value: str) -> str:
    """A topic NAME from a name, an id (``5``) or a ``LABEL_n`` key."""
    value = value.strip()
    if is_class_index(value):
        index = int(value)
        if index < len(TOPIC_NAMES):
            return TOPIC_NAMES[index]
        raise FilterError(f"topic id {index} is outside 0..{len(TOPIC_NAMES) - 1}")
    for name in TOPIC_NAMES:
        if name.lower() == value.lower():
            return name
    try:
        return TOPIC_NAMES[topic_id(value)]
    except ValueError:
        raise FilterError(
            f"unknown topic {shown(value)}; use a name such as 'Earnings' or an id 0..19") from None


def sentiment_filter(value: str) -> str:
    """A sentiment NAME from a name (any case), an id (``1``) or a ``LABEL_n`` key."""
    value = value.strip()
    key = f"LABEL_{value}" if is_class_index(value) else value
    try:
        return SENTIMENT_NAMES[sentiment_id(key)]
    except ValueError:
        raise FilterError(f"unknown sentiment {shown(value)}; use one of "
                          f"{', '.join(SENTIMENT_NAMES)} or an id 0..2") from None


def ticker_filter(value: str) -> str:
    """Tickers are stored upper-case without ``$`` (``$tsla`` and ``TSLA`` are one ticker)."""
    ticker = value.strip().lstrip("$").upper()
    if not ticker or len(ticker) > 16 or not all(c.isalnum() or c in "._-" for c in ticker):
        raise FilterError(f"bad ticker {shown(value)}; use a cashtag such as TSLA or $TSLA")
    return ticker


def normalise(field_name: str, value: str) -> str:
    if field_name == "topic":
        return topic_filter(value)
    if field_name == "sentiment":
        return sentiment_filter(value)
    if field_name == "ticker":
        return ticker_filter(value)
    raise FilterError(f"unknown field {shown(field_name)}; expected one of {', '.join(FIELDS)}")


def matches(result: dict[str, Any], filters: dict[str, str]) -> bool:
    """Whether a stored result passes normalised filters (``{"topic": "Earnings", ...}``)."""
    for name, value in filters.items():
        if name == "topic" and result.get("topic") != value:
            return False
        if name == "sentiment" and (result.get("sentiment") or {}).get("label") != value:
            return False
        if name == "ticker" and value not in (result.get("links") or {}).get("cashtags", ()):
            return False
    return True


@dataclass(frozen=True)
class Event:
    """One ``{p}:events`` entry: the stream id and the results of the batch it announced."""

    stream_id: str
    ids: list[str]
    results: list[dict[str, Any]] = field(default_factory=list)


# The ids after ``ARGV[1]`` (from the head when empty) in list ``KEYS[1]``, at most ``ARGV[2]``,
# and 1 if any id follows the last of them (else 0); nil when ARGV[1] is not in the list. One
# script, so that a write between finding the id and reading what follows it cannot shift the
# list under the reader: with two round trips, ids written meanwhile pushed the page's start back
# and the next page repeated the last one's tail.
# An id is in a list twice when it was written again after its result expired (a CSV replayed a
# month later: its ids are its rows'); only its first, newest place counts. Otherwise the cursor
# was found at that first place while the page had reached its second one, and paging went back
# and never ended. The list is capped (``INDEX_LENGTH``), so it is read whole, once: the ids
# before the start are the ones already placed, and one pass skips their later places.
_AFTER = """
local list = redis.call('LRANGE', KEYS[1], 0, -1)
local start = 1
if ARGV[1] ~= '' then
  start = nil
  for i, id in ipairs(list) do
    if id == ARGV[1] then start = i + 1; break end
  end
  if not start then return false end
end
local seen = {}
for i = 1, start - 1 do seen[list[i]] = true end
local want, ids, i = tonumber(ARGV[2]), {}, start
while i <= #list and #ids < want do
  local id = list[i]
  if not seen[id] then seen[id] = true; ids[#ids + 1] = id end
  i = i + 1
end
local more = 0
while i <= #list do
  if not seen[list[i]] then more = 1; break end
  i = i + 1
end
return {ids, more}
"""

class ResultReader:
    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._after = client.register_script(_AFTER)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kwargs: Any) -> ResultReader:
        return cls(redis.Redis.from_url(url, **kwargs), prefix)

    # --- single results -------------------------------------------------------------------

    def result(self, tweet_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.tweet(tweet_id))
        return None if raw is None else orjson.loads(raw)

    def results(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The stored results of ``ids`` in order, one MGET; ids whose result is gone (expired
        or deleted by hand) are left out rather than returned as holes."""
        ids = list(ids)
        if not ids:
            return []
        raws = self.client.mget([self.keys.tweet(i) for i in ids])
        return [orjson.loads(raw) for raw in raws if raw is not None]

    # --- latest results -------------------------------------------------------------------

    def latest(
        self,
        topic: str | None = None,
        sentiment: str | None = None,
        ticker: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, ``limit`` at a time. ``cursor`` is the id of the last result of the
        previous page; the next page starts after that id's current position in the list, so
        results written meanwhile neither repeat nor shift a page, which an offset would do.
        Returns the page and the next cursor (None at the end of the capped list).

        With several filters the index list of the rarest value (by its all-time count) is read
        and the other filters are applied to its results: the answer is exact within that
        list's last 1,000 ids. A cursor the rarest list no longer holds is looked for in the
        other values' lists (the rarest can change between pages)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise FilterError(f"limit {limit} is outside 1..{MAX_LIMIT}")
        filters = {
            name: normalise(name, value)
            for name, value in (("topic", topic), ("sentiment", sentiment), ("ticker", ticker))
            if value is not None and value != ""
        }
        if cursor and not re.fullmatch(ID_PATTERN, cursor):
            raise FilterError(f"cursor {cursor[:80]!r} is not a tweet id; pass back the "
                              "next_cursor of the page before")
        keys = self._source_lists(filters)
        key = keys[0]
        page: list[dict[str, Any]] = []
        # One index list answers one filter exactly: read just the page. Several filters read
        # ahead, since some of the list's results fail the other filters.
        size = limit if len(filters) <= 1 else max(limit, _CHUNK)
        after = cursor or ""
        while True:
            reply = self._after(keys=[key], args=[after, size])
            if reply is None and after == cursor:
                # The rarest value can change between pages (two counts close, one overtaking
                # the other): the cursor is then in the list the pages before were read from.
                for other in keys[1:]:
                    reply = self._after(keys=[other], args=[after, size])
                    if reply is not None:
                        key = other
                        break
            if reply is None:
                # Trimmed off the capped list: nothing older is kept. Unless it names no result
                # at all, or one these filters never list, which no page of theirs gave as its
                # next_cursor (read as the end of the list, a silent empty page, before).
                if after == cursor:
                    raw_cursor = self.client.get(self.keys.tweet(after))
                    if raw_cursor is None:
                        raise FilterError(f"cursor {cursor!r} names no stored result; pass back "
                                          "the next_cursor of the page before, or leave it out "
                                          "for the newest")
                    if not matches(orjson.loads(raw_cursor), filters):
                        raise FilterError(f"cursor {cursor!r} is a result these filters do not "
                                          "list; pass back the next_cursor of a page read with "
                                          "the same filters")
                return page, None
            raw_chunk, more_after_chunk = reply
            chunk = [raw.decode() for raw in raw_chunk]
            if not chunk:
                return page, None
            raws = self.client.mget([self.keys.tweet(i) for i in chunk])
            for offset, raw in enumerate(raws):
                if raw is None:
                    continue
                result = orjson.loads(raw)
                if not matches(result, filters):
                    continue
                page.append(result)
                if len(page) == limit:
                    more = offset < len(chunk) - 1 or bool(more_after_chunk)
                    return page, (chunk[offset] if more else None)
            if len(chunk) < size:
                return page, None
            after = chunk[-1]  # the next chunk starts after it, wherever writes moved it

    def _source_lists(self, filters: dict[str, str]) -> list[str]:
        """The index lists that can answer ``filters``, the one to read first first."""
        if not filters:
            return [self.keys.recent]
        keys = [self.keys.index(name, value) for name, value in filters.items()]
        if len(keys) == 1:
            return keys
        # Every index list is capped (INDEX_LENGTH ids), and in steady state every one is full,
        # so their lengths tie. The rarest value's list reaches furthest back in time, so it
        # holds the most results that pass the other filters: rank by the all-time counts.
        pipe = self.client.pipeline(transaction=False)
        for name, value in filters.items():
            if name == "topic":
                pipe.hget(self.keys.counts, value)
            elif name == "sentiment":
                pipe.hget(self.keys.sentiments, value)
            else:
                pipe.zscore(self.keys.tickers, value)
        counts = [float(count or 0) for count in pipe.execute()]
        return [key for _, key in sorted(zip(counts, keys, strict=True))]

    # --- per-minute buckets ---------------------------------------------------------------

    def top_tickers_in_window(
        self, window_minutes: int = 60, n: int = 10, now: float | None = None
    ) -> list[dict[str, Any]]:
        """The ``n`` most named tickers of the last ``window_minutes`` (the current minute
        included) with their sentiment mix, summed from the per-minute buckets."""
        if window_minutes < 1 or n < 1:
            raise FilterError("window and n must be at least 1")
        last = epoch_minute(now)
        minutes = range(last - window_minutes + 1, last + 1)
        pipe = self.client.pipeline(transaction=False)
        for m in minutes:
            pipe.hgetall(self.keys.minute(m, "tickers"))
        counts: dict[str, int] = {}
        for tickers in pipe.execute():
            for name, count in tickers.items():
                ticker = name.decode()
                counts[ticker] = counts.get(ticker, 0) + int(count)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        if not top:
            return []
        # The mix of the top n only, in a second pass: reading every ticker's three sentiment
        # fields took two thirds of the time (a week of minutes: 1.2 s, docs/benchmarks.md).
        fields = [f"{ticker}|{label}" for ticker, _ in top for label in SENTIMENT_NAMES]
        pipe = self.client.pipeline(transaction=False)
        for m in minutes:
            pipe.hmget(self.keys.minute(m, "ticker_sentiment"), fields)
        sums = [0] * len(fields)
        for values in pipe.execute():
            for j, value in enumerate(values):
                if value is not None:
                    sums[j] += int(value)
        # Each count is its mix's sum, from this second read: a tweet counted after the first
        # read would otherwise be in the mix and not the count. (The writer's one script adds
        # a ticker's count and its mix together, so the mix is the count at this read.)
        per_ticker = len(SENTIMENT_NAMES)
        mixes = [sums[i * per_ticker:(i + 1) * per_ticker] for i in range(len(top))]
        found: list[dict[str, Any]] = [
            {"ticker": ticker, "count": sum(mix),
             "sentiments": dict(zip(SENTIMENT_NAMES, mix, strict=True))}
            for (ticker, _), mix in zip(top, mixes, strict=True)
        ]
        found.sort(key=lambda row: (-row["count"], row["ticker"]))  # as the first read ranked
        return found

    def series(
        self,
        field_name: str,
        value: str,
        window_minutes: int = 60,
        step_minutes: int = 1,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Counts of one topic, sentiment or ticker per ``step_minutes`` over the last
        ``window_minutes``, oldest first, from the per-minute buckets (one HGET per minute, one
        round trip). A ticker's points carry its sentiment mix too. Each point's ``t`` is the
        epoch second its step starts; the last step ends with the current minute."""
        value = normalise(field_name, value)
        if window_minutes < 1 or step_minutes < 1:
            raise FilterError("window and step must be at least 1 minute")
        if step_minutes > window_minutes:
            raise FilterError(f"step {step_minutes} min is longer than the window "
                              f"{window_minutes} min")
        if window_minutes % step_minutes:  # the points would cover more than the window
            raise FilterError(f"step {step_minutes} min does not divide the window "
                              f"{window_minutes} min; choose one that does")
        steps = window_minutes // step_minutes
        first = epoch_minute(now) - steps * step_minutes + 1
        bucket = {"topic": "topics", "sentiment": "sentiments", "ticker": "tickers"}[field_name]
        pipe = self.client.pipeline(transaction=False)
        for m in range(first, first + steps * step_minutes):
            pipe.hget(self.keys.minute(m, bucket), value)
            if field_name == "ticker":
                pipe.hmget(self.keys.minute(m, "ticker_sentiment"),
                           [f"{value}|{label}" for label in SENTIMENT_NAMES])
        replies = pipe.execute()
        per_minute = 2 if field_name == "ticker" else 1
        points: list[dict[str, Any]] = []
        for s in range(steps):
            point: dict[str, Any] = {"t": (first + s * step_minutes) * 60, "count": 0}
            if field_name == "ticker":
                point["sentiments"] = dict.fromkeys(SENTIMENT_NAMES, 0)
            for k in range(step_minutes):
                base = (s * step_minutes + k) * per_minute
                point["count"] += int(replies[base] or 0)
                if field_name == "ticker":
                    for label, raw in zip(SENTIMENT_NAMES, replies[base + 1], strict=True):
                        point["sentiments"][label] += int(raw or 0)
            points.append(point)
        return {"field": field_name, "value": value, "window_minutes": window_minutes,
                "step_minutes": step_minutes, "points": points}

    # --- the events stream ----------------------------------------------------------------

    def events_tail(self) -> str:
        """The id of the newest ``{p}:events`` entry ("0-0" when there is none): where a
        follower starts so that it sees only batches written after it started. Resolving "$"
        once, rather than passing "$" to every XREAD, loses nothing written between reads."""
        newest = cast(list[tuple[bytes, dict[bytes, bytes]]],
                      self.client.xrevrange(self.keys.events, count=1))
        return newest[0][0].decode() if newest else "0-0"

    def events_after(self, last_id: str, limit: int) -> int:
        """How many batches were announced after ``last_id``, counted up to ``limit + 1``: enough
        to tell a follower a short catch-up from one that should start again at the tail."""
        entries = self.client.xrange(self.keys.events, min=f"({last_id}", max="+",
                                     count=limit + 1)
        return len(entries or ())

    def follow(
        self, last_id: str, block_ms: int = 1000, count: int = 100, with_results: bool = True,
        newest: int | None = None,
    ) -> list[Event]:
        """Batches announced on ``{p}:events`` after ``last_id``, waiting up to ``block_ms``
        for one (XREAD BLOCK); each with its results read back (one MGET per batch; only the
        ``newest`` of each batch when given, so a follower that shows a few reads no more). An
        empty list means nothing new within the wait."""
        reply = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
                     self.client.xread({self.keys.events: last_id}, count=count, block=block_ms))
        events: list[Event] = []
        for _stream, entries in reply or ():
            for stream_id, fields in entries:
                raw_ids = fields.get(b"ids", b"[]")
                ids = [str(i) for i in json.loads(raw_ids)]
                shown = ids[-newest:] if newest else ids
                results = self.results(shown) if with_results else []
                events.append(Event(stream_id.decode(), ids, results))
        return events
