"""``fintweet ingest x``: live tweets from the X API v2 onto the Kafka topic.

Registered by ``fintweet.cli.ingest`` next to ``replay``. The bearer token comes only from the
environment (``FINTWEET_X_BEARER_TOKEN``, read by Settings): a flag would leak it into shell
history and ``ps``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from fintweet.cli.options import (
    add_kafka_options,
    add_metrics_options,
    add_redis_option,
    http_url,
    positive_int,
    shared_overrides,
)
from fintweet.core import signals
from fintweet.core.config import DEDUPE_CAPACITY

# What a bare `--search` leaves in args.search: not a string, so an empty QUERY is told apart.
DEFAULT_QUERY = object()

if TYPE_CHECKING:
    from fintweet.monitoring.ingest import IngestMetrics

log = logging.getLogger("fintweet.ingest.x")

MAX_PAGES = 10  # search pages per poll, unless --max-pages


@contextlib.contextmanager
def publish_errors_counted(metrics: IngestMetrics | None) -> Iterator[None]:
    """A ``PublishError`` leaving the block, counted in
    ``fintweet_ingest_errors_total{reason="publish"}`` first (both ingest commands). Entered
    before the producer, so its final flush on leaving counts too; a metrics server stopped after
    this block can still be scraped while that flush waits."""
    from fintweet.core.producer import PublishError

    try:
        yield
    except PublishError:
        if metrics is not None:
            metrics.record_error("publish")
        raise


def register(sources: argparse._SubParsersAction) -> None:
    parser = sources.add_parser(
        "x", help="stream or poll the X API v2 (bearer token from FINTWEET_X_BEARER_TOKEN)",
        description="Publish live tweets from the X API v2. --stream holds the filtered stream "
        "open (the account's rule set is first made equal to --rule/--rules-file, or to the "
        "default financial-news rules); --search polls recent search and remembers where it "
        "stopped in Redis. Reconnects with backoff, waits out rate limits, skips malformed "
        "payloads and duplicate ids. See docs/x-ingest.md for tokens and plan requirements.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stream", action="store_true",
                      help="filtered stream (needs a plan with filtered-stream access)")
    mode.add_argument("--search", nargs="?", metavar="QUERY", const=DEFAULT_QUERY, default=None,
                      help="poll recent search for QUERY (default: the financial newswires "
                           "query in docs/x-ingest.md)")

    rules = parser.add_argument_group("stream rules (with --stream)")
    rules.add_argument("--rule", action="append", default=[], metavar="RULE",
                       help="a filtered-stream rule; repeat for several")
    rules.add_argument("--rules-file", default=None, metavar="FILE",
                       help="rules, one per line; '# ' starts a comment line (#word is a "
                            "hashtag rule)")
    rules.add_argument("--backfill-minutes", type=int, default=None, metavar="N",
                       help="on every connection, ask X to send again up to N (1-5) minutes "
                            "matched while disconnected, so a reconnect or restart loses none; "
                            "needs a plan with stream recovery (default: none, and what comes "
                            "while disconnected is lost)")

    search = parser.add_argument_group("search polling (with --search)")
    search.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between polls (default: from --requests-per-window, "
                             "60 s for 60 requests per 15 minutes)")
    search.add_argument("--requests-per-window", type=int, default=None, metavar="N",
                        help="your plan's recent-search limit per 15 minutes (default 60)")
    search.add_argument("--max-pages", type=int, default=None, metavar="N",
                        help=f"most pages (100 tweets each) per poll (default {MAX_PAGES})")
    search.add_argument("--max-polls", type=int, default=None, metavar="N",
                        help="exit after N polls, failed ones included (default: poll until "
                             "stopped); a request is then tried 5 times, not until it works")
    add_redis_option(search, "Redis for the search position")

    add_kafka_options(parser)
    add_metrics_options(parser)
    parser.add_argument("--dedupe-size", type=positive_int, default=DEDUPE_CAPACITY, metavar="N",
                        help="recent tweet ids remembered to drop duplicates (default %(default)s)")
    parser.add_argument("--api-base", type=http_url, default=None, metavar="URL",
                        help="send API requests here instead of https://api.twitter.com "
                             "(a proxy, or a test double)")
    parser.set_defaults(func=run_x, _parser=parser)


def stopping_on_signals(stop: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGINT stop the ingester (which then flushes) instead of killing it midway."""

    def logged_stop() -> None:
        log.info("signal: stopping, flushing what was sent")
        stop()

    return signals.stop_on_signals(logged_stop)


