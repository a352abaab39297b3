"""``fintweet worker``: join the consumer group and classify until stopped (or idle)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger("fintweet.worker")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="consume tweets, classify them in batches, write results to Redis",
        description="A consumer-group member: run several with the same --group to share the "
        "topic's partitions (the partition count bounds the parallelism). Stops cleanly on "
        "SIGTERM/Ctrl-C: the batch in hand is finished and committed first.",
    )
    parser.add_argument("--models", dest="models_dir", default=None,
                        help="models directory (env FINTWEET_MODELS_DIR, default ./models)")
    parser.add_argument("--model", default=None,
                        help="model kind to serve: ann, cnn, linear or ensemble (env "
                             "FINTWEET_MODEL, default ann; the ensemble is the most accurate, "
                             "at ~1/4 of the ANN's throughput); its 'current' version is loaded")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="most tweets per batch (env FINTWEET_BATCH_SIZE, default 2048)")
    parser.add_argument("--max-wait-ms", type=int, default=None,
                        help="longest wait to fill a batch once a tweet arrived "
                             "(env FINTWEET_MAX_WAIT_MS, default 20)")
    parser.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                        help="exit after this many seconds without messages while partitions are "
                             "assigned (time spent joining the group does not count)")
    parser.add_argument("--group", default=None, help="consumer group (env FINTWEET_GROUP)")
    parser.add_argument("--bootstrap", dest="kafka_bootstrap", default=None,
                        help="Kafka bootstrap servers (env FINTWEET_KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic", default=None, help="topic to consume (env FINTWEET_TOPIC)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (env FINTWEET_REDIS_URL)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics, /healthz, /readyz on this port "
                             "(env FINTWEET_METRICS_PORT; 0 or unset: no server)")
    parser.add_argument("--metrics-host", default=None,
                        help="address the metrics server binds (env FINTWEET_METRICS_HOST, "
                             "default 127.0.0.1; 0.0.0.0 to let a remote Prometheus scrape)")
    parser.add_argument("--max-poll-interval-ms", type=int, default=None,
                        help="consumer max.poll.interval.ms (also the group's rebalance timeout)")
    parser.add_argument("--session-timeout-ms", type=int, default=None,
                        help="consumer session.timeout.ms")
    parser.add_argument("--json", action="store_true", help="print the run's figures as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fintweet.core.config import Settings
    from fintweet.core.consumer import consumer_tuning
    from fintweet.models import load
    from fintweet.worker.app import Worker, require_broker
    from fintweet.worker.device import describe_devices

    settings = Settings().override(
        models_dir=Path(args.models_dir) if args.models_dir else None,
        model=args.model, batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
        group=args.group, kafka_bootstrap=args.kafka_bootstrap, topic=args.topic,
        redis_url=args.redis_url, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
    )
    require_broker(settings.kafka_bootstrap)  # one line in a second, before the model loads
    model = load(settings.models_dir / settings.model)
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
        server = MetricsServer(settings.metrics_port, metrics.registry, ready=worker.ready,
                               host=settings.metrics_host)
        log.info("metrics on %s:%d/metrics", server.host, server.port)
    try:
        stats = worker.run()
    finally:
        if server is not None:
            server.stop()
    figures = {
        "consumed": stats.consumed, "classified": stats.classified,
        "duplicates": stats.duplicates, "dead_letters": stats.dead_letters,
        "batches": stats.batches, "tweets_per_s": round(stats.rate(), 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(" ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)
    return 0
