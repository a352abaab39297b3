"""What sits between tweepy and the wire: rerouting tweepy's hard-coded host, and watching each
response for what tweepy drops (rate-limit headers, error bodies, the open stream)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter

API_HOST = "https://api.twitter.com"


class ApiAdapter(HTTPAdapter):
    """Gives every request tweepy makes without a timeout ``timeout_s``, and with ``api_base``
    sends what tweepy addresses to ``https://api.twitter.com`` to that base URL instead (a proxy,
    or the test double). tweepy hard-codes its host and sets no timeout on its REST calls; an
    adapter is requests' own extension point for both."""

    def __init__(self, api_base: str | None, timeout_s: float) -> None:
        super().__init__()
        self.api_base = api_base.rstrip("/") if api_base else None
        self.timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None,
             verify: bool | str = True, cert: str | tuple[str, str] | None = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        if self.api_base and request.url and request.url.startswith(API_HOST):
            request.url = self.api_base + request.url[len(API_HOST):]
        return super().send(request, stream=stream,
                            timeout=self.timeout_s if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


@dataclass
class RateLimit:
    """The latest ``x-rate-limit-*`` headers seen on a session."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # unix time

    def wait_s(self, now: float) -> float:
        """How long before another request is allowed: 0 unless the window is used up."""
        if self.remaining is None or self.remaining > 0 or self.reset_at is None:
            return 0.0
        return max(0.0, self.reset_at - now)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


class ResponseWatch:
    """A requests response hook on tweepy's session: keeps the rate-limit headers (tweepy drops
    them), the body of the last error (tweepy's stream passes only the status code on), and the
    open stream response (so a stop can cut a read that would otherwise wait for a keep-alive)."""

    def __init__(self) -> None:
        self.rate_limit = RateLimit()
        self.error_status: int | None = None
        self.error_text = ""
        self.error_reset: float | None = None  # x-rate-limit-reset of the last error response
        self.error_remaining: int | None = None  # and its x-rate-limit-remaining
        self.stream_response: requests.Response | None = None

    def __call__(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        headers = response.headers
        remaining = _int_header(headers, "x-rate-limit-remaining")
        reset = _int_header(headers, "x-rate-limit-reset")
        if remaining is not None or reset is not None:
            self.rate_limit = RateLimit(_int_header(headers, "x-rate-limit-limit"), remaining,
                                        float(reset) if reset is not None else None)
        if response.status_code >= 300:
            self.error_status = response.status_code
            self.error_reset = float(reset) if reset is not None else None
            self.error_remaining = remaining
            try:
                self.error_text = response.text[:1000]
            except requests.RequestException:
                self.error_text = ""
        elif urlparse(response.url or "").path.endswith("/stream"):
            self.stream_response = response

    def attach(self, session: requests.Session) -> None:
        session.hooks["response"].append(self)


def api_error_detail(body: str) -> str:
    """The readable part of an X API error body (v2 "problem" JSON or a v1-style ``errors``
    list); the raw start of the body when it is not JSON."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if not isinstance(payload, dict):
        return body.strip()[:300]
    parts = [str(payload[k]) for k in ("title", "detail", "reason") if payload.get(k)]
    for error in payload.get("errors") or ():
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
    return "; ".join(dict.fromkeys(parts))[:500]


def route_session(session: requests.Session, api_base: str | None,
                  timeout_s: float) -> ResponseWatch:
    """Watch a tweepy session's responses, time out its calls that set no timeout after
    ``timeout_s`` and, with ``api_base``, send its requests there."""
    watch = ResponseWatch()
    watch.attach(session)
    session.mount(API_HOST, ApiAdapter(api_base, timeout_s))
    return watch
