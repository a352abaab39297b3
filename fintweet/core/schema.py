"""The messages that cross process boundaries: a tweet on Kafka, a dead letter, a result in Redis.

JSON on the wire, the tweet id as the Kafka key so that every copy of one tweet lands on one
partition (and so one worker), which is what lets the worker's dedupe be a simple set in Redis.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS

MAX_TEXT_CHARS = 10_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tweet(BaseModel):
    """One tweet on the ``tweets`` topic. ``label`` (topic id) and ``sentiment_label`` (sentiment
    id) are ground truth and only set by replays, so the worker can keep live accuracy per task;
    ``ingested_at`` starts the end-to-end latency clock."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    created_at: datetime
    author_id: str | None = None
    lang: str | None = None
    source: Literal["x", "replay"]
    label: int | None = Field(default=None, ge=0, lt=NUM_TOPICS)  # true topic id
    sentiment_label: int | None = Field(default=None, ge=0, lt=NUM_SENTIMENTS)
    urls: list[str] = Field(default_factory=list)  # expanded URLs from the X API, if any
    ingested_at: datetime = Field(default_factory=utcnow)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value

    @field_validator("created_at", "ingested_at")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        """Naive timestamps are taken as UTC; aware ones are converted, so Redis holds one zone."""
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def key(self) -> bytes:
        return self.id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class DeadLetter(BaseModel):
    """A message the worker could not use, kept whole (base64 of the original bytes) with where it
    came from and why, so nothing is silently dropped and it can be replayed once fixed."""

    reason: str
    error: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str
    failed_at: datetime = Field(default_factory=utcnow)
