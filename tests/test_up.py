"""``fintweet up`` as a user runs it: one per state dir, and a server that dies is restarted on its
own (Redis from its append-only file, the broker with both topics re-created) while the other
keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def start_up(state: Path, tmp_path: Path, topic: str = "tweets") -> tuple[subprocess.Popen, Path]:
    stderr = tmp_path / f"up-{time.monotonic_ns()}.err"
    process = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "up", "--kafka-port", "0", "--redis-port", "0",
         "--state-dir", str(state), "--topic", topic, "--partitions", "2"],
        stdout=subprocess.PIPE, stderr=stderr.open("wb"), text=True)
    return process, stderr


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    process, stderr = start_up(tmp_path / "state", tmp_path)
    exports = {}
    for _ in range(2):
        line = process.stdout.readline()
        assert line.startswith("export "), stderr.read_text()
        name, _, value = line[len("export "):].strip().partition("=")
        exports[name] = value
    yield Up(process, exports, stderr)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_the_banner_says_the_embedded_broker_is_memory_only(up):
    wait_for(lambda: "memory-only" in up.log(), 10, "the banner")


def test_a_second_up_on_the_same_state_dir_is_refused_with_one_line(up, tmp_path):
    second, stderr = start_up(tmp_path / "state", tmp_path)
    assert second.wait(timeout=30) == 2
    lines = stderr.read_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert "is in use by another `fintweet up`" in lines[0]
    assert f"pid {up.process.pid}" in lines[0]
    assert up.process.poll() is None


def test_a_crashed_redis_is_restarted_from_its_aof_and_the_broker_keeps_running(up):
    client = redis.Redis.from_url(up.exports["FINTWEET_REDIS_URL"], socket_timeout=2)
    client.set("survives", "yes")
    time.sleep(1.5)  # appendfsync everysec
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
    assert "redis exited unexpectedly; restarting it from its append-only file" in up.log()


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
