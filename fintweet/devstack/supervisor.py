"""Restarting a child of the embedded stack that died, each part on its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fintweet.devstack.process import HOST, StackError, StartCancelled

if TYPE_CHECKING:
    from fintweet.devstack.stack import EmbeddedStack

log = logging.getLogger(__name__)


class Supervisor:
    """Restarts a dead child of an :class:`EmbeddedStack`, each part on its own: Redis from its
    append-only file, the broker with its topics re-created, the other part left running. At
    most ``max_restarts`` restarts per part within ``window_s``, each logged; past that
    :meth:`check` raises :class:`StackError`, since a part that keeps dying needs a person."""

    def __init__(self, stack: EmbeddedStack, max_restarts: int = 5, window_s: float = 300.0,
                 report: Callable[[str], None] | None = None,
                 stopping: threading.Event | None = None) -> None:
        self.stack = stack
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.report = report or log.warning
        # Set by a signal handler: no further attempt starts, and the wait between attempts
        # ends at once, so Ctrl-C during a run of failing restarts is obeyed in seconds.
        self.stopping = stopping or stack.stopping
        self.restarts: dict[str, list[float]] = {"kafka": [], "redis": []}

    def check(self) -> list[str]:
        """Restart whatever died since the last call; returns the parts restarted."""
        restarted = []
        for part in self.stack.dead_parts():
            self._restart(part)
            restarted.append(part)
        return restarted

    def _restart(self, part: str) -> None:
        now = time.monotonic()
        recent = [t for t in self.restarts[part] if now - t < self.window_s]
        failed = ""  # why the last attempt of this call failed to start it, if one did
        while not self.stopping.is_set():
            if len(recent) >= self.max_restarts:
                # A part that would not start again did not die that often: say what stopped it.
                why = (f"the last restart failed: {failed}" if failed else
                       f"it died {len(recent)} times")
                raise StackError(f"{part}: {len(recent)} restarts within {self.window_s:.0f}s, "
                                 f"{why}; giving up (see {self.stack.log_dir / (part + '.log')})")
            recent.append(time.monotonic())
            self.restarts[part] = recent
            what = ("from its append-only file" if part == "redis" else
                    "(memory-only: its unconsumed messages are lost; topics re-created)")
            self.report(f"{part} exited unexpectedly; restarting it {what}, attempt "
                        f"{len(recent)} of {self.max_restarts}")
            try:
                if part == "redis":
                    self.stack.start_redis()
                else:
                    self.stack.restart_kafka()
            except StartCancelled:
                return  # a stop was asked for: the caller is stopping the whole stack
            except StackError as exc:
                failed = str(exc).splitlines()[0]
                self.report(f"{part} restart failed: {failed}")
                self.stopping.wait(min(5.0, 0.5 * 2 ** (len(recent) - 1)))
                continue
            self.report(f"{part} is back on {HOST}:{getattr(self.stack, part + '_port')} "
                        f"(pid {self.stack.pids().get(part)})")
            return
