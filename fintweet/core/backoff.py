"""Retry pacing shared by every process that talks to something that can be down (Kafka, Redis,
the X API)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so a fleet
    spreads out yet never retries at once (full jitter can draw ~0 s, hammering a sick API)."""

    def __init__(self, base_s: float, cap_s: float,
                 rng: Callable[[], float] = random.random) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base ({base_s}) <= cap ({cap_s})")
        self.base_s, self.cap_s, self._rng = base_s, cap_s, rng
        self.attempt = 0

    def next_delay(self) -> float:
        step = min(self.cap_s, self.base_s * 2.0**self.attempt)
        if step < self.cap_s:
            # Not past the cap: 2.0**1024 overflows, which after ~64 min of 5 s retries
            # crashed the very loops meant to outlast an outage.
            self.attempt += 1
        return step / 2 + self._rng() * step / 2

    def reset(self) -> None:
        self.attempt = 0


class GaveUp(Exception):
    """:func:`retry` stopped retrying because its caller is shutting down."""


def retry(
    what: str,
    action: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    stopping: threading.Event,
    backoff: Backoff | None = None,
    log: logging.Logger | None = None,
) -> T:
    """Run ``action`` until it succeeds, waiting with backoff after each ``retry_on`` error.

    One give-up rule for every dependency: retry for as long as the process is meant to run, and
    give up (raise :class:`GaveUp`) only once ``stopping`` is set. A worker must not drop a batch
    because Redis or the broker was down for a while; the batch it gives up on while stopping is
    uncommitted and will be redelivered."""
    pacing = backoff or Backoff(0.1, 5.0)
    logger = log or logging.getLogger(__name__)
    while True:
        try:
            return action()
        except retry_on as exc:
            if stopping.is_set():
                logger.error("%s still failing (%s) while stopping; giving up", what, exc)
                raise GaveUp(what) from exc
            delay = pacing.next_delay()
            logger.warning("%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__,
                           exc, delay)
            stopping.wait(delay)
