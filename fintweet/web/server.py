"""Running the app: the blocking ``fintweet serve`` entry point, and :class:`ServerThread`, the
same uvicorn server in a background thread on a free loopback port (the tests and the benchmark
start the real app this way, with whatever model object they hold)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import redis
import uvicorn
from fastapi import FastAPI

from fintweet.core.config import Settings
from fintweet.core.errors import UserError
from fintweet.core.reader import ResultReader
from fintweet.core.store import CLIENT_TIMEOUTS, ResultStore, StoreUnavailable, require_redis
from fintweet.models.base import Classifier
from fintweet.web.app import create_app
from fintweet.web.classify import load_classifier

log = logging.getLogger(__name__)

# An open live stream must not hold a shutdown for long: uvicorn cancels it after this.
GRACEFUL_SHUTDOWN_S = 2


def build_app(settings: Settings, model: Classifier | None) -> FastAPI:
    store = ResultStore.from_url(settings.redis_url, settings.redis_prefix,
                                 bucket_retention_s=settings.bucket_retention_s, **CLIENT_TIMEOUTS)
    reader = ResultReader(store.client, settings.redis_prefix)
    return create_app(reader, store, model, api_key=settings.api_key)


class WebPortError(UserError, OSError):
    """The web port cannot be bound (taken, or not allowed): the user's setting to change."""


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn, which logs the failure and
    exits 3; and bound before the model loads, so a taken port is reported in a second."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # Resolved first: create_server reports a host that does not resolve as a plain OSError
        # carrying the resolver's errno (-2), which os.strerror calls "Unknown error -2".
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        if isinstance(exc, socket.gaierror):
            reason = exc.strerror or str(exc)  # "Name or service not known"
        else:  # the OS's words, not create_server's wrapped text
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise WebPortError(f"cannot listen on {host}:{port} ({reason}); pick "
                           "another --port / FINTWEET_WEB_PORT, or --host / "
                           "FINTWEET_WEB_HOST") from exc


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets (``http://[::1]:8000``)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings, models_dir: Path, kind: str) -> None:
    """Until SIGINT or SIGTERM, then a graceful stop (open live streams get
    ``GRACEFUL_SHUTDOWN_S``). uvicorn runs on a thread, as in :class:`ServerThread`, and the
    signals are ours: uvicorn's own handling re-raised the signal once it had stopped, so a
    Ctrl-C ended the command with 130 where every other long-running one exits 0, and it
    installs nothing off the main thread."""
    from fintweet.core.signals import stop_on_signals

    with listen(settings.web_host, settings.web_port) as sock:
        model = load_classifier(models_dir, kind, settings.transformer_runtime)
        app = build_app(settings, model)
        where = f"{http_url(settings.web_host, sock.getsockname()[1])}/"
        log.info("serving %s@%s on %s (API key %s)", model.name, model.version, where,
                 "required" if settings.api_key else "not set")
        try:  # served anyway: the page and /readyz say so, and recover when Redis is back
            require_redis(settings.redis_url)
        except (StoreUnavailable, redis.RedisError) as exc:
            log.warning("%s; serving anyway: /v1 answers 503 until Redis is back", exc)
        stop = threading.Event()
        with ServerThread(app, sock=sock) as server, stop_on_signals(stop.set):
            # Once the port is ours, the model loaded and the server up: the address is true,
            # the port the real one, and a signal from now on stops it.
            print(f"fintweet serve: {where} (Ctrl-C to stop)", flush=True)
            while not stop.wait(0.5):
                if not server.thread.is_alive():
                    raise RuntimeError(f"the web server on {where} stopped by itself")
            print("fintweet serve: stopping", file=sys.stderr, flush=True)
        print("fintweet serve: stopped", file=sys.stderr, flush=True)


class ServerThread:
    """``with ServerThread(app) as server: server.url`` — the app served by uvicorn in a daemon
    thread until the block ends, on ``host``:``port`` (0: a free port) bound at once, or on
    ``sock``, an already bound socket (:func:`listen`) of a caller that checks the port before
    work that would be wasted if it were taken (``fintweet demo --serve``). Bound here, never
    picked now and bound later: another process could take a port in between."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None) -> None:
        self.app = app
        self._own_socket = sock is None
        self.sock = listen(host, port) if sock is None else sock
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()  # the socket it bound, and the thread if it still runs
                raise RuntimeError(f"the web app did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        streams = getattr(self.app.state, "streams", None)
        if streams is not None:
            streams.closing.set()  # open live streams end by themselves, within a second
        self.server.should_exit = True
        self.thread.join(timeout=GRACEFUL_SHUTDOWN_S + 10)
        if self._own_socket:
            self.sock.close()
