"""What an ingest process (CSV replay or the X API) exports."""

from __future__ import annotations

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
)

from fintweet.monitoring.histogram import check_count

log = logging.getLogger(__name__)


INGEST_SOURCES = ("x", "replay")
# The reasons each source can count, exported at zero from the start: a series that appears with
# its first error reads as no increase over that error, so a first burst showed on no panel.
# Other reasons (an HTTP status the policy refuses, ``http_403``…) still appear when they occur.
ERROR_REASONS: dict[str, tuple[str, ...]] = {
    "replay": ("publish",),
    "x": ("publish", "invalid_tweet", "malformed_json", "connection", "disconnect",
          "stream_error", "redis", "http_429", "http_5xx", "http_408"),
}


class IngestMetrics:
    """What an ingest process exports; one process reads one source, bound here."""

    def __init__(self, source: str, registry: CollectorRegistry | None = None) -> None:
        if source not in INGEST_SOURCES:
            raise ValueError(f"ingest source {source!r} is not one of {INGEST_SOURCES}")
        self.source = source
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "fintweet_ingest_published", "Tweets published to Kafka.", ["source"], registry=r)
        self.errors = Counter(
            "fintweet_ingest_errors",
            "Ingest failures (bad payloads, API errors, publish errors), by reason.",
            ["source", "reason"], registry=r)
        self.duplicates = Counter(
            "fintweet_ingest_duplicates",
            "Tweets the ingest had already published (reconnects, overlapping polls), skipped.",
            ["source"], registry=r)
        self._published = self.published.labels(source)
        self._duplicates = self.duplicates.labels(source)
        for reason in ERROR_REASONS[source]:
            self.errors.labels(source, reason)

    def record_published(self, count: int = 1) -> None:
        self._published.inc(check_count(count, "count"))

    def record_error(self, reason: str, count: int = 1) -> None:
        if not reason:
            raise ValueError("ingest error reason must not be empty")
        self.errors.labels(self.source, reason).inc(check_count(count, "count"))

    def record_duplicates(self, count: int = 1) -> None:
        self._duplicates.inc(check_count(count, "count"))
