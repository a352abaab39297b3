"""Turning Kafka records into tweets, or into dead letters with a reason.

A small fixed set of reasons (they become a Prometheus label, so cardinality matters); the exact
validation message travels in the dead letter's ``error`` field.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fintweet.core.schema import MAX_TEXT_CHARS, DeadLetter, Tweet

REASONS = (
    "invalid_utf8",
    "not_json",
    "not_an_object",
    "missing_text",
    "empty_text",
    "text_too_long",
    "invalid_field",
)


@dataclass(frozen=True)
class Decoded:
    tweet: Tweet
    record: Any  # kafka ConsumerRecord


@dataclass(frozen=True)
class Rejected:
    letter: DeadLetter
    record: Any

    @property
    def uid(self) -> str:
        return f"{self.letter.topic}/{self.letter.partition}/{self.letter.offset}"


def _reason_for(value: bytes | None) -> tuple[str, str]:
    """Why a value failed the fast path. Only runs for bad messages, so clarity beats speed."""
    if value is None:
        return "not_json", "message has no value (tombstone)"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"value is not UTF-8: {exc}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return "not_json", f"value is not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not_an_object", f"JSON value is a {type(obj).__name__}, expected an object"
    try:
        Tweet.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        detail = f"{loc}: {first['msg']}"
        if first["loc"] == ("text",):
            if first["type"] == "missing":
                return "missing_text", detail
            if first["type"] == "string_too_long":
                return "text_too_long", f"text is over {MAX_TEXT_CHARS} characters"
            if first["type"] in ("string_too_short", "value_error"):
                return "empty_text", detail
        return "invalid_field", detail
    return "invalid_field", "message failed validation"  # unreachable in practice


_BATCH = TypeAdapter(list[Tweet])


def decode_records(records: list[Any]) -> tuple[list[Decoded], list[Rejected]]:
    """Validate a whole batch in one call into pydantic's Rust core (half the cost of one call per
    message); only when that fails does each message get validated on its own to find the bad."""
    values = [record.value for record in records]
    if all(isinstance(v, bytes) and v[:1] == b"{" for v in values):
        try:
            tweets = _BATCH.validate_json(b"[" + b",".join(values) + b"]")
        except ValidationError:
            pass  # some message is bad: sort them out one by one
        else:
            # A value holding two objects ('{..},{..}') would shift every tweet after it.
            if len(tweets) == len(records):
                return [Decoded(t, r) for t, r in zip(tweets, records, strict=True)], []
    return _decode_each(records)


def _decode_each(records: list[Any]) -> tuple[list[Decoded], list[Rejected]]:
    tweets: list[Decoded] = []
    rejected: list[Rejected] = []
    validate = Tweet.model_validate_json
    for record in records:
        try:
            tweets.append(Decoded(validate(record.value), record))
        except (ValidationError, TypeError, ValueError):
            reason, error = _reason_for(record.value)
            letter = DeadLetter(
                reason=reason,
                error=error,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key_b64=None if record.key is None else base64.b64encode(record.key).decode(),
                value_b64=base64.b64encode(record.value or b"").decode(),
            )
            rejected.append(Rejected(letter, record))
    return tweets, rejected
