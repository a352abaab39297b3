"""X API v2 tweet payloads → :class:`fintweet.core.schema.Tweet`.

The v2 ``text`` field is truncated for long posts ("note tweets", up to 25,000 characters): the
full text and its entities live under ``note_tweet``. Retweets are truncated too ("RT @a: …"); the
original sits in ``includes.tweets`` when ``expansions=referenced_tweets.id`` was asked for. The
classifier was trained on whole headlines, so both are resolved to the full text here.

``entities.urls[].expanded_url`` is kept so the worker stores where a link really goes rather than
a ``t.co`` redirect (``fintweet.core.text.extract_links`` takes these as ``expanded_urls``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from fintweet.core.schema import MAX_URL_CHARS, MAX_URLS, Tweet, utcnow
from fintweet.core.text import MAX_TEXT_CHARS

# What every request asks for: the fields the mapping reads, and the expansion that brings the
# original of a retweet along (its text is otherwise cut at ~140 characters).
TWEET_FIELDS: tuple[str, ...] = (
    "created_at", "author_id", "lang", "entities", "note_tweet", "referenced_tweets",
)
EXPANSIONS: tuple[str, ...] = ("referenced_tweets.id",)


class MalformedTweet(ValueError):
    """A payload that cannot become a Tweet (no id, no text, wrong types). ``reason`` is a short
    metric label; the message names the offending field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _raw(obj: Any) -> Mapping[str, Any]:
    """tweepy's ``Tweet`` keeps the payload it parsed in ``.data``; plain dicts pass through."""
    data = getattr(obj, "data", obj)
    if not isinstance(data, Mapping):
        raise MalformedTweet("invalid_tweet", f"tweet payload is a {type(data).__name__}, "
                             "not a JSON object")
    return data


def _listed(value: Any) -> list[Any]:
    """A JSON array as a list; anything else (a number or an object where X documents an array)
    as empty: one odd field must not cost the tweet, nor crash the ingester."""
    return value if isinstance(value, list) else []


def _expanded_urls(*entity_sets: Any) -> list[str]:
    """Every usable link, first occurrences in order, as many as the schema holds; a link longer
    than the schema allows is dropped, not the tweet (over-long text is cut the same way)."""
    urls: list[str] = []
    for entities in entity_sets:
        if not isinstance(entities, Mapping):
            continue
        for item in _listed(entities.get("urls")):
            if not isinstance(item, Mapping):
                continue
            url = item.get("expanded_url") or item.get("url")
            if isinstance(url, str) and 0 < len(url) <= MAX_URL_CHARS:
                urls.append(url)
    return list(dict.fromkeys(urls))[:MAX_URLS]


def _full_text(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The untruncated text and the expanded URLs that go with it."""
    note = data.get("note_tweet")
    text = data.get("text")
    if isinstance(note, Mapping) and isinstance(note.get("text"), str) and note["text"].strip():
        # The note's entities index into the note's text; the top-level ones into the truncation,
        # which may hold the same links — both are read, duplicates dropped.
        return note["text"], _expanded_urls(note.get("entities"), data.get("entities"))
    if not isinstance(text, str):
        raise MalformedTweet("invalid_tweet", f"tweet {data.get('id')!r} has no text")
    return text, _expanded_urls(data.get("entities"))


def _retweeted_original(
    data: Mapping[str, Any], included: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    for ref in _listed(data.get("referenced_tweets")):
        ref_data = _raw(ref)
        if ref_data.get("type") == "retweeted":
            return included.get(str(ref_data.get("id")))
    return None


def _parse_created_at(value: Any) -> datetime:
    """The API sends ISO 8601 with a ``Z``; tweepy hands back a datetime. Without the field (the
    request did not ask for it, or the plan withholds it) the ingest time stands in — the schema
    needs a time and the worker's latency clock uses ``ingested_at`` anyway."""
    if value is None:
        return utcnow()
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise MalformedTweet("invalid_tweet", f"created_at {value!r} is not an ISO 8601 time")


def included_tweets(includes: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """``includes.tweets`` indexed by id (tweepy turns them into ``Tweet`` objects; both work)."""
    if not isinstance(includes, Mapping):
        return {}
    found: dict[str, Mapping[str, Any]] = {}
    for item in _listed(includes.get("tweets")):
        try:
            data = _raw(item)
        except MalformedTweet:
            continue
        if "id" in data:
            found[str(data["id"])] = data
    return found


def tweet_from_api(payload: Any, includes: Mapping[str, Any] | None = None) -> Tweet:
    """Map one v2 tweet (a dict, or tweepy's ``Tweet``) to the schema. Raises
    :class:`MalformedTweet` when the payload cannot be used."""
    data = _raw(payload)
    tweet_id = data.get("id")
    if not isinstance(tweet_id, str | int) or isinstance(tweet_id, bool) or not str(tweet_id):
        raise MalformedTweet("invalid_tweet", f"tweet payload has no usable id: {tweet_id!r}")

    original = _retweeted_original(data, included_tweets(includes))
    if original is not None and ("text" in original or "note_tweet" in original):
        text, urls = _full_text(original)
    else:
        text, urls = _full_text(data)

    lang = data.get("lang")
    author_id = data.get("author_id")
    try:
        return Tweet(
            id=str(tweet_id),
            text=text[:MAX_TEXT_CHARS],
            created_at=_parse_created_at(data.get("created_at")),
            author_id=str(author_id) if author_id is not None else None,
            lang=lang if isinstance(lang, str) else None,
            source="x",
            urls=urls,
        )
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise MalformedTweet("invalid_tweet",
                             f"tweet {tweet_id} does not fit the schema ({fields})") from None

