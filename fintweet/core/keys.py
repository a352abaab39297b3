"""Every Redis key name of the project, in one place: the worker's Lua write, ``stats``, the
CLI readers and the web app all spell keys through :class:`Keys`, so the layout can be read
(and changed) here alone.

=====================================  ======  ==================================================
key                                    type    holds
=====================================  ======  ==================================================
``{p}:tweet:{id}``                     string  one result JSON (topic, sentiment, links, ...)
``{p}:counts``                         hash    topic name → tweets classified
``{p}:sentiments``                     hash    sentiment name → tweets classified
``{p}:topic_sentiment``                hash    ``topic|sentiment`` → tweets classified
``{p}:tickers``                        zset    ticker (upper case, no ``$``) → tweets naming it
                                               (the ``store.MAX_TICKERS`` most named)
``{p}:ticker:{T}``                     hash    sentiment name → tweets naming ticker T
``{p}:processed``                      string  tweets classified (sum of ``counts``)
``{p}:duplicates``                     string  tweets seen again and not counted
``{p}:accuracy:{task}``                hash    ``labelled``, ``correct`` (replayed tweets)
``{p}:accuracy:{task}:{class}``        hash    the same, per true class
``{p}:models``                         hash    ``name@version`` → tweets it classified
``{p}:recent``                         list    ids of the latest results, newest first (capped)
``{p}:index:topic:{topic}``            list    ids of the latest results of one topic (capped)
``{p}:index:sentiment:{sentiment}``    list    the same per sentiment
``{p}:index:ticker:{T}``               list    the same per ticker
``{p}:minute:{m}:topics``              hash    per-minute bucket (m = epoch minute of the write):
``{p}:minute:{m}:sentiments``          hash    topic / sentiment / ticker → count, each with a
``{p}:minute:{m}:tickers``             hash    TTL of the retention (default 7 days)
``{p}:minute:{m}:ticker_sentiment``    hash    ``T|sentiment`` → count in that minute
``{p}:events``                         stream  one entry per written batch: ``ids`` (JSON list)
``{p}:dlq``                            string  dead letters recorded
``{p}:dlq:reasons``                    hash    reason → dead letters
``{p}:dlq:seen:{uid}``                 string  a recorded dead letter (uid =
                                               ``topic/partition/offset/sha256[:16]``, see
                                               ``DeadLetter.uid``), kept as long as a result,
                                               so a redelivered letter counts once
``{p}:batch:{token}``                  string  a written batch's "newly counted" flags, kept an
                                               hour, so a write retried after its reply was
                                               lost answers what the first one counted
``{p}:x:since_id:{sha1(query)}``      string  the X search poller's resume point, per query
=====================================  ======  ==================================================
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_PREFIX = "fintweet"
# The per-minute buckets, in the order the store's Lua script takes their keys.
MINUTE_BUCKETS = ("topics", "sentiments", "tickers", "ticker_sentiment")
# Ids become parts of key names ({p}:tweet:{id}) and Kafka keys, so only characters with no
# meaning there: X ids are digits, replay ids are "r" + hex or the CSV's own (which must fit).
# Here, not in the schema, so that readers of ids (the web app's cursor) need no pydantic.
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def tweet(self, tweet_id: str) -> str:
        return f"{self.prefix}:tweet:{tweet_id}"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:counts"

    @property
    def sentiments(self) -> str:
        return f"{self.prefix}:sentiments"

    @property
    def topic_sentiment(self) -> str:
        return f"{self.prefix}:topic_sentiment"

    @property
    def tickers(self) -> str:
        return f"{self.prefix}:tickers"

    def ticker(self, ticker: str) -> str:
        return f"{self.prefix}:ticker:{ticker}"

    @property
    def processed(self) -> str:
        return f"{self.prefix}:processed"

    @property
    def duplicates(self) -> str:
        return f"{self.prefix}:duplicates"

    def accuracy(self, task: str, true_class: str | None = None) -> str:
        base = f"{self.prefix}:accuracy:{task}"
        return base if true_class is None else f"{base}:{true_class}"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    @property
    def recent(self) -> str:
        return f"{self.prefix}:recent"

    def index(self, field: str, value: str) -> str:
        """Capped id list of the latest results whose ``field`` (topic, sentiment, ticker) is
        ``value``."""
        return f"{self.prefix}:index:{field}:{value}"

    def minute(self, epoch_minute: int, what: str) -> str:
        """Per-minute bucket ``what``, one of :data:`MINUTE_BUCKETS`: a misspelt name would
        read a bucket nothing writes, all zeros, and look like a quiet minute."""
        if what not in MINUTE_BUCKETS:
            raise ValueError(f"no per-minute bucket {what!r}; there are {MINUTE_BUCKETS}")
        return f"{self.prefix}:minute:{epoch_minute}:{what}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def dlq_reasons(self) -> str:
        return f"{self.prefix}:dlq:reasons"

    def dlq_seen(self, uid: str) -> str:
        return f"{self.prefix}:dlq:seen:{uid}"

    def batch(self, token: str) -> str:
        return f"{self.prefix}:batch:{token}"

    def x_since_id(self, query_digest: str) -> str:
        return f"{self.prefix}:x:since_id:{query_digest}"


def epoch_minute(at: float | None = None) -> int:
    """The per-minute bucket a write at ``at`` (epoch seconds, default now) counts into; the
    store writes and the reader sums by this one rule."""
    return int((time.time() if at is None else at) // 60)
