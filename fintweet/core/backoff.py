"""Retry pacing shared by every process that talks to something that can be down (Kafka, Redis,
the X API)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so a fleet
    spreads out yet never retries at once (full jitter can draw ~0 s, hammering a sick API)."""

    def __init__(self, base_s: float, cap_s: float, rng: Callable[[], float] = random.random):
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"backoff needs 0 < base ({base_s}) <= cap ({cap_s})")
        self.base_s, self.cap_s, self._rng = base_s, cap_s, rng
        self.attempt = 0

    def next_delay(self) -> float:
        step = min(self.cap_s, self.base_s * 2.0**self.attempt)
        self.attempt += 1
        return step / 2 + self._rng() * step / 2

    def reset(self) -> None:
        self.attempt = 0
