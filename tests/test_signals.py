"""core/signals.py in a child process of its own (a signal to this one would end the tests)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys

import pytest

from fintweet.core import signals

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

# The same, but by the second signal the main thread cannot run a Python handler: it blocks both
# signals, as if stuck in a long C call, so the second lands on the other thread. A handler that
# counts signals in Python never ran (the CI failure: a signal that just missed a lock wait).
CHILD_MAIN_THREAD_DEAF = """
import signal, threading
from fintweet.core import signals

stopped = threading.Event()

def stop():
    print("stopping", flush=True)
    stopped.set()

signals.install(stop)
threading.Thread(target=threading.Event().wait, args=(120,), daemon=True).start()
print("ready", flush=True)
stopped.wait()
signal.pthread_sigmask(signal.SIG_BLOCK, signals.STOP_SIGNALS)
print("deaf", flush=True)
threading.Event().wait(120)
print("not ended", flush=True)
"""


def _second_signal_ends(child_code: str, sig: signal.Signals, *, before_second: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(sig)
        assert child.stdout.readline() == "stopping\n"  # stop() ran; the process lives on
        if before_second:
            assert child.stdout.readline() == before_second
        assert child.poll() is None
        child.send_signal(sig)
        assert child.wait(timeout=30) == -sig  # ended by the signal itself, at once
        assert child.stdout.read() == ""
    finally:
        child.kill()
        child.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_asks_to_stop_and_the_second_ends_the_process(sig) -> None:
    _second_signal_ends(CHILD, sig, before_second="")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_second_signal_ends_the_process_while_the_main_thread_cannot_handle_it(sig) -> None:
    _second_signal_ends(CHILD_MAIN_THREAD_DEAF, sig, before_second="deaf\n")


def test_after_the_first_signal_the_other_one_ends_the_process_too() -> None:
    """SIGTERM from an orchestrator, then Ctrl-C from an impatient user: both mean stop now."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        assert child.stdout.readline() == "stopping\n"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == -signal.SIGINT
    finally:
        child.kill()
        child.wait(timeout=30)


# The block (as `fintweet up` and `demo --serve` use it) ends on the first signal; the teardown
# after it, long when servers stop, still ends on a second one, even where the process came
# with SIGINT ignored or Python's KeyboardInterrupt handler.
CHILD_AFTER_THE_BLOCK = """
import threading
from fintweet.core import signals

stopped = threading.Event()
with signals.stop_on_signals(stopped.set):
    print("ready", flush=True)
    while not stopped.wait(0.1):
        pass
print("tearing down", flush=True)
threading.Event().wait(120)
print("not ended", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_the_teardown_after_the_block_ends_the_process(sig) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD_AFTER_THE_BLOCK],
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(sig)
        assert child.stdout.readline() == "tearing down\n"
        assert child.poll() is None
        child.send_signal(sig)
        assert child.wait(timeout=30) == -sig
    finally:
        child.kill()
        child.wait(timeout=30)


def test_the_previous_handlers_come_back_when_no_signal_came() -> None:
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with signals.stop_on_signals(lambda: None):
        assert signal.getsignal(signal.SIGINT) is not previous[0]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous


def test_a_ctrl_c_that_tensorflow_swallowed_still_stops_training_after_the_batch() -> None:
    """A clean-clone `make test` saw a Ctrl-C during training lost: its KeyboardInterrupt,
    raised in TensorFlow's C code that imports lazily, came out as a SystemError that
    TensorFlow logged, and training went on to the end. The signal is remembered, and the end
    of the next batch raises it again."""
    import keras
    import numpy as np

    from fintweet.models.keras_support import StopWhenInterrupted

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((8, 2), dtype="float32"), np.zeros((8, 1), dtype="float32")
    with signals.interrupt_on_signals():
        model.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[StopWhenInterrupted()])
        with contextlib.suppress(KeyboardInterrupt):  # as TensorFlow's C code swallowed it
            signal.raise_signal(signal.SIGINT)
        assert signals.interrupted()
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, epochs=3, batch_size=4, verbose=0,
                      callbacks=[StopWhenInterrupted()])
    assert not signals.interrupted()  # not carried into the next command of this process
