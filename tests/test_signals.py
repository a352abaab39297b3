"""core/signals.py in a child process of its own (a signal to this one would end the tests)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# The first signal calls stop(), which here never finishes stopping anything (as a worker
# waiting out a Redis outage); the second ends the process.
CHILD = """
import sys, threading
from fintweet.core import signals

def stop():
    print("stopping", flush=True)

signals.install(stop)
print("ready", flush=True)
threading.Event().wait(120)
print("not ended", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_asks_to_stop_and_the_second_ends_the_process(sig) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(sig)
        assert child.stdout.readline() == "stopping\n"  # stop() ran; the process lives on
        assert child.poll() is None
        child.send_signal(sig)
        assert child.wait(timeout=30) == -sig  # ended by the signal itself, at once
        assert child.stdout.read() == ""
    finally:
        child.kill()
        child.wait(timeout=30)
