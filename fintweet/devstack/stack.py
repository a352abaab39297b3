"""The embedded stack itself: Tansu and redis-server on loopback, their topics, a locked state
directory (see :mod:`fintweet.devstack` for why each part is as it is)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fintweet.core.config import dlq_topic_for
from fintweet.devstack.process import (
    AUTO_PORT_ATTEMPTS,
    DLQ_PARTITIONS,
    HOST,
    KAFKA_STOP_GRACE_S,
    READY_TIMEOUT_S,
    REDIS_STOP_GRACE_S,
    ServiceProcess,
    StackError,
    StartCancelled,
    free_port,
    listens_on,
    port_accepts,
    port_is_free,
    redis_server_binary,
    tansu_binary,
)

log = logging.getLogger(__name__)

# Where /proc cannot say who holds the broker's port: how long a broker whose port someone else
# holds takes to exit (Tansu: ~10 ms after failing to bind), so one still running after it has it.
KAFKA_SETTLE_S = 0.3
# How long closing the stack's Kafka admin client may take. kafka-python's close joins its I/O
# thread without a timeout, so a client left in a bad state (a Ctrl-C that raised inside one of
# its calls while the stack started) could hold the stop, and so `fintweet up`, for ever. A
# client that has not closed by then is left to the process exit (its thread is a daemon).
ADMIN_CLOSE_TIMEOUT_S = 5.0


class ForeignServerError(StackError):
    """Our readiness probe was answered by a server someone else started on the port, not by
    our child (which, failing to bind, is about to exit)."""


def close_within(client: Any, seconds: float) -> bool:
    """Close a client (the stack's Kafka admin client) on a thread of its own, waiting
    ``seconds`` at most; False (and a warning) when it has not closed by then. Errors while
    closing are only logged: the client is being thrown away."""

    def close() -> None:
        try:
            client.close()
        except Exception as exc:
            log.debug("closing %s: %s", type(client).__name__, exc)

    closer = threading.Thread(target=close, name="fintweet-close-client", daemon=True)
    try:
        closer.start()
    except RuntimeError:  # at interpreter exit (the finalizer), Python 3.12+ starts no thread
        close()
        return True
    closer.join(seconds)
    if closer.is_alive():
        log.warning("%s did not close within %.0f s; left to the process exit",
                    type(client).__name__, seconds)
        return False
    return True


def open_admin(**configs: Any) -> Any:
    """A ``KafkaAdminClient``, or its bootstrap error with nothing left running. kafka-python
    starts the client's I/O thread before it bootstraps and, when the bootstrap fails, raises
    without stopping it: every failed readiness probe of a starting broker left a thread behind
    in `fintweet up`. So the network client is made here, where it can be closed."""
    from kafka import KafkaAdminClient

    network_client = KafkaAdminClient.DEFAULT_CONFIG["kafka_client"]
    made: list[Any] = []

    def make_network_client(**client_configs: Any) -> Any:
        made.append(network_client(**client_configs))
        return made[-1]

    try:
        return KafkaAdminClient(**configs, kafka_client=make_network_client)
    except BaseException:
        for client in made:
            close_within(client, ADMIN_CLOSE_TIMEOUT_S)
        raise


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
            close_within(old, ADMIN_CLOSE_TIMEOUT_S)

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

    ``stopping``, once set (by a signal handler), makes a start or restart that is waiting for a
    server give up with :class:`StartCancelled`. A command that must stop while the stack starts
    sets it, rather than raising KeyboardInterrupt into the start: raised inside a client
    library or Popen, that can leave a lock held that the stop then waits on.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        kafka_port: int = 9092,
        redis_port: int = 6379,
        partitions: int = 4,
        topics: Iterable[str] = ("tweets",),
        ready_timeout: float = READY_TIMEOUT_S,
        stopping: threading.Event | None = None,
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
        self.stopping = stopping or threading.Event()
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
        """Child process ids by part: for tests that check nothing is left behind, and for
        `fintweet up` to print (an operator may have to stop or restart one)."""
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
                self._check_stopping("creating topics")
                self.create_topic(topic)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both children (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        self._resources.release()

    def _check_stopping(self, doing: str) -> None:
        if self.stopping.is_set():
            raise StartCancelled(f"stopped as asked while {doing}")

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
        for name, port in self._requested_ports.items():
            if port and not port_is_free(port):
                raise self._port_in_use(name, port)

    @staticmethod
    def _port_in_use(name: str, port: int) -> StackError:
        flag = {"kafka": "--kafka-port", "redis": "--redis-port"}[name]
        return StackError(f"{name} port {port} on {HOST} is already in use (another `fintweet "
                          f"up`, broker or redis?); stop it, or choose another with {flag} "
                          f"(0 picks a free port)")

    def _launch(self, name: str, argv_for: Callable[[int], list[str]],
                probe: Callable[[ServiceProcess], bool],
                confirm: Callable[[ServiceProcess], bool], stop_grace_s: float,
                restart: bool = False) -> ServiceProcess:
        """Start one child and wait until ``probe`` says it serves and ``confirm`` that it is
        ours (``confirm`` raises :class:`ForeignServerError` when another server answered). A
        port we picked ourselves is retried on a fresh port if the child dies or another server
        answers there (someone took it between our pick and its bind); a port the user chose, or
        the one a restart must keep, is not. A fixed port is checked first: a server already on
        it would answer the probe before our child failed to bind, and a restart must not look
        like it succeeded while clients talk to someone else's server."""
        requested = self._requested_ports[name]
        attempts_left = 1 if requested else AUTO_PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            port = requested or free_port()
            if requested and not port_is_free(port):
                if restart:
                    raise StackError(f"cannot restart {name}: its port {port} on {HOST} is now "
                                     f"taken by another process; stop that process ({name} "
                                     f"clients expect it on that port)")
                raise self._port_in_use(name, port)
            service = ServiceProcess(name, argv_for(port), self.log_dir / f"{name}.log", port,
                                     stop_grace_s)
            service.start()
            self._resources.services.append(service)
            try:
                self._wait_ready(service, probe, confirm)
            except StackError as exc:
                lost_port = not service.running() or isinstance(exc, ForeignServerError)
                service.stop()
                self._resources.services.remove(service)
                if isinstance(exc, StartCancelled) or not (lost_port and attempts_left):
                    raise
                log.info("%s lost auto-picked port %s; retrying on another", name, port)
            else:
                return service

    def _wait_ready(self, service: ServiceProcess, probe: Callable[[ServiceProcess], bool],
                    confirm: Callable[[ServiceProcess], bool]) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout
        while True:
            self._check_stopping(f"waiting for {service.name} to start")
            if not service.running():
                code = service.process.returncode if service.process else None
                raise service.failure(f"exited during startup with code {code}")
            # Whoever answered is not necessarily our child: a server someone started on the port
            # answers before ours fails to bind and exits. ``confirm`` raises for that one.
            if probe(service) and confirm(service):
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

        restart = self._kafka is not None
        if self._kafka is not None:  # a restart: same port, or clients would lose it
            self._requested_ports["kafka"] = self._kafka.port
            if self._kafka in self._resources.services:
                self._resources.services.remove(self._kafka)
        self._kafka = self._launch("kafka", argv, self._kafka_answers_metadata,
                                   self._kafka_is_ours, KAFKA_STOP_GRACE_S, restart)

    def restart_kafka(self) -> None:
        """Start the broker again on its port and re-create every topic with its ``.dlq``. It
        kept everything in memory: what it held is gone."""
        if self._kafka is not None:
            self._kafka.stop()
        self._resources.close_admin()
        self._start_kafka()
        for topic in self.topics:
            self._check_stopping("creating topics")
            self.create_topic(topic)

    def _kafka_answers_metadata(self, service: ServiceProcess) -> bool:
        """Ready means a Kafka client bootstraps and gets metadata, not just an open port."""
        if not port_accepts(service.port):
            return False
        from kafka.errors import KafkaError

        try:
            admin = open_admin(bootstrap_servers=f"{HOST}:{service.port}",
                                     client_id="fintweet-stack", bootstrap_timeout_ms=2_000,
                                     request_timeout_ms=5_000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
        except KafkaError:
            close_within(admin, ADMIN_CLOSE_TIMEOUT_S)
            return False
        self._resources.adopt_admin(admin)  # reused for creating topics
        return True

    def _kafka_is_ours(self, service: ServiceProcess) -> bool:
        """True, or :class:`ForeignServerError` unless our child holds the listening socket
        (/proc); where /proc cannot tell, unless it is still running after a short settle,
        since a Tansu that could not bind exits at once."""
        assert service.pid is not None
        ours = listens_on(service.pid, service.port)
        if ours is None:
            time.sleep(KAFKA_SETTLE_S)
            ours = service.running()
        if not ours:
            self._resources.close_admin()  # it is connected to the other server
            raise ForeignServerError(
                f"kafka on {HOST}:{service.port}: another server answers on that port, not the "
                f"broker started here (pid {service.pid}); stop it")
        return True

    def _admin_client(self) -> Any:
        def connect() -> Any:
            return open_admin(bootstrap_servers=self.kafka_bootstrap,
                              client_id="fintweet-stack", request_timeout_ms=10_000)

        return self._resources.admin(connect)

    def create_topic(self, name: str, partitions: int | None = None, *, dlq: bool = True) -> None:
        """Create ``name`` (default: the stack's partition count) and, unless ``dlq=False``, its
        ``name.dlq``; a topic that already exists is left as it is. Returns once every partition
        has a leader, so a producer can write at once."""
        from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

        wanted = {name: partitions or self.partitions}
        if dlq:
            wanted[dlq_topic_for(name)] = DLQ_PARTITIONS
        try:
            admin = self._admin_client()
            response = admin.create_topics(
                {topic: {"num_partitions": n, "replication_factor": 1}
                 for topic, n in wanted.items()},
                raise_errors=False,
            )
            for result in response["topics"]:
                error = for_code(result["error_code"])
                if result["error_code"] != 0 and error is not TopicAlreadyExistsError:
                    message = result.get("error_message") or error.__name__
                    raise StackError(f"kafka: cannot create topic {result['name']!r}: {message}")
            admin.wait_for_topics(list(wanted), timeout_ms=int(self.ready_timeout * 1000))
        except KafkaError as exc:
            # As a StackError: the supervisor retries those, and the CLI prints them in a line.
            raise StackError(f"kafka: cannot create topics {', '.join(wanted)} on "
                             f"{self.kafka_bootstrap}: {type(exc).__name__}") from exc

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

        restart = self._redis is not None
        if self._redis is not None:  # a restart: same port, or clients would lose it
            self._requested_ports["redis"] = self._redis.port
            if self._redis in self._resources.services:
                self._resources.services.remove(self._redis)
        self._redis = self._launch("redis", argv, self._redis_answers_ping, self._redis_is_ours,
                                   REDIS_STOP_GRACE_S, restart)

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

    @staticmethod
    def _redis_is_ours(service: ServiceProcess) -> bool:
        """True when the server answering on the port reports our child's pid (``INFO server``),
        False when it stopped answering (probe again), :class:`ForeignServerError` when it is
        another redis-server."""
        import redis

        client = redis.Redis(host=HOST, port=service.port, socket_timeout=1.0,
                             socket_connect_timeout=0.2)
        try:
            answering = client.info("server").get("process_id")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
        finally:
            client.close()
        if answering != service.pid:
            raise ForeignServerError(
                f"redis on {HOST}:{service.port}: another redis-server (pid {answering}) answers "
                f"on that port, not the one started here (pid {service.pid}); stop it")
        return True
