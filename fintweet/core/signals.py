"""Stopping a long-running command on SIGTERM and SIGINT, one way for all of them (the worker,
``up``, ``serve``, the demo's ``--serve``, the X ingester); every other command is interrupted."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _handler_calling(stop: Callable[[], None]) -> Callable[[int, object], None]:
    """A handler that runs ``stop`` on a thread of its own and hands both signals back to the
    kernel's default action, so that a second one ends the process: a graceful stop can take
    minutes while Kafka or Redis is down (timeouts on the batch in hand), and a second Ctrl-C is
    how a user says not to wait; nothing uncommitted is lost, only redelivered.

    The default action rather than a counting Python handler: Python runs handlers on the main
    thread only, between two bytecodes, so a second signal that lands on another thread while the
    main one sits in a long C call (a model batch, a lock wait the signal just missed) did nothing
    until that call returned (CI caught it once, a 30 s wait). The kernel's action needs no
    thread. The first signal still waits for the main thread, and one more sent before that
    merges with it: the commands' main loops wait in steps of a second at most, the worker's
    between batches. The stop thread: the handler may run inside ``Event.wait`` while it holds
    the event's lock; an ``Event.set`` there would wait for that lock for ever."""

    def handler(_signum: int, _frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        threading.Thread(target=stop, name="stop-on-signal", daemon=True).start()

    return handler


def install(stop: Callable[[], None]) -> None:
    """``stop`` on SIGTERM and SIGINT for the rest of the process (the worker's command)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handler_calling(stop))


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """``stop`` on SIGTERM and SIGINT within the block, the previous handlers after it unless
    a signal came: then the default action stays, so that a second signal during the teardown
    after the block (stopping Redis and the broker) still ends the process. Installed here
    rather than inherited: a process started as a background job without job control inherits
    SIGINT *ignored*. Off the main thread (where Python allows no handler) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _handler_calling(stop)
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        if all(signal.getsignal(sig) is handler for sig in STOP_SIGNALS):  # none came
            for sig, earlier in previous.items():
                signal.signal(sig, earlier)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt within the block: around every command
    (``fintweet.cli.main``), which stops by unwinding unless it installs a graceful stop of its
    own (the CSV replay then says where to resume, train what it published). Set here, not
    assumed: a process started in the background without job control inherits SIGINT
    *ignored*, and Ctrl-C or ``kill -INT`` then did nothing (the replay ran to its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()  # a signal an earlier command (in this process) handled is not this one's
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _interrupted.clear()


# Set by a signal inside interrupt_on_signals: a KeyboardInterrupt raised while TensorFlow runs
# C code that imports lazily comes out of it as a SystemError, which TensorFlow logs and goes on
# (a clean-clone `make test` saw a Ctrl-C lost that way); training checks this between its steps.
_interrupted = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _interrupted.set()
    signal.default_int_handler(signum, frame)  # type: ignore[arg-type]


def interrupted() -> bool:
    """Whether a signal has interrupted the running command, even where its KeyboardInterrupt
    was swallowed."""
    return _interrupted.is_set()
