"""``fintweet worker``: join the consumer group and classify until stopped (or idle)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fintweet.cli.options import (
    add_kafka_options,
    add_metrics_options,
    add_model_options,
    add_redis_option,
    positive_float,
    positive_int,
    shared_overrides,
)
from fintweet.core.config import DEFAULT_BATCH_SIZE, model_path

log = logging.getLogger("fintweet.worker")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="consume tweets, classify them in batches, write results to Redis",
        description="A consumer-group member: run several with the same --group to share the "
        "topic's partitions (the partition count bounds the parallelism). Stops cleanly on "
        "SIGTERM/Ctrl-C: the batch in hand is finished and committed first.",
    )
    add_model_options(parser, model_help="model kind to serve: ann, cnn, linear, ensemble, "
                      "transformer or cascade (env FINTWEET_MODEL, default ann, the fastest); "
                      "its 'current' version is loaded")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="most tweets per batch (env FINTWEET_BATCH_SIZE, default "
                             f"{DEFAULT_BATCH_SIZE})")
    parser.add_argument("--max-wait-ms", type=int, default=None,
                        help="longest wait to fill a batch once a tweet arrived "
                             "(env FINTWEET_MAX_WAIT_MS, default 20)")
    parser.add_argument("--until-idle", type=positive_float, default=None, metavar="SECONDS",
                        help="exit after this many seconds without messages while partitions are "
                             "assigned (time spent joining the group does not count)")
    parser.add_argument("--group", default=None,
                        help="consumer group (env FINTWEET_GROUP, default fintweet-workers)")
    add_kafka_options(parser, topic_role="topic to consume")
    add_redis_option(parser)
    add_metrics_options(parser)
    parser.add_argument("--max-poll-interval-ms", type=positive_int, default=None,
                        help="consumer max.poll.interval.ms (also the group's rebalance "
                             "timeout; default 60000)")
    parser.add_argument("--session-timeout-ms", type=session_timeout, default=None,
                        help="consumer session.timeout.ms (at least 1000, default 10000; the "
                             "heartbeat is a third of it)")
    parser.add_argument("--json", action="store_true", help="print the run's figures as JSON")
    parser.set_defaults(func=run)


def session_timeout(value: str) -> int:
    """At least a second: the heartbeat (a third of it, 100 ms at least) must fit inside, and a
    shorter session would drop members on any pause; Kafka brokers refuse under 6 s by default."""
    number = positive_int(value)
    if number < 1000:
        raise argparse.ArgumentTypeError(f"{number} ms is too short for a session (at least 1000)")
    return number


def run(args: argparse.Namespace) -> int:

    from fintweet.core.config import Settings
    from fintweet.core.store import require_redis
    from fintweet.models import load
    from fintweet.worker.app import Worker, require_broker
    from fintweet.worker.consumer import consumer_tuning
    from fintweet.worker.device import describe_devices

    settings = Settings.from_env(
        batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
        group=args.group, **shared_overrides(args),
    ).check("kafka_bootstrap", "redis_url", "topic", "group", "redis_prefix", "models_dir",
            "model", "transformer_runtime", "batch_size", "max_wait_ms", "blas_threads",
            "metrics_port", "bucket_retention_s", "result_retention_s")
    require_broker(settings.kafka_bootstrap)  # one line in a second, before the model loads
    require_redis(settings.redis_url)
    model = load(model_path(settings.models_dir, settings.model),
                 transformer_runtime=settings.transformer_runtime or None)
    log.info("loaded %s@%s from %s; %s", model.name, model.version, settings.models_dir,
             describe_devices())
    metrics = server = None
    if settings.metrics_port:
        from fintweet.monitoring.server import MetricsServer
        from fintweet.monitoring.worker import WorkerMetrics

        metrics = WorkerMetrics()
    tuning = consumer_tuning(args.max_poll_interval_ms, args.session_timeout_ms)
    worker = Worker(settings, model, consumer_options=tuning, metrics=metrics,
                    until_idle=args.until_idle)
    worker.install_signal_handlers()
    if metrics is not None:
        try:
            server = MetricsServer(settings.metrics_port, metrics.registry, ready=worker.ready,
                                   host=settings.metrics_host)
        except BaseException:
            worker.close()  # the consumer, producer and Redis pool it opened
            raise
        log.info("metrics on %s:%d/metrics", server.host, server.port)
    try:
        stats = worker.run()
    finally:
        if server is not None:
            server.stop()
    figures = {
        "consumed": stats.consumed, "classified": stats.classified,
        "duplicates": stats.duplicates, "dead_letters": stats.dead_letters,
        "batches": stats.batches, "busy_s": round(stats.busy_seconds(), 1),
        "tweets_per_s": round(stats.rate(), 1),  # over the busy time
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(" ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)
    return 0
