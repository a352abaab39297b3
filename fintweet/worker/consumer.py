"""Kafka consumer-group tuning, in one place: the production defaults the worker starts from, the
fast-join settings the embedded stack's users (tests, demo, benchmarks) pass, and the rule that
derives the heartbeat from a session timeout given on the command line."""

from __future__ import annotations

from typing import Any

# Production defaults; tests and the demo pass FAST_GROUP_SETTINGS on top.
DEFAULT_CONSUMER_OPTIONS: dict[str, Any] = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
    "max_poll_interval_ms": 60_000,
    # The broker holds an empty fetch this long before answering; at kafka-python's default of
    # 500 ms a quiet stream's tweets wait ~250 ms on average before the worker even sees them.
    "fetch_max_wait_ms": 20,
}

# Consumer-group settings that make a kafka-python (3.x) group join fast against Tansu, for tests
# and the demo. Tansu holds a new member's JoinGroup for about half its session timeout (waiting
# for other members), so join time follows ``session_timeout_ms``, not ``max_poll_interval_ms``:
# with kafka-python's default 45 s a first join took 23 s (docs/benchmarks.md, "Consumer-group
# join time on Tansu", has the measured times per setting). 3 s leaves ten heartbeats of slack
# on a busy 2-core machine (TensorFlow imports hold the GIL).
# ``max_poll_interval_ms`` must stay well above the slowest batch (model warm-up included): on
# Tansu a member that overran it and rejoined left the group cycling through failed SyncGroups
# (REBALANCE_IN_PROGRESS) for over a minute, so no member got partitions. Hence 10 s, not less.
FAST_GROUP_SETTINGS: dict[str, int] = {
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 10_000,
}

def consumer_tuning(max_poll_interval_ms: int | None = None,
                    session_timeout_ms: int | None = None) -> dict[str, int]:
    """Overrides from the command line. The heartbeat follows the session timeout (a third of
    it, Kafka's own guidance) so a shorter session never leaves a heartbeat too slow to keep it."""
    options: dict[str, int] = {}
    if max_poll_interval_ms is not None:
        options["max_poll_interval_ms"] = max_poll_interval_ms
    if session_timeout_ms is not None:
        options["session_timeout_ms"] = session_timeout_ms
        options["heartbeat_interval_ms"] = max(100, session_timeout_ms // 3)
    return options