def _check_args(args: argparse.Namespace) -> None:
    parser: argparse.ArgumentParser = args._parser
    if isinstance(args.search, str) and not args.search.strip():  # `--search ""`, `--search " "`
        parser.error("--search QUERY is empty: give a query, or --search alone for the default")
    if args.search is not None and (args.rule or args.rules_file):
        parser.error("--rule/--rules-file apply to --stream; --search takes one QUERY")
    given = [f"--{name.replace('_', '-')}" for name in
             ("interval", "max_polls", "requests_per_window", "max_pages", "redis_url")
             if getattr(args, name) is not None]
    if args.stream and given:
        parser.error(f"{'/'.join(given)} apply to --search, not --stream")
    if args.search is not None and args.backfill_minutes is not None:
        parser.error("--backfill-minutes applies to --stream; --search resumes by itself")
    if args.backfill_minutes is not None and not 1 <= args.backfill_minutes <= 5:
        parser.error(f"--backfill-minutes must be 1 to 5 (X's limit), got "
                     f"{args.backfill_minutes}")
    if args.rule and args.rules_file:
        parser.error("give rules with --rule or --rules-file, not both")
    for name in ("max_pages", "requests_per_window", "max_polls"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    # float() takes "inf" and "nan": inf overflowed Event.wait (a traceback after the first
    # poll), nan compared false everywhere and polled with no pause. The wait's own ceiling
    # (threading.TIMEOUT_MAX, ~292 years) bounds it too.
    if args.interval is not None and not (
            math.isfinite(args.interval) and 0 <= args.interval <= threading.TIMEOUT_MAX):
        parser.error(f"--interval must be a finite number of seconds, at least 0, got "
                     f"{args.interval}")


def run_x(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.producer import PUBLISH_TIMEOUTS, TweetProducer, absent_topic_warning
    from fintweet.ingest.x.ingester import XIngest
    from fintweet.ingest.x.policy import default_search_interval
    from fintweet.ingest.x.rules import (
        DEFAULT_SEARCH_QUERY,
        DEFAULT_STREAM_RULES,
        read_rules_file,
        rules_from_values,
    )
    from fintweet.ingest.x.token import BearerToken, TokenRedaction

    _check_args(args)
    settings = Settings.from_env(**shared_overrides(args)).check(
        "kafka_bootstrap", "topic", "metrics_port",
        *(() if args.stream else ("redis_url", "redis_prefix")))  # search keeps since_id there
    token = BearerToken(settings.x_bearer_token)
    rules = []
    if args.stream:
        rules = (read_rules_file(args.rules_file) if args.rules_file
                 else rules_from_values(args.rule) if args.rule else list(DEFAULT_STREAM_RULES))
    query = (DEFAULT_SEARCH_QUERY if args.search is DEFAULT_QUERY else args.search or "")

    metrics = server = None
    if settings.metrics_port:
        from fintweet.monitoring.ingest import IngestMetrics

        metrics = IngestMetrics("x")
    on_published = metrics.record_published if metrics is not None else None
    options = {"api_base": args.api_base, "metrics": metrics, "dedupe_capacity": args.dedupe_size}

    try:
        with (publish_errors_counted(metrics), TokenRedaction(token),
              TweetProducer(settings.kafka_bootstrap, settings.topic, on_published=on_published,
                            **PUBLISH_TIMEOUTS) as producer):
            if warning := absent_topic_warning(settings.kafka_bootstrap, settings.topic):
                log.warning("%s", warning)  # the broker is up: the producer reached it
            if args.stream:
                from fintweet.ingest.x.stream import StreamIngester

                stream = StreamIngester(token, rules, producer,
                                        backfill_minutes=args.backfill_minutes or 0, **options)
                ingester: XIngest = stream
                runner: Callable[[], object] = stream.run
            else:
                import redis

                from fintweet.core.store import CLIENT_TIMEOUTS
                from fintweet.ingest.x.search import SearchIngester, SinceIdStore

                redis_client = redis.Redis.from_url(settings.redis_url, **CLIENT_TIMEOUTS)
                interval = (args.interval if args.interval is not None
                            else default_search_interval(args.requests_per_window or 60))
                search = SearchIngester(
                    token, query, producer,
                    SinceIdStore(redis_client, query, settings.redis_prefix),
                    interval_s=interval, max_pages=args.max_pages or MAX_PAGES, **options)
                ingester = search
                runner = functools.partial(search.run, max_polls=args.max_polls)
            if metrics is not None:
                from fintweet.monitoring.server import MetricsServer

                server = MetricsServer(settings.metrics_port, metrics.registry,
                                       ready=ingester.ready, host=settings.metrics_host)
                log.info("metrics on %s:%d/metrics", server.host, server.port)
            with stopping_on_signals(ingester.stop):
                runner()
    finally:
        if server is not None:
            server.stop()
    print(f"fintweet ingest x: {ingester.stats.summary()} → topic {settings.topic}",
          file=sys.stderr)
    return 0
