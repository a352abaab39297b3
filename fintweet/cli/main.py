"""The ``fintweet`` command. Each subcommand lives in its own module under ``fintweet.cli`` and
exposes ``register(subparsers)``; heavy imports (TensorFlow, Kafka) happen inside the handlers so
``fintweet --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import NoReturn

# Order is the order shown by --help.
COMMAND_MODULES = (
    "demo",
    "up",
    "ingest",
    "worker",
    "stats",
    "show",
    "tail",
    "dlq",
    "classify",
    "serve",
    "train",
    "models",
    "evaluate",
    "eda",
)


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other error of the CLI: the usage block
    it prints first pushed the message below a screenful of options; ``--help`` still has them.
    Every subcommand's parser is one of these (``add_subparsers`` builds its parsers with the
    class of the parser it belongs to)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fintweet",
        description="Streaming classifier for financial tweets: topic and sentiment, counted "
                    "per topic and ticker.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"fintweet.cli.{name}").register(subparsers)
    return parser


def stdout_reader_gone() -> bool:
    """Whether the far end of standard output closed (a pipe's reader exited): poll reports an
    error or hang-up on the descriptor."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's captured stdout)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "urllib3", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:
        # kafka-python logs every failed connection attempt at ERROR, dozens a minute while a
        # broker is down; our own code says what failed, once, and -v brings these back.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # "fintweet ingest replay", not "fintweet ingest": which of a command's subcommands spoke
    command = " ".join(filter(None, (args.command, getattr(args, "source", None))))
    from fintweet.core.signals import interrupt_on_signals

    try:
        # Installed for every command, not inherited: started in the background without job
        # control, a process inherits SIGINT *ignored*, and Ctrl-C or kill -INT did nothing
        # (train, evaluate, tail --follow ran on). SIGTERM unwinds the same way, so `finally`
        # blocks run. Commands that stop gracefully install their own handlers inside.
        with interrupt_on_signals():
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # here, where a reader that is gone ends quietly, not at exit
            return code
    except KeyboardInterrupt as interrupt:
        # A command may have something to say on the way out (where to resume); the others
        # still say that they stopped, not a silent exit 130.
        said = interrupt.args[0] if interrupt.args else "interrupted"
        print(f"fintweet {command}: {said}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise  # a socket's, say: an error to show, not a reader that had enough
        # Whoever read the output stopped (`fintweet tail | head -1`): end quietly, as the shell's
        # tools do. Python would flush stdout again at exit and fail the same way, so stdout is
        # pointed at /dev/null first. Exit status as if SIGPIPE had ended the process.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except Exception as exc:  # the one place that turns errors into a message and an exit code
        from fintweet.cli.errors import user_error_message

        if raised_by_an_interrupt(exc):
            # A Ctrl-C inside TensorFlow's tracing came out as a KeyError of its cleanup (seen in
            # a run of the train Ctrl-C test): the user stopped it, and gets the stop's line.
            print(f"fintweet {command}: interrupted", file=sys.stderr)
            return 130
        message = user_error_message(exc)
        if message is None or args.verbose:
            raise
        print(f"fintweet {command}: error: {message}", file=sys.stderr)
        return 2


def raised_by_an_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a KeyboardInterrupt was being handled: library code that
    cleans up on the way out can fail itself and hide the interrupt. The chain is followed as a
    traceback shows it, so an error raised ``from None`` on purpose keeps its own message."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return False


if __name__ == "__main__":
    sys.exit(main())
