"""``fintweet tail``: the latest tagged tweets, newest first, and with ``--follow`` the new ones
as the workers write them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from fintweet.cli.options import add_redis_option
from fintweet.cli.terminal import printable

if TYPE_CHECKING:
    from fintweet.core.reader import ResultReader


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tail", help="latest tagged tweets (filter by topic, sentiment, ticker; --follow)",
        description="Print the latest results, newest first. Filters take names "
                    "(--topic Earnings, --sentiment Bullish, --ticker TSLA) or ids.",
    )
    parser.add_argument("--topic", default=None, help="topic name or id")
    parser.add_argument("--sentiment", default=None, help="Bearish, Bullish, Neutral or an id")
    parser.add_argument("--ticker", default=None, help="cashtag, with or without $")
    parser.add_argument("-n", type=int, default=10,
                        help="how many to print, 0 to 500 (default 10)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="then keep printing new results as they are written (Ctrl-C stops)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_redis_option(parser)
    parser.set_defaults(func=run)


def format_line(result: dict[str, Any]) -> str:
    """``id  topic  sentiment  text`` on one line, the text shortened to fit a terminal and
    its control characters escaped (a tweet's ESC or newline reaches no terminal)."""
    sentiment = (result.get("sentiment") or {}).get("label", "-")
    text = result.get("text", "")
    if len(text) > 100:
        text = text[:99] + "…"
    return printable(f"{result.get('id')}  [{result.get('topic')}]  [{sentiment}]  {text}")


def emit(result: dict[str, Any], as_json: bool, out: TextIO) -> None:
    out.write((json.dumps(result, ensure_ascii=False) if as_json else format_line(result)) + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.reader import MAX_LIMIT, FilterError, ResultReader
    from fintweet.core.store import CLIENT_TIMEOUTS, reporting_unreachable

    if not 0 <= args.n <= MAX_LIMIT:
        raise FilterError(f"-n {args.n}: give 0 to {MAX_LIMIT}")
    for name in ("topic", "sentiment", "ticker"):
        if getattr(args, name) is not None and not getattr(args, name).strip():
            # read as no filter before: every result, as if the option had not been given
            raise FilterError(f"--{name} is empty: give a {name}, or leave the option out")
    settings = Settings.from_env(redis_url=args.redis_url)
    reader = ResultReader.from_url(settings.redis_url, settings.redis_prefix, **CLIENT_TIMEOUTS)
    with reporting_unreachable(settings.redis_url):
        return print_results(reader, args)


def print_results(reader: ResultReader, args: argparse.Namespace) -> int:
    from fintweet.core.reader import normalise

    # Where following starts is fixed before the backlog is read, so nothing falls in between.
    last = reader.events_tail() if args.follow else "0-0"
    if args.n:
        page, _ = reader.latest(args.topic, args.sentiment, args.ticker, limit=args.n)
        for result in page:
            emit(result, args.json, sys.stdout)
    if not args.follow:
        return 0
    filters = {name: normalise(name, value) for name, value in
               (("topic", args.topic), ("sentiment", args.sentiment), ("ticker", args.ticker))
               if value}
    try:
        return follow(reader, last, filters, args.json)
    except KeyboardInterrupt:  # how a follow ends: quietly, as tail -f does
        return 130


# Retry pacing while Redis is unreachable under a follow (a restart that `fintweet up` or a
# supervisor makes takes a second or two).
FOLLOW_RETRY_BASE_S, FOLLOW_RETRY_CAP_S = 0.5, 10.0


def follow(reader: ResultReader, last: str, filters: dict[str, str], as_json: bool) -> int:
    """Print each new result that matches ``filters`` until interrupted. Redis going away
    mid-follow is waited out, not an exit: the follower is a window onto a running system, and
    gave up on a restart that was over a second later; it resumes after the last event shown,
    so nothing written meanwhile is missed (the events stream outlives a restart)."""
    import time

    import redis

    from fintweet.core.backoff import Backoff
    from fintweet.core.reader import matches

    backoff = Backoff(FOLLOW_RETRY_BASE_S, FOLLOW_RETRY_CAP_S)
    down_since: float | None = None
    while True:
        # From the start of the read that failed: a frozen Redis holds it a socket timeout
        # before it fails, and counting from the failure understated the outage by that.
        reading_since = time.monotonic()
        try:
            events = reader.follow(last, block_ms=1000)
        except redis.AuthenticationError:
            raise  # it is back, and refuses us: no wait cures that (a ConnectionError too)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # loading: a ConnectionError
            if down_since is None:
                down_since = reading_since
                print(f"fintweet tail: Redis is unreachable ({type(exc).__name__}); following "
                      "again once it is back (Ctrl-C stops)", file=sys.stderr, flush=True)
            time.sleep(backoff.next_delay())
            continue
        if down_since is not None:
            print(f"fintweet tail: Redis is back after {time.monotonic() - down_since:.0f}s; "
                  "following on", file=sys.stderr, flush=True)
            down_since = None
            backoff.reset()
        for event in events:
            last = event.stream_id
            for result in event.results:  # in the order they were written, like a log
                if matches(result, filters):
                    emit(result, as_json, sys.stdout)
