"""The ingest's decisions, written once: what each HTTP status means (wait for the rate-limit
reset, back off, or give up), how long the waits are, and how often recent search may poll.

Both modes apply :func:`status_action`: REST calls (search, rule changes) to the status of the
exception tweepy raised, the stream to the status its failed connection ended with.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

RATE_LIMIT_WINDOW_S = 15 * 60
# Recent search: requests per 15-minute window on the plan (Basic has had 60; check yours).
DEFAULT_SEARCH_REQUESTS_PER_WINDOW = 60
# A poll may take several pages (and a restart re-polls); polling at a quarter of the allowed
# request rate leaves the rest for those, e.g. 60 per 15 min → one poll a minute.
POLL_PAGE_HEADROOM = 4
SEARCH_PAGE_SIZE = 100  # the most recent search returns per page
# A bounded run tries each request this often before counting the poll as failed.
BOUNDED_RUN_ATTEMPTS = 5


class Action(enum.Enum):
    WAIT_FOR_RESET = "wait_for_reset"  # rate limited: wait until x-rate-limit-reset
    BACK_OFF = "back_off"  # the server's trouble: exponential backoff with jitter, capped
    AUTH = "auth"  # the token: never retried (XAuthError)
    REFUSE = "refuse"  # the request itself: never retried (XRequestError)


def status_action(status: int) -> tuple[Action, str]:
    """What to do about an HTTP error status, and the error reason it is counted under."""
    if status in (401, 403):
        return Action.AUTH, f"http_{status}"
    if status in (420, 429):  # 420: the v1.1 stream's "enhance your calm", still seen on proxies
        return Action.WAIT_FOR_RESET, "http_429"
    if status >= 500:
        return Action.BACK_OFF, "http_5xx"
    if status == 408:
        return Action.BACK_OFF, "http_408"
    return Action.REFUSE, f"http_{status}"


def is_usage_cap(detail: str) -> bool:
    """X's 429 for the plan's spent tweet cap (problem title ``UsageCapExceeded``, detail "Usage
    cap exceeded: Monthly product cap"): no wait within a rate-limit window cures it."""
    text = detail.lower()
    return any(mark in text for mark in ("usagecapexceeded", "usage cap exceeded",
                                         "usage-capped"))


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between attempts. Defaults follow X's reconnect guidance: network errors back off
    from a quarter second to 16 s, HTTP errors from 5 s to 320 s; a 429 waits for its reset
    (60 s when the header is missing), never longer than ``max_reset_wait_s``."""

    network_base_s: float = 0.25
    network_cap_s: float = 16.0
    http_base_s: float = 5.0
    http_cap_s: float = 320.0
    rate_limit_fallback_s: float = 60.0
    # Kafka not taking tweets: probe for the broker from a second apart up to a minute apart.
    kafka_base_s: float = 1.0
    kafka_cap_s: float = 60.0
    reset_margin_s: float = 1.0
    max_reset_wait_s: float = RATE_LIMIT_WINDOW_S + 60.0
    # A REST call (a search page, a rule change) not answered in this long is a network error,
    # retried. tweepy sets no timeout on them, so a connection gone silent without a reset (a NAT
    # or proxy that dropped it) blocked the ingester, and its stop, for ever. The stream's own
    # connection keeps tweepy's read timeout (21 s: X sends a keep-alive every 20 s).
    request_timeout_s: float = 30.0


def default_search_interval(requests_per_window: int = DEFAULT_SEARCH_REQUESTS_PER_WINDOW) -> float:
    """Seconds between polls for a plan allowing ``requests_per_window`` per 15 minutes."""
    if requests_per_window < 1:
        raise ValueError(f"requests per window must be at least 1, got {requests_per_window}")
    return RATE_LIMIT_WINDOW_S / requests_per_window * POLL_PAGE_HEADROOM
