"""The Redis side of the pipeline: the one Lua script that writes a whole batch in one round trip,
and ``stats()``, the counters read back. Key names (and the layout table) live in
:mod:`fintweet.core.keys`; this module spells every key through :class:`Keys`.

Why one script: the existence check and every counter increment (topic, sentiment, ticker,
per-minute bucket, live accuracy, index list, event) must happen together, or a worker killed
between them (or two workers after a rebalance) would count a tweet twice. Redis runs a script
atomically, so "counted" and "stored" are one fact, and everything a tweet adds happens only for
ids the script has just stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis

from fintweet.core.config import (
    DEFAULT_BUCKET_RETENTION_S,
    DEFAULT_RESULT_RETENTION_S,
    TOP_TICKERS,
    Settings,
    redacted,
)
from fintweet.core.errors import UserError
from fintweet.core.keys import DEFAULT_PREFIX, MINUTE_BUCKETS, Keys, epoch_minute
from fintweet.core.labels import SENTIMENT_NAMES, TASKS, class_names

log = logging.getLogger(__name__)

# Index lists (``recent`` and per topic / sentiment / ticker) keep this many newest ids.
INDEX_LENGTH = 1000
# The event stream is trimmed approximately (``MAXLEN ~``), which Redis does in whole nodes.
EVENTS_MAXLEN = 10_000
# Reads of the ticker table a write may spoil before the last one is taken as it is (a batch is
# written every fraction of a second; a read takes a round trip).
WATCH_ATTEMPTS = 5
# The all-time ticker table (count, sentiment mix, index list) keeps this many tickers, the most
# named; a cashtag is anyone's to invent, so the table is capped (about 160 bytes a ticker).
MAX_TICKERS = 100_000
# A tweet's first this many distinct cashtags are counted (and indexed); the rest of a list of
# hundreds (a 10,000-character text holds ~1,400) held Redis for seconds a batch and grew every
# per-minute ticker hash by as many fields. A real post names a handful.
MAX_TICKERS_PER_TWEET = 20
# Every client of ours gets these: a Redis that stops answering without closing the connection
# (a network partition, a host that died) is an error after seconds, not a thread blocked for
# ever. Above the 1 s XREAD block of a follower (``tail --follow``, the page's stream).
CLIENT_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 10}

# KEYS: the fixed keys of the batch, in the order of ``ResultStore._fixed_keys``, then the four
# minute buckets, then the two dead-letter counters, then the batch's own key (``Keys.batch``):
# a batch written before (a retry whose first reply was lost) returns the flags it returned
# then and writes nothing; otherwise its SET NX would now fail for every id, and the worker
# would take the whole batch for duplicates (its stats, metrics and live accuracy short by it).
# ARGV header: n results, n dead letters, index length, model tag, bucket TTL, events maxlen,
# result TTL, most tickers kept, then the prefixes of the key families whose last part is data
# (tweet id, ticker, class name, dead letter's uid) — each is a ``Keys`` method called with an
# empty last part, so the script never spells a key itself.
# ARGV[17]: the results' facts as ONE JSON array of [id, topic, sentiment, [tickers...],
# true topic or "", true sentiment or ""]; then one payload per result; then per dead letter 2
# fields: uid, reason. One JSON argument instead of six per result: redis-py packs each argument
# in Python at a few microseconds apiece, which cost more than the whole script.
# Returns a string of "1"/"0" "newly counted" flags, one per result then one per dead letter (one
# bulk string parses at once; an array of 2,048 integers is parsed one by one in Python).
# Counts are summed in Lua tables first: one SET per tweet, then one write per distinct key.
_WRITE_BATCH = """
local n, nd = tonumber(ARGV[1]), tonumber(ARGV[2])
local cap, model = tonumber(ARGV[3]), ARGV[4]
local ttl, maxlen, result_ttl = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local max_tickers = tonumber(ARGV[8])
local k_tweet, k_ticker = ARGV[9], ARGV[10]
local k_index = {topic = ARGV[11], sentiment = ARGV[12], ticker = ARGV[13]}
local k_acc_class = {topic = ARGV[14], sentiment = ARGV[15]}
local k_dlq_seen = ARGV[16]
local K_COUNTS, K_SENTS, K_TOPIC_SENT, K_TICKERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_PROCESSED, K_DUPLICATES, K_MODELS = KEYS[5], KEYS[6], KEYS[7]
local K_RECENT, K_EVENTS = KEYS[8], KEYS[9]
local K_ACC = {topic = KEYS[10], sentiment = KEYS[11]}
local K_MIN_TOPICS, K_MIN_SENTS = KEYS[12], KEYS[13]
local K_MIN_TICKERS, K_MIN_TICKER_SENT = KEYS[14], KEYS[15]
local K_DLQ, K_DLQ_REASONS, K_BATCH = KEYS[16], KEYS[17], KEYS[18]
local written = redis.call('GET', K_BATCH)
if written then return written end

