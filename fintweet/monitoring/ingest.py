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

    def record_published(self, count: int = 1) -> None:
        self._published.inc(check_count(count, "count"))

    def record_error(self, reason: str, count: int = 1) -> None:
        if not reason:
            raise ValueError("ingest error reason must not be empty")
        self.errors.labels(self.source, reason).inc(check_count(count, "count"))

    def record_duplicates(self, count: int = 1) -> None:
        self._duplicates.inc(check_count(count, "count"))
