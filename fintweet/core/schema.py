"""The messages that cross process boundaries on Kafka: a tweet, and a dead letter.

JSON on the wire, the tweet id as the Kafka key so that every copy of one tweet lands on one
partition, and so reaches one worker in order. Exactly-once counting does not rest on that: the
store counts an id only if its ``SET NX`` succeeds, inside one Lua call (``core/store.py``). The
stored result's fields come from ``core/answer.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from fintweet.core.keys import ID_PATTERN
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS
from fintweet.core.text import MAX_TEXT_CHARS, text_problem

# The accepted timestamp window, chosen rather than derived: X launched in 2006, and a fixed upper
# bound (unlike "now + 1 day") gives the same verdict on every machine whatever its clock says.
# Outside it a datetime is a producer bug, and converting year 1 or 9999 to UTC overflows.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Expanded links a tweet carries, and the length of one: bounds on what a message may hold, not
# on what X sends (a mapper trims to them rather than drop the tweet).
MAX_URLS = 100
MAX_URL_CHARS = 4096

SafeId = Annotated[str, Field(pattern=ID_PATTERN)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tweet(BaseModel):
    """One tweet on the ``tweets`` topic. ``label`` (topic id) and ``sentiment_label`` (sentiment
    id) are ground truth and only set by replays, so the worker can keep live accuracy per task;
    ``ingested_at`` starts the end-to-end latency clock."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    id: SafeId
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    created_at: datetime
    author_id: SafeId | None = None
    lang: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,35}$")
    source: Literal["x", "replay"]
    # Strict: JSON true or "5" is a producer bug, not label 1 or 5.
    label: StrictInt | None = Field(default=None, ge=0, lt=NUM_TOPICS)  # true topic id
    sentiment_label: StrictInt | None = Field(default=None, ge=0, lt=NUM_SENTIMENTS)
    # expanded URLs from the X API, if any
    urls: list[Annotated[str, Field(max_length=MAX_URL_CHARS)]] = Field(default_factory=list,
                                                                        max_length=MAX_URLS)
    ingested_at: datetime = Field(default_factory=utcnow)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("created_at", "ingested_at")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        """Naive timestamps are taken as UTC; aware ones are converted, so Redis holds one zone.
        The year is checked before converting: year 1 or 9999 with an offset overflows."""
        if not EARLIEST.year - 1 <= value.year <= LATEST.year:
            raise ValueError(f"timestamp {value.isoformat()} is outside {EARLIEST.year}-"
                             f"{LATEST.year}")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"timestamp {value.isoformat()} is outside {EARLIEST.date()} .. "
                             f"{LATEST.date()} (UTC)")
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class DeadLetterReason(StrEnum):
    """Why a message became a dead letter: the names `fintweet dlq --reason` filters on, the
    ``reason`` label of the dead-letter metric and the fields of ``{p}:dlq:reasons``, so they are
    spelled here once."""

    NOT_JSON = "not_json"  # not JSON, nested too deep, or no value at all (a tombstone)
    INVALID_UTF8 = "invalid_utf8"
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    MISSING_TEXT = "missing_text"
    EMPTY_TEXT = "empty_text"
    TEXT_TOO_LONG = "text_too_long"
    INVALID_FIELD = "invalid_field"  # any other field, or a NUL in the text
    CORRUPT_RECORD = "corrupt_record"  # the broker served it with a bad CRC: no bytes to keep
    CLASSIFY_ERROR = "classify_error"  # the model raised on this tweet alone
    INTERNAL_ERROR = "internal_error"  # anything else that went wrong with this record


class DeadLetter(BaseModel):
    """A message the worker could not use, kept (base64 of the original bytes) with where it came
    from and why, so nothing is silently dropped and it can be replayed once fixed. A value too big
    to fit a Kafka record once base64-encoded is cut to its first ``MAX_DEAD_LETTER_COPY`` bytes;
    ``value_size`` and ``value_sha256`` still identify the original (-1 and "" when the
    original could not be read at all: a record failing its CRC check)."""

    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str
    value_size: int = 0
    value_sha256: str = ""
    truncated: bool = False
    failed_at: datetime = Field(default_factory=utcnow)
    # The first dead letter's uid (below) when this message was a requeued copy of
    # it (``fintweet dlq --requeue``), so a message still bad after a requeue is the same dead
    # letter counted once, not a new one each time.
    requeued_from: str | None = None

    @property
    def uid(self) -> str:
        """Which message this is: where it was first received, however often requeued, and the
        start of its hash. Kafka redelivers a record with its offset and bytes, so it is
        recorded once; a broker or topic reset numbers offsets from 0 again, and a new bad
        message at an offset seen before was taken for a redelivery and never counted."""
        if self.requeued_from:
            return self.requeued_from
        where = f"{self.topic}/{self.partition}/{self.offset}"
        return f"{where}/{self.value_sha256[:16]}" if self.value_sha256 else where


# base64 grows 4/3: 512 KiB of original becomes ~700 KB, under the 1 MB default record limit with
# room for the key and metadata.
MAX_DEAD_LETTER_COPY = 512 * 1024
# The sender's key is the sender's too: kept in the letter and as its record key, cut to this.
MAX_DEAD_LETTER_KEY = 1024
# The Kafka header a requeued message carries: its first dead letter's uid (``DeadLetter.uid``).
REQUEUED_FROM_HEADER = "fintweet-requeued-from"
# What that header must look like to be believed: any producer can set headers.
_LETTER_UID = re.compile(r"[A-Za-z0-9._-]{1,249}/[0-9]{1,9}/[0-9]{1,19}(/[0-9a-f]{16})?")


def requeued_from(headers: Any) -> str | None:
    """The first dead letter's uid a record names in its headers, or None (no such header, or
    one that is no uid)."""
    for name, value in headers or ():
        if name == REQUEUED_FROM_HEADER and isinstance(value, bytes | bytearray):
            text = bytes(value).decode("ascii", errors="replace")
            return text if _LETTER_UID.fullmatch(text) else None
    return None