local function add(t, k, c) t[k] = (t[k] or 0) + c end
local function push(groups, k, id)
  local g = groups[k]
  if g then g[#g + 1] = id else groups[k] = {id} end
end
local function score(acc, truth, hit)
  local a = acc[truth]
  if not a then a = {0, 0}; acc[truth] = a end
  a[1] = a[1] + 1
  if hit then a[2] = a[2] + 1 end
end
-- LPUSH the newest `cap` ids (the last ones of the batch end up first), trim only when over.
local function capped_push(key, ids)
  local len = 0
  for j = math.max(1, #ids - cap + 1), #ids, 1000 do
    len = redis.call('LPUSH', key, unpack(ids, j, math.min(j + 999, #ids)))
  end
  if len > cap then redis.call('LTRIM', key, 0, cap - 1) end
end

local flags, fresh = {}, {}
local topics, sents, topic_sent, tick_n, tick_mix = {}, {}, {}, {}, {}
local by = {topic = {}, sentiment = {}, ticker = {}}
local acc = {topic = {}, sentiment = {}}
local facts = cjson.decode(ARGV[17])
for r = 1, n do
  local f = facts[r]
  local id = f[1]
  if redis.call('SET', k_tweet .. id, ARGV[17 + r], 'NX', 'EX', result_ttl) then
    local topic, sent, tickers, tt, ts = f[2], f[3], f[4], f[5], f[6]
    flags[r] = '1'
    fresh[#fresh + 1] = id
    add(topics, topic, 1)
    add(sents, sent, 1)
    add(topic_sent, topic .. '|' .. sent, 1)
    push(by.topic, topic, id)
    push(by.sentiment, sent, id)
    if #tickers > 0 then
      local seen = {}
      for _, t in ipairs(tickers) do
        if not seen[t] then  -- a ticker named twice in one tweet counts once
          seen[t] = true
          add(tick_n, t, 1)
          local mix = tick_mix[t]
          if not mix then mix = {}; tick_mix[t] = mix end
          add(mix, sent, 1)
          push(by.ticker, t, id)
        end
      end
    end
    if tt ~= '' then score(acc.topic, tt, tt == topic) end
    if ts ~= '' then score(acc.sentiment, ts, ts == sent) end
  else
    flags[r] = '0'
  end
end
local i = 18 + n

local nf = #fresh
if nf > 0 then
  for k, c in pairs(topics) do
    redis.call('HINCRBY', K_COUNTS, k, c)
    redis.call('HINCRBY', K_MIN_TOPICS, k, c)
  end
  for k, c in pairs(sents) do
    redis.call('HINCRBY', K_SENTS, k, c)
    redis.call('HINCRBY', K_MIN_SENTS, k, c)
  end
  for k, c in pairs(topic_sent) do redis.call('HINCRBY', K_TOPIC_SENT, k, c) end
  for t, c in pairs(tick_n) do
    redis.call('ZINCRBY', K_TICKERS, c, t)
    redis.call('HINCRBY', K_MIN_TICKERS, t, c)
    for s, m in pairs(tick_mix[t]) do
      redis.call('HINCRBY', k_ticker .. t, s, m)
      redis.call('HINCRBY', K_MIN_TICKER_SENT, t .. '|' .. s, m)
    end
  end
  for task, per_class in pairs(acc) do
    local labelled, correct = 0, 0
    for truth, a in pairs(per_class) do
      redis.call('HINCRBY', k_acc_class[task] .. truth, 'labelled', a[1])
      redis.call('HINCRBY', k_acc_class[task] .. truth, 'correct', a[2])
      labelled = labelled + a[1]
      correct = correct + a[2]
    end
    if labelled > 0 then
      redis.call('HINCRBY', K_ACC[task], 'labelled', labelled)
      redis.call('HINCRBY', K_ACC[task], 'correct', correct)
    end
  end
  redis.call('INCRBY', K_PROCESSED, nf)
  redis.call('HINCRBY', K_MODELS, model, nf)
  capped_push(K_RECENT, fresh)
  for field, groups in pairs(by) do
    for value, ids in pairs(groups) do capped_push(k_index[field] .. value, ids) end
  end
  -- A ticker's list outlives its results by nothing: unbounded in number (any cashtag a
  -- stream carries), each goes once its newest result has expired.
  for t, _ in pairs(by.ticker) do redis.call('EXPIRE', k_index.ticker .. t, result_ttl) end
  -- The all-time table keeps the most named tickers; the least named leave with their mix
  -- and list, so a stream of ever new cashtags cannot grow it without bound.
  local over = redis.call('ZCARD', K_TICKERS) - max_tickers
  if over > 0 then
    local gone = redis.call('ZPOPMIN', K_TICKERS, over)
    for j = 1, #gone, 2 do redis.call('DEL', k_ticker .. gone[j], k_index.ticker .. gone[j]) end
  end
  for _, k in ipairs({K_MIN_TOPICS, K_MIN_SENTS, K_MIN_TICKERS, K_MIN_TICKER_SENT}) do
    redis.call('EXPIRE', k, ttl)
  end
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', maxlen, '*', 'ids', cjson.encode(fresh))
end
if n - nf > 0 then redis.call('INCRBY', K_DUPLICATES, n - nf) end

local dead = 0
for d = 1, nd do
  local uid, reason = ARGV[i], ARGV[i + 1]
  i = i + 2
  -- one key per letter, kept as long as a result: a set of every uid ever seen grew without
  -- bound, and a uid only has to be remembered while Kafka can deliver its record again
  if redis.call('SET', k_dlq_seen .. uid, '1', 'NX', 'EX', result_ttl) then
    dead = dead + 1
    flags[n + d] = '1'
    redis.call('HINCRBY', K_DLQ_REASONS, reason, 1)
  else
    flags[n + d] = '0'
  end
end
if dead > 0 then redis.call('INCRBY', K_DLQ, dead) end
local out = table.concat(flags)
redis.call('SET', K_BATCH, out, 'EX', 3600)
return out
"""

@dataclass(frozen=True, slots=True)
class StoredResult:
    """One classified tweet, as the worker hands it to the store: the result JSON plus the
    facts the counters are keyed by (names, as the index keys and hashes use them)."""

    id: str
    payload: bytes | str  # result JSON
    topic: str  # predicted topic name
    sentiment: str  # predicted sentiment name
    tickers: tuple[str, ...] = ()  # cashtags, upper case without "$" (a repeat counts once)
    true_topic: str | None = None  # replays with topic labels only
    true_sentiment: str | None = None  # replays with sentiment labels only


@dataclass(frozen=True)
class DeadLetterMark:
    uid: str  # DeadLetter.uid: a redelivered (or requeued) bad message is recorded once
    reason: str


@dataclass
class WriteOutcome:
    new: list[bool] = field(default_factory=list)  # per result: counted now (False: seen before)
    dead_new: list[bool] = field(default_factory=list)  # per dead letter: recorded now


class StoreUnavailable(UserError, ConnectionError):
    """Redis could not be reached for a command's read; shown to the user as one line."""


@contextlib.contextmanager
def reporting_unreachable(url: str) -> Iterator[None]:
    """For a command that reads Redis once and ends: a connection failure inside the block
    becomes one line naming the (redacted) URL and what to do, not a traceback. A wrong password
    and a database the server lacks are told apart from a server that is down: the fix is the
    URL, not starting Redis."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise StoreUnavailable(
            f"Redis at {redacted(url)} refused the connection's credentials ({exc}); put its "
            "password in FINTWEET_REDIS_URL or --redis-url (redis://:PASSWORD@HOST:PORT/DB)"
        ) from None
    except redis.ResponseError as exc:
        if "DB index is out of range" not in str(exc):
            raise
        raise StoreUnavailable(
            f"Redis at {redacted(url)} has no such database ({exc}); pick one it has in "
            "FINTWEET_REDIS_URL or --redis-url (database 0 always exists)") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {redacted(url)} ({type(exc).__name__}); is it up? (`fintweet "
            "up` starts the embedded one; set FINTWEET_REDIS_URL or --redis-url)") from None


def require_redis(url: str) -> None:
    """Fail in seconds with one line when Redis does not answer, before a long-running process
    (the worker) starts: once running it retries each write through an outage for ever."""
    client = redis.Redis.from_url(url, **CLIENT_TIMEOUTS)
    try:
        with reporting_unreachable(url):
            client.ping()
    finally:
        client.close()


class ResultStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        bucket_retention_s: int = DEFAULT_BUCKET_RETENTION_S,
        clock: Callable[[], float] = time.time,
        result_retention_s: int = DEFAULT_RESULT_RETENTION_S,
        max_tickers: int = MAX_TICKERS,
    ) -> None:
        if bucket_retention_s <= 0 or result_retention_s <= 0:
            raise ValueError(f"retentions must be positive seconds, got {bucket_retention_s} "
                             f"(buckets) and {result_retention_s} (results)")
        self.client = client
        self.keys = Keys(prefix)
        self.bucket_retention_s = int(bucket_retention_s)
        self.result_retention_s = int(result_retention_s)
        if max_tickers < 1:
            raise ValueError(f"max_tickers must be at least 1, got {max_tickers}")
        self.max_tickers = int(max_tickers)
        self.clock = clock
        self._write = client.register_script(_WRITE_BATCH)
        k = self.keys
        self._fixed_keys = [
            k.counts, k.sentiments, k.topic_sentiment, k.tickers, k.processed, k.duplicates,
            k.models, k.recent, k.events, k.accuracy("topic"), k.accuracy("sentiment"),
        ]
        self._tail_keys = [k.dlq, k.dlq_reasons]
        self._families = [
            k.tweet(""), k.ticker(""), k.index("topic", ""), k.index("sentiment", ""),
            k.index("ticker", ""), k.accuracy("topic", ""), k.accuracy("sentiment", ""),
            k.dlq_seen(""),
        ]

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        bucket_retention_s: int = DEFAULT_BUCKET_RETENTION_S,
        result_retention_s: int = DEFAULT_RESULT_RETENTION_S,
        **kwargs: Any,
    ) -> ResultStore:
        """``kwargs`` go to the Redis client, over :data:`CLIENT_TIMEOUTS`."""
        return cls(redis.Redis.from_url(url, **{**CLIENT_TIMEOUTS, **kwargs}), prefix,
                   bucket_retention_s, result_retention_s=result_retention_s)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ResultStore:
        """URL, prefix and both retentions from the settings."""
        return cls.from_url(settings.redis_url, settings.redis_prefix,
                            settings.bucket_retention_s, settings.result_retention_s, **kwargs)

    def write_batch(
        self,
        results: Sequence[StoredResult],
        dead: Sequence[DeadLetterMark] = (),
        model: str = "",
        token: str | None = None,
    ) -> WriteOutcome:
        """Store results, count the new ones and record dead letters: one round trip. ``model``
        ("name@version") classified the whole batch; the worker serves one model at a time.
        Per-minute buckets take the minute of this call. ``token`` names the batch: a write
        repeated with the same token (a retry) answers what the first counted and changes
        nothing; without one, every call is a batch of its own."""
        if not results and not dead:
            return WriteOutcome()
        minute = epoch_minute(self.clock())
        keys = [*self._fixed_keys, *(self.keys.minute(minute, what) for what in MINUTE_BUCKETS),
                *self._tail_keys, self.keys.batch(token or uuid.uuid4().hex)]
        facts = orjson.dumps([
            (r.id, r.topic, r.sentiment, r.tickers[:MAX_TICKERS_PER_TWEET], r.true_topic or "",
             r.true_sentiment or "")
            for r in results
        ])
        args: list[str | bytes | int] = [
            len(results), len(dead), INDEX_LENGTH, model, self.bucket_retention_s, EVENTS_MAXLEN,
            self.result_retention_s, self.max_tickers, *self._families, facts,
            *(r.payload for r in results),
        ]
        for d in dead:
            args += [d.uid, d.reason]
        flags = self._write(keys=keys, args=args) or b""
        new = [flag in (49, "1") for flag in flags]  # bytes, or str with decode_responses
        n = len(results)
        return WriteOutcome(new=new[:n], dead_new=new[n:])

    def result(self, tweet_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.tweet(tweet_id))
        return None if raw is None else json.loads(raw)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def top_tickers(self, n: int = TOP_TICKERS) -> list[dict[str, Any]]:
        """The ``n`` most named tickers, all time, with their sentiment mix; equal counts in
        name order, as the windowed reader ranks them (:meth:`ResultReader.top_tickers_in_window`),
        so ``stats --top N`` and ``/v1/tickers?n=N`` name the same tickers."""
        if n <= 0:
            return []  # ZREVRANGE 0 -1 would be every ticker
        k = self.keys
        tickers = self._most_named(n)
        if not tickers:
            return []
        # Each ticker's count again beside its mix, in one MULTI: a write between the two trips
        # would otherwise leave a mix above its count, or a ticker evicted meanwhile an empty one.
        pipe = self.client.pipeline(transaction=True)
        for ticker, _ in tickers:
            pipe.zscore(k.tickers, ticker)
            pipe.hgetall(k.ticker(ticker))
        replies = pipe.execute()
        found: list[dict[str, Any]] = [
            {"ticker": ticker, "count": int(count),
             "sentiments": {name: int(mix.get(name.encode(), 0)) for name in SENTIMENT_NAMES}}
            for (ticker, _), count, mix in zip(tickers, replies[::2], replies[1::2], strict=True)
            if count is not None
        ]
        found.sort(key=lambda row: (-row["count"], row["ticker"]))
        return found

    def _most_named(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` most named tickers with their counts, equal counts in name order. Redis
        reads equal scores backwards (reverse name order), so the last count's ties are read
        again forwards and the cut at n keeps the first names. The two reads see one state
        (WATCH): a ticker that rose between them would otherwise be in neither."""
        k = self.keys
        with self.client.pipeline() as pipe:
            for attempt in range(WATCH_ATTEMPTS):
                try:
                    pipe.watch(k.tickers)
                    top = cast(list[tuple[bytes, float]],
                               pipe.zrevrange(k.tickers, 0, n - 1, withscores=True))
                    if len(top) < n:  # every ticker is in: no cut to make
                        pipe.reset()
                        break
                    cutoff = top[-1][1]
                    above = [(t, c) for t, c in top if c > cutoff]
                    pipe.multi()
                    pipe.zrangebyscore(k.tickers, cutoff, cutoff, start=0, num=n - len(above))
                    ties = cast(list[bytes], pipe.execute()[0])
                    top = above + [(t, cutoff) for t in ties]
                    break
                except redis.WatchError:  # written meanwhile: read again
                    log.debug("ticker table changed while read (attempt %d)", attempt + 1)
        return sorted(((t.decode(), int(c)) for t, c in top), key=lambda tc: (-tc[1], tc[0]))

    def stats(self, top_tickers: int = TOP_TICKERS) -> dict[str, Any]:
        """What ``fintweet stats`` prints: one pipelined round trip for the counters, then
        :meth:`top_tickers`.

        ``labelled`` and ``accuracy`` are the topic task's live accuracy (what they always were);
        ``live_accuracy`` has both tasks, overall and per true class."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.get(k.processed)
        pipe.hgetall(k.counts)
        pipe.hgetall(k.sentiments)
        pipe.hgetall(k.topic_sentiment)
        pipe.get(k.dlq)
        pipe.hgetall(k.dlq_reasons)
        pipe.hgetall(k.models)
        pipe.get(k.duplicates)
        for task in TASKS:
            pipe.hgetall(k.accuracy(task))
            for name in class_names(task):
                pipe.hgetall(k.accuracy(task, name))
        (processed, counts, sentiments, topic_sentiment, dlq, reasons, models,
         duplicates, *accuracy_hashes) = pipe.execute()

        live: dict[str, Any] = {}
        hashes = iter(accuracy_hashes)
        for task in TASKS:
            overall = _accuracy(next(hashes))
            per_class = {name: next(hashes) for name in class_names(task)}
            live[task] = {**overall, "per_class": {
                name: _accuracy(h) for name, h in per_class.items() if h}}

        mix_grid: dict[str, dict[str, int]] = {}
        for key, value in topic_sentiment.items():
            topic, _, sentiment = key.decode().rpartition("|")  # topic names contain "|"
            mix_grid.setdefault(topic, {}).setdefault(sentiment, 0)
            mix_grid[topic][sentiment] += int(value)
        topics = _by_count({k.decode(): int(v) for k, v in counts.items()})
        sentiment_counts = {k.decode(): int(v) for k, v in sentiments.items()}
        return {
            "processed": int(processed or 0),
            "topics": topics,
            "sentiments": {name: sentiment_counts.get(name, 0) for name in SENTIMENT_NAMES},
            "topic_sentiment": {
                topic: {name: mix_grid[topic].get(name, 0) for name in SENTIMENT_NAMES}
                for topic in sorted(mix_grid, key=lambda t: (-topics.get(t, 0), t))
            },
            "tickers": self.top_tickers(top_tickers),
            "dlq": int(dlq or 0),
            "dlq_reasons": {k.decode(): int(v) for k, v in reasons.items()},
            "duplicates": int(duplicates or 0),
            "labelled": live["topic"]["labelled"],
            "accuracy": live["topic"]["accuracy"],
            "live_accuracy": live,
            "models": {k.decode(): int(v) for k, v in models.items()},
        }


def _accuracy(h: dict[bytes, bytes]) -> dict[str, Any]:
    labelled = int(h.get(b"labelled", 0))
    correct = int(h.get(b"correct", 0))
    return {"labelled": labelled, "correct": correct,
            "accuracy": correct / labelled if labelled else None}


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

