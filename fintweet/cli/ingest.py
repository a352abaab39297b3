"""``fintweet ingest``: put tweets on the Kafka topic, from a labelled CSV or from the X API."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fintweet.cli import ingest_x
from fintweet.cli.options import (
    add_kafka_options,
    add_metrics_options,
    positive_float,
    positive_int,
    shared_overrides,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from fintweet.core.data import LabelledData
    from fintweet.core.producer import TweetProducer


def replay_rate(value: str) -> float:
    """``--rate``: above 0, and a gap between tweets that a sleep can take (1e-300 overflowed
    it, with a traceback, after the first tweet); slower than one a day is no replay at all."""
    rate = positive_float(value)
    if rate < 1 / 86_400:
        raise argparse.ArgumentTypeError(f"{value} is under one tweet a day (0.0000116)")
    return rate


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest", help="publish tweets to Kafka (CSV replay or the X API)",
        description="Publish tweets to the Kafka topic the workers consume.",
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    replay = sources.add_parser(
        "replay", help="replay a CSV (text[,label][,id]) through the topic",
        description="Publish each row of a CSV as a tweet. Labels, when present, travel with the "
        "tweet so the worker keeps live accuracy. Ids come from an 'id' column or are derived "
        "from the row, so a second replay of the same file within FINTWEET_RESULT_RETENTION_S "
        "(default 30 days) is recognised and not counted again.",
    )
    replay.add_argument("csv", help="CSV file with a 'text' column (and optionally 'label', 'id')")
    replay.add_argument("--rate", type=replay_rate, default=None,
                        help="tweets per second, at least one a day (default: as fast as the "
                             "broker takes them)")
    replay.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="publish at most N rows")
    replay.add_argument("--task", choices=("topic", "sentiment"), default=None,
                        help="what the CSV's labels are: topic ids (sent as the tweet's label, "
                             "default) or sentiment ids (sent as its sentiment_label); a CSV "
                             "whose labels read as sentiment is refused without it")
    replay.add_argument("--shuffle", action="store_true",
                        help="publish the rows in a random order (training CSVs are sorted by "
                             "label); ids stay those of the rows")
    replay.add_argument("--seed", type=int, default=None,
                        help="seed for --shuffle (default 0; only with --shuffle)")
    replay.add_argument("--holdout", action="store_true",
                        help="publish only the CSV's deterministic stratified holdout (the 15%% "
                             "`fintweet train --no-refit` never trains on); ids stay those of "
                             "the rows in the whole file")
    replay.add_argument("--from-row", type=int, default=0, metavar="N",
                        help="skip the first N rows in publishing order: resume a replay that "
                             "failed or was interrupted (Ctrl-C), with the N it named "
                             "(default 0)")
    add_kafka_options(replay)
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_metrics_options(replay, serves="/metrics while replaying (and /healthz, /readyz)")
    replay.set_defaults(func=run_replay)

    ingest_x.register(sources)  # the X ingester's sub-command, next to replay


def holdout_rows(data: LabelledData, csv: str) -> LabelledData:
    """The holdout the trainer carves from the same CSV, each row keeping the id it has in a
    replay of the whole file (so the two replays name the same tweet the same way)."""
    from dataclasses import replace

    from fintweet.core.data import DataError, row_id, stratified_holdout

    if (data.labels < 0).any():
        raise DataError(f"{csv}: --holdout needs a label on every row (the holdout is "
                        "stratified by label)")
    ids = data.ids or [row_id(i + 1, text) for i, text in enumerate(data.texts)]
    holdout = replace(data, ids=ids).subset(stratified_holdout(data.labels)[1])
    if len(holdout) == 0:  # "published 0 tweets", exit 0, before
        raise DataError(f"{csv}: too few rows for --holdout (it keeps 15% of each label's rows); "
                        "replay the whole file without it")
    return holdout


def replay_readiness(producer: TweetProducer) -> Callable[[], tuple[bool, str]]:
    """``/readyz`` while replaying: whether the broker takes connections. It answered "ready"
    throughout, a broker that had died included, while the replay waited out its retries."""
    def ready() -> tuple[bool, str]:
        if producer.reachable():
            return True, f"replaying to {producer.topic}"
        return False, f"Kafka at {producer.bootstrap_servers} does not accept connections"
    return ready


def run_replay(args: argparse.Namespace) -> int:
    import sys

    from fintweet.core.config import Settings
    from fintweet.core.data import DataError, load_labelled_csv
    from fintweet.core.errors import UserError
    from fintweet.core.labels import looks_like_sentiment, sentiment_mixup
    from fintweet.core.producer import PUBLISH_TIMEOUTS, TweetProducer, absent_topic_warning
    from fintweet.ingest.replay import replay, replay_rows

    if args.seed is not None and not args.shuffle:
        raise UserError(f"--seed {args.seed} orders a shuffle: add --shuffle, or drop --seed")
    settings = Settings.from_env(**shared_overrides(args)).check(
        "kafka_bootstrap", "topic", "metrics_port")
    told, args.task = args.task is not None, args.task or "topic"
    # read as --task says: a label the task has no class for is named with its row and line
    data = load_labelled_csv(args.csv, require_labels=False, task=args.task)
    replay_rows(data, task=args.task)  # a bad id or label fails here, before the broker is asked
    if not told and looks_like_sentiment(data.labels):
        # Refused, not warned: once published, the rows' ids are counted, and a replay with
        # --task sentiment after the warning only added duplicates, the wrong labels kept.
        raise DataError(f"{sentiment_mixup(args.csv)}, and live topic accuracy would count "
                        "them; replay it with --task sentiment (or --task topic if they are "
                        "topic ids)")
    if data.ids and (repeats := len(data.ids) - len(set(data.ids))):
        print(f"warning: {args.csv}: {repeats:,} row(s) repeat the id of an earlier row; the "
              "worker classifies one tweet per id and counts the others as duplicates",
              file=sys.stderr, flush=True)
    if args.holdout:
        data = holdout_rows(data, args.csv)
    if not 0 <= args.from_row <= len(data):  # and this, replay() checks it too
        raise DataError(f"{args.csv}: --from-row {args.from_row} is outside 0..{len(data)}")
    metrics = server = None
    if settings.metrics_port:
        from fintweet.monitoring.ingest import IngestMetrics
        from fintweet.monitoring.server import MetricsServer

        metrics = IngestMetrics("replay")
        server = MetricsServer(settings.metrics_port, metrics.registry, host=settings.metrics_host,
                               ready=lambda: (False, "connecting to Kafka"))
    try:
        with (ingest_x.publish_errors_counted(metrics),
              TweetProducer(settings.kafka_bootstrap, settings.topic,
                            on_published=metrics.record_published if metrics else None,
                            **PUBLISH_TIMEOUTS) as producer):
            if server is not None:
                server.ready = replay_readiness(producer)
            if warning := absent_topic_warning(settings.kafka_bootstrap, settings.topic):
                print(f"warning: {warning}", file=sys.stderr, flush=True)  # the broker is up
            result = replay(data, producer, rate=args.rate, limit=args.limit,
                            progress=not args.no_progress, task=args.task, shuffle=args.shuffle,
                            seed=args.seed or 0, from_row=args.from_row, holdout=args.holdout)
    finally:
        if server is not None:
            server.stop()
    rate = result.published / result.seconds if result.seconds else float("inf")
    print(f"published {result.published:,} tweets to {settings.topic} in {result.seconds:.1f}s "
          f"({rate:,.0f}/s)", file=sys.stderr)
    return 0
