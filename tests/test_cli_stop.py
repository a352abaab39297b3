"""How the commands stop on a signal, as processes, started the way CI and a shell script start
them: in the background without job control, which hands a process SIGINT *ignored*. Before
each command installed its own handling (``fintweet.cli.main``), kill -INT did nothing to
``evaluate`` or ``classify``; ``serve`` stopped, but with 130 where every other long-running
command exits 0."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import http_get


def start(args: list[str], env: dict[str, str], **options) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", *args], env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), **options)


def lines_of(stream) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def ended(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_on_a_signal_and_exits_0(stack, models_dir: Path, sig) -> None:
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url,
           "FINTWEET_MODELS_DIR": str(models_dir)}
    process = start(["serve", "--port", "0", "--model", "ann"], env)
    try:
        assert process.stdout is not None and process.stderr is not None
        first = lines_of(process.stdout).get(timeout=120)
        assert first.startswith("fintweet serve: http://127.0.0.1:"), first
        url = first.split()[2].rstrip("/")
        assert http_get(f"{url}/healthz")[0] == 200  # served, the signal handling in place
        # A live stream open, as the page keeps one: cancelled at the graceful timeout, it was
        # logged as an error with a traceback.
        stream = urllib.request.urlopen(f"{url}/v1/stream", timeout=30)
        assert stream.readline().startswith(b"retry: ")
        reader = threading.Thread(target=stream.read, daemon=True)
        reader.start()
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
        errors = process.stderr.read()
        assert "fintweet serve: stopped" in errors and "Traceback" not in errors
        # ended by itself: one the graceful timeout cancels is logged as an ERROR
        assert "ERROR" not in errors, errors
        reader.join(timeout=10)
        assert not reader.is_alive()  # the client saw the stream end
        assert http_get(f"{url}/healthz")[0] == 0  # nothing answers: the port is closed
    finally:
        ended(process)


def test_a_command_waiting_for_input_is_interrupted_by_kill_int(models_dir: Path) -> None:
    """``classify --file -`` blocks on its standard input: the simplest stand-in for any
    command that is busy when the user gives up on it (evaluate, eda)."""
    env = {**os.environ, "FINTWEET_MODELS_DIR": str(models_dir)}
    process = start(["classify", "--model", "ann", "--file", "-"], env, stdin=subprocess.PIPE)
    try:
        # Until it exits: a signal sent before the handler is installed (while Python starts)
        # is ignored, as the inherited disposition says, and the next one is not.
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.5)
        assert process.returncode == 130
        assert process.stderr is not None
        # one line saying so (it exited 130 in silence), no traceback
        assert process.stderr.read().strip().splitlines()[-1:] == ["fintweet classify: interrupted"]
    finally:
        ended(process)
