"""Request counts and latency of the web app, on a registry of its own (one per app), served at
``/metrics`` by the app itself: Prometheus scrapes the ``web`` service like it scrapes workers.

Labelled by the route's path template (``/v1/tweets/{tweet_id}``), never the raw path, so an id
in a URL cannot grow the number of series; the page's static files share ``/static`` (a mount has
no route template), other unmatched paths (404s) one ``<unmatched>`` label, and a method outside
HTTP's own shares ``OTHER``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNMATCHED = "<unmatched>"
STATIC = "/static"  # where fintweet.web.app mounts the page's files
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Sub-millisecond reads up to multi-second classify batches on 2 cores.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = dict[str, Any]


class WebMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # no ``_created`` series: see fintweet.monitoring.server
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fintweet_web_requests_total", "HTTP requests answered, by route and status",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "fintweet_web_request_duration_seconds",
            "Time from request to the end of the response (a stream counts until it closes)",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.classified = Counter(
            "fintweet_web_classified_texts_total", "Texts classified by POST /v1/classify",
            registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which buffers around streaming responses):
    reads the status from ``http.response.start`` and the route the router matched from the
    scope once the request is done."""

    def __init__(self, app: Any, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or (
                STATIC if str(scope.get("path", "")).startswith(f"{STATIC}/") else UNMATCHED)
            method = scope.get("method", "")
            if method not in HTTP_METHODS:
                method = "OTHER"
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)
