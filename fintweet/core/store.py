"""The Redis side of the pipeline: where results and counts live, and the one Lua script that
writes a whole batch in one round trip.

Key layout (prefix ``fintweet`` by default, ``FINTWEET_REDIS_PREFIX``):

=================================  ==========  ==============================================
key                                type        holds
=================================  ==========  ==============================================
``{p}:tweet:{id}``                 string      the result JSON of one tweet (topic, confidence,
                                               top-3, links, model version, timestamps)
``{p}:counts``                     hash        topic name → tweets classified
``{p}:processed``                  string      tweets classified (sum of ``counts``)
``{p}:duplicates``                 string      tweets seen again and not counted
``{p}:accuracy``                   hash        ``labelled``, ``correct`` (replayed tweets)
``{p}:accuracy:{topic}``           hash        the same, per true topic
``{p}:models``                     hash        ``name@version`` → tweets it classified
``{p}:recent``                     list        ids of the latest 1,000 results, newest first
``{p}:dlq``                        string      dead letters recorded
``{p}:dlq:reasons``                hash        reason → dead letters
``{p}:dlq:seen``                   set         ``topic/partition/offset`` of recorded dead letters
=================================  ==========  ==============================================

Why one script: the existence check and the counter increments must happen together, or a worker
killed between them (or two workers after a rebalance) would count a tweet twice. Redis runs a
script atomically, so "counted" and "stored" are one fact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

RECENT_LENGTH = 1000

# ARGV: prefix, n_results, n_dead, recent_length, model, then per result 5 fields
# (id, payload, topic, true_topic or "", correct "1"/"0"/""), then per dead letter 2 fields
# (uid, reason). Returns a 1/0 "newly counted" flag per result, then per dead letter.
# Counters are summed in Lua tables first: one SET per tweet, then one HINCRBY per topic.
_WRITE_BATCH = """
local p = ARGV[1]
local n = tonumber(ARGV[2])
local nd = tonumber(ARGV[3])
local recent = tonumber(ARGV[4])
local model = ARGV[5]
local flags = {}
local fresh = {}
local counts = {}
local labelled = {}
local correct = {}
local all_labelled, all_correct = 0, 0
local i = 6
for r = 1, n do
  local id, payload, topic, truth, hit = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if redis.call('SET', p .. ':tweet:' .. id, payload, 'NX') then
    flags[r] = 1
    fresh[#fresh + 1] = id
    counts[topic] = (counts[topic] or 0) + 1
    if truth ~= '' then
      local h = tonumber(hit)
      labelled[truth] = (labelled[truth] or 0) + 1
      correct[truth] = (correct[truth] or 0) + h
      all_labelled = all_labelled + 1
      all_correct = all_correct + h
    end
  else
    flags[r] = 0
  end
end
for topic, c in pairs(counts) do redis.call('HINCRBY', p .. ':counts', topic, c) end
for truth, c in pairs(labelled) do
  redis.call('HINCRBY', p .. ':accuracy:' .. truth, 'labelled', c)
  redis.call('HINCRBY', p .. ':accuracy:' .. truth, 'correct', correct[truth])
end
if all_labelled > 0 then
  redis.call('HINCRBY', p .. ':accuracy', 'labelled', all_labelled)
  redis.call('HINCRBY', p .. ':accuracy', 'correct', all_correct)
end
if #fresh > 0 then
  redis.call('INCRBY', p .. ':processed', #fresh)
  redis.call('HINCRBY', p .. ':models', model, #fresh)
  local from = math.max(1, #fresh - recent + 1)
  for j = from, #fresh, 1000 do
    redis.call('LPUSH', p .. ':recent', unpack(fresh, j, math.min(j + 999, #fresh)))
  end
  redis.call('LTRIM', p .. ':recent', 0, recent - 1)
end
if n - #fresh > 0 then redis.call('INCRBY', p .. ':duplicates', n - #fresh) end
local dead = 0
for d = 1, nd do
  local uid, reason = ARGV[i], ARGV[i + 1]
  i = i + 2
  if redis.call('SADD', p .. ':dlq:seen', uid) == 1 then
    dead = dead + 1
    flags[n + d] = 1
    redis.call('HINCRBY', p .. ':dlq:reasons', reason, 1)
  else
    flags[n + d] = 0
  end
end
if dead > 0 then redis.call('INCRBY', p .. ':dlq', dead) end
return flags
"""


@dataclass(frozen=True)
class StoredResult:
    """One classified tweet, as the worker hands it to the store."""

    id: str
    payload: bytes | str  # result JSON
    topic: str  # predicted topic name
    true_topic: str | None = None  # replays only
    correct: bool | None = None


@dataclass(frozen=True)
class DeadLetterMark:
    uid: str  # "topic/partition/offset": a redelivered bad message is recorded once
    reason: str


@dataclass
class WriteOutcome:
    new: list[bool] = field(default_factory=list)  # per result: counted now (False: seen before)
    dead_new: list[bool] = field(default_factory=list)  # per dead letter: recorded now


class ResultStore:
    def __init__(self, client: redis.Redis, prefix: str = "fintweet") -> None:
        self.client = client
        self.prefix = prefix
        self._write = client.register_script(_WRITE_BATCH)

    @classmethod
    def from_url(cls, url: str, prefix: str = "fintweet", **kwargs: Any) -> ResultStore:
        return cls(redis.Redis.from_url(url, **kwargs), prefix)

    def write_batch(
        self,
        results: Sequence[StoredResult],
        dead: Sequence[DeadLetterMark] = (),
        model: str = "",
    ) -> WriteOutcome:
        """Store results, count the new ones and record dead letters: one round trip. ``model``
        ("name@version") classified the whole batch; the worker serves one model at a time."""
        if not results and not dead:
            return WriteOutcome()
        args: list[str | bytes | int] = [self.prefix, len(results), len(dead), RECENT_LENGTH, model]
        for r in results:
            correct = "" if r.correct is None else ("1" if r.correct else "0")
            args += [r.id, r.payload, r.topic, r.true_topic or "", correct]
        for d in dead:
            args += [d.uid, d.reason]
        flags = self._write(args=args)
        n = len(results)
        return WriteOutcome(new=[bool(f) for f in flags[:n]], dead_new=[bool(f) for f in flags[n:]])

    def result(self, tweet_id: str) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.prefix}:tweet:{tweet_id}")
        return None if raw is None else json.loads(raw)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def stats(self) -> dict[str, Any]:
        """What ``fintweet stats`` prints: read in one pipelined round trip."""
        p = self.prefix
        pipe = self.client.pipeline(transaction=False)
        pipe.get(f"{p}:processed")
        pipe.hgetall(f"{p}:counts")
        pipe.get(f"{p}:dlq")
        pipe.hgetall(f"{p}:dlq:reasons")
        pipe.hgetall(f"{p}:accuracy")
        pipe.hgetall(f"{p}:models")
        pipe.get(f"{p}:duplicates")
        processed, counts, dlq, reasons, accuracy, models, duplicates = pipe.execute()
        labelled = int(accuracy.get(b"labelled", 0))
        correct = int(accuracy.get(b"correct", 0))
        topics = {k.decode(): int(v) for k, v in counts.items()}
        return {
            "processed": int(processed or 0),
            "topics": dict(sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))),
            "dlq": int(dlq or 0),
            "dlq_reasons": {k.decode(): int(v) for k, v in reasons.items()},
            "duplicates": int(duplicates or 0),
            "labelled": labelled,
            "accuracy": (correct / labelled) if labelled else None,
            "models": {k.decode(): int(v) for k, v in models.items()},
        }
