"""The small HTTP server that exposes a registry next to the health endpoints (``/metrics``,
``/healthz``, ``/readyz``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)

from fintweet.core.errors import UserError

log = logging.getLogger(__name__)


ReadyCheck: TypeAlias = Callable[[], tuple[bool, str]]


def always_ready() -> tuple[bool, str]:
    return True, "ready"


class MetricsPortError(UserError, OSError):
    """The metrics port cannot be bound (taken, or not allowed): the user's setting to change."""


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, served from a daemon thread.

    ``/healthz`` answers 200 as long as the process runs (liveness: restart me if this fails);
    ``/readyz`` asks ``ready()`` each time and answers 503 with its reason when not ready
    (readiness: model loaded, broker and Redis reachable). A ``ready()`` that raises counts as not
    ready, with the exception as the reason. Port 0 picks a free port; see :attr:`port`.
    """

    def __init__(
        self,
        port: int,
        registry: CollectorRegistry,
        ready: ReadyCheck | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.registry = registry
        self.ready = ready or always_ready
        # prometheus_client adds a ``_created`` gauge beside every counter and histogram series
        # (when it was first touched): nothing reads them, and they doubled the worker's series.
        # The switch is process-wide in prometheus_client; the web app turns it off too.
        disable_created_metrics()
        handler = _handler_for(self)
        try:
            self._server = _QuietHTTPServer((host, port), handler)
        except OSError as exc:
            raise MetricsPortError(
                f"metrics server cannot listen on {host}:{port} ({exc.strerror or exc}); pick "
                "another --metrics-port / FINTWEET_METRICS_PORT (0 for none), or a --metrics-host "
                "/ FINTWEET_METRICS_HOST this machine has") from exc
        self._server.daemon_threads = True
        # A short poll interval only so that stop() returns quickly; an idle select costs nothing.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"metrics-server-{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def readiness(self) -> tuple[bool, str]:
        try:
            ok, reason = self.ready()
        except Exception as exc:
            return False, f"readiness check failed: {type(exc).__name__}: {exc}"
        return bool(ok), str(reason)


class _QuietHTTPServer(ThreadingHTTPServer):
    """A client that hangs up before the answer (a probe that timed out) is its business, not an
    error worth a traceback on the worker's stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe, ConnectionReset, ...
            return
        super().handle_error(request, client_address)


def _handler_for(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(server.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, b"ok\n")
            elif path == "/readyz":
                ok, reason = server.readiness()
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, f"{reason}\n".encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found; try /metrics, /healthz, /readyz\n")

        # The GET's status and headers without the body: a probe that checks with HEAD would
        # otherwise get 501 and read the worker as down.
        do_HEAD = do_GET

        def _send(
            self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics server: " + format, *args)

    return MetricsHandler
