"""Turning Kafka records into tweets, or into dead letters with a reason.

A small fixed set of reasons (they become a Prometheus label, so cardinality matters); the exact
validation message travels in the dead letter's ``error`` field.

Each record is parsed on its own (``orjson.loads``), so no record's bytes can combine with a
neighbour's; only the already-parsed objects are validated as one list, one call into pydantic's
Rust core per batch. Whatever goes wrong with one record, even a bug here, makes that record a
dead letter (``internal_error`` names the exception type) and never stops the worker: a record
that crashed it would crash every restart, and its partition would never move again.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from fintweet.core.schema import (
    MAX_DEAD_LETTER_COPY,
    MAX_DEAD_LETTER_KEY,
    DeadLetter,
    Tweet,
    requeued_from,
)
from fintweet.core.schema import DeadLetterReason as Reason
from fintweet.core.text import MAX_TEXT_CHARS

log = logging.getLogger(__name__)

_BATCH = TypeAdapter(list[Tweet])


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
        return self.letter.uid


def _reason_for(value: Any) -> tuple[Reason, str]:
    """Why a value failed. Only runs for bad messages, so clarity beats speed."""
    if value is None:
        return Reason.NOT_JSON, "message has no value (tombstone)"
    if not isinstance(value, bytes | bytearray | memoryview):
        return Reason.INTERNAL_ERROR, f"value is a {type(value).__name__}, not bytes"
    try:
        bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reason.INVALID_UTF8, f"value is not UTF-8: {exc}"
    try:
        obj = orjson.loads(value)  # depth-limited: deep nesting is an error, not a RecursionError
    except orjson.JSONDecodeError as exc:
        return Reason.NOT_JSON, f"value is not JSON: {exc}"
    if not isinstance(obj, dict):
        return Reason.NOT_AN_OBJECT, f"JSON value is a {type(obj).__name__}, expected an object"
    try:
        Tweet.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        detail = f"{loc}: {first['msg']}"
        if first["loc"] == ("text",):
            if first["type"] == "missing":
                return Reason.MISSING_TEXT, detail
            if first["type"] == "string_too_long":
                return Reason.TEXT_TOO_LONG, f"text is over {MAX_TEXT_CHARS} characters"
            if first["type"] in ("string_too_short", "value_error"):
                nul = "NUL" in first["msg"]
                return (Reason.INVALID_FIELD if nul else Reason.EMPTY_TEXT), detail
        return Reason.INVALID_FIELD, detail
    return Reason.INTERNAL_ERROR, "valid alone but rejected in its batch"


def dead_letter(record: Any, reason: str, error: str) -> DeadLetter:
    """The dead letter for ``record``; a copy too big for a Kafka record is truncated."""
    raw = record.value
    value = b"" if raw is None else bytes(raw)
    copy = value[:MAX_DEAD_LETTER_COPY]
    key = None if record.key is None else bytes(record.key)[:MAX_DEAD_LETTER_KEY]
    return DeadLetter(
        reason=reason,
        error=error[:2000],
        topic=str(record.topic),
        partition=int(record.partition),
        offset=int(record.offset),
        key_b64=None if key is None else base64.b64encode(key).decode(),
        value_b64=base64.b64encode(copy).decode(),
        value_size=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        truncated=len(copy) < len(value),
        requeued_from=requeued_from(getattr(record, "headers", None)),
    )


def _reject(record: Any) -> Rejected:
    try:
        reason, error = _reason_for(record.value)
    except Exception as exc:  # a bug in the diagnosis must not cost the whole batch
        reason, error = Reason.INTERNAL_ERROR, f"{type(exc).__name__} while diagnosing: {exc}"
    return rejected_as(record, reason, error)


def rejected_as(record: Any, reason: str, error: str) -> Rejected:
    """The dead letter, or a bare ``internal_error`` one when building it fails (a key
    ``bytes()`` refuses, say): every way of rejecting a record goes through here, so none can
    raise out of ``decode_records``."""
    try:
        return Rejected(dead_letter(record, reason, error), record)
    except Exception as exc:
        log.exception("building the dead letter failed")
        letter = DeadLetter(
            reason=Reason.INTERNAL_ERROR,
            error=f"{type(exc).__name__} while building the dead letter",
            topic=str(getattr(record, "topic", "?")),
            partition=int(getattr(record, "partition", -1)),
            offset=int(getattr(record, "offset", -1)), value_b64="",
        )
        return Rejected(letter, record)


def decode_records(records: list[Any]) -> tuple[list[Decoded], list[Rejected]]:
    """Parse each record alone, validate the parsed objects as one list; a failing list is
    retried without the items pydantic named, so one bad tweet costs one extra call, not N."""
    loads = orjson.loads
    objects: list[Any] = []
    kept: list[Any] = []
    rejected: list[Rejected] = []
    for record in records:
        try:
            obj = loads(record.value)
        except Exception:  # JSONDecodeError, TypeError for a None value, ...
            rejected.append(_reject(record))
            continue
        if type(obj) is dict:
            objects.append(obj)
            kept.append(record)
        else:
            rejected.append(_reject(record))
    if not objects:
        return [], rejected
    try:
        tweets = _BATCH.validate_python(objects)
        return [Decoded(t, r) for t, r in zip(tweets, kept, strict=True)], rejected
    except ValidationError as exc:
        bad = {error["loc"][0] for error in exc.errors()
               if error["loc"] and isinstance(error["loc"][0], int)}
    except Exception:
        bad = set()  # not pydantic's verdict: find the culprit one by one below
    good = [i for i in range(len(objects)) if i not in bad]
    rejected.extend(_reject(kept[i]) for i in sorted(bad))
    try:
        if not bad:
            raise RuntimeError("batch failed without naming an item")
        tweets = _BATCH.validate_python([objects[i] for i in good])
        return [Decoded(t, kept[i]) for t, i in zip(tweets, good, strict=True)], rejected
    except Exception:
        return _validate_each(objects, kept, good, rejected)


def _validate_each(objects: list[Any], kept: list[Any], index: list[int],
                   rejected: list[Rejected]) -> tuple[list[Decoded], list[Rejected]]:
    decoded: list[Decoded] = []
    for i in index:
        try:
            decoded.append(Decoded(Tweet.model_validate(objects[i]), kept[i]))
        except ValidationError:
            rejected.append(_reject(kept[i]))
        except Exception as exc:
            rejected.append(rejected_as(kept[i], Reason.INTERNAL_ERROR,
                                      f"{type(exc).__name__} while validating: {exc}"))
    return decoded, rejected
