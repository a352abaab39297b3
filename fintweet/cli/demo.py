"""``fintweet demo``: the whole pipeline on the embedded stack in one command.

Starts Tansu and redis-server on free loopback ports, trains a model if none is there, replays a
labelled CSV through Kafka (by default the holdout of topic_train.csv, or of sentiment_train.csv
with `--task sentiment`: the model the demo trains for itself never sees it; a model from
`fintweet train`, which refits on the holdout unless `--no-refit`, has seen it, and the demo then
says so first), runs a worker until the topic is drained (giving up, exit 1, if the worker gets no
partition for 120 s), prints what Redis now says (topics, sentiments, top tickers, live accuracy),
and stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fintweet.cli.options import add_model_options, directory, port, positive_int, shared_overrides
from fintweet.core.labels import TASKS

if TYPE_CHECKING:
    from fintweet.core.config import Settings
    from fintweet.core.data import LabelledData
    from fintweet.models import TwoHeadModel
    from fintweet.worker.app import WorkerStats

log = logging.getLogger("fintweet.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="replay → Kafka → worker → Redis on the embedded stack, with a summary",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--data", default=None,
                        help="labelled CSV to replay (default: the holdout of the task's "
                             "training CSV from the data dir; `fintweet train` refits on it "
                             "unless --no-refit, and the demo warns when the model has seen it)")
    parser.add_argument("--task", choices=TASKS, default="topic",
                        help="what the replayed labels are, so which live accuracy the summary "
                             "measures (default topic; sentiment: Bearish 0, Bullish 1, "
                             "Neutral 2, by default the holdout of sentiment_train.csv)")
    parser.add_argument("--data-dir", type=directory, default=None,
                        help="folder holding topic_train.csv and sentiment_train.csv (default: "
                             "FINTWEET_DATA_DIR, else ../shared/data if present, else ./data; "
                             "downloaded there if absent)")
    add_model_options(parser,
                      model_help="model kind to serve (env FINTWEET_MODEL, default ann)",
                      models_help="a model is trained into it when it has none")
    parser.add_argument("--partitions", type=positive_int, default=4,
                        help="partitions of the topic (default 4)")
    parser.add_argument("--json", action="store_true",
                        help="print the stats object (topics, sentiments, top tickers, live "
                             "accuracy per task) plus published, tweets_per_s and "
                             "model_has_seen_data/warning as JSON")
    parser.add_argument("--serve", action="store_true",
                        help="after the summary keep the stack, a worker and the live page "
                             "running, print the page's URL, and stop on Ctrl-C")
    parser.add_argument("--host", default=None,
                        help="address the page binds with --serve (env FINTWEET_WEB_HOST, "
                             "default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=None,
                        help="port of the page with --serve (env FINTWEET_WEB_PORT, default "
                             "8000; 0 picks a free one)")
    parser.set_defaults(func=run, _parser=parser)


def ensure_model(settings: Settings, data_dir: Path) -> None:
    """Train the served kind into the models dir unless it already has a current version.

    Without the refit on the holdout: the demo replays the holdout by default, and a model that
    never saw it makes the demo's live accuracy an honest held-out figure."""
    from fintweet.core.artifacts import MODEL_KINDS
    from fintweet.core.errors import UserError
    from fintweet.models import available
    from fintweet.trainer.train import results_table, train_default

    if settings.model in available(settings.models_dir):
        return
    if "/" in settings.model:  # a model folder of its own: load() says what is wrong with it
        return
    if settings.model not in MODEL_KINDS:  # said before the stack starts, not after a traceback
        raise UserError(f"--model {settings.model!r} (or FINTWEET_MODEL) is no model kind and no "
                        f"trained model in {settings.models_dir}; use one of "
                        f"{', '.join(MODEL_KINDS)}")
    print(f"no '{settings.model}' model in {settings.models_dir}: training one on the train "
          "split, holdout unseen (takes a few minutes on 2 cores) …", file=sys.stderr)
    paths = train_default([settings.model], settings.models_dir, data_dir, refit=False)
    print(results_table(paths), file=sys.stderr)


def seen_warning(model_tag: str, reason: str | None) -> str | None:
    """The line the demo opens with when its live accuracy is not a held-out figure."""
    if reason is None:
        return None
    return (f"warning: this model has seen these tweets: {model_tag}: {reason}; the live "
            "accuracy below is optimistic")


def replay_data(args: argparse.Namespace, data_dir: Path) -> tuple[LabelledData, str]:
    """The rows to replay and the fingerprint of the CSV they come from (the whole file, so it
    can be matched against what the model recorded of its training data)."""
    from fintweet.core.data import (
        load_labelled_csv,
        resolve_split,
        split_train_holdout,
        train_split,
    )
    from fintweet.core.labels import looks_like_sentiment, sentiment_mixup

    if args.data:
        data = load_labelled_csv(args.data, require_labels=False, task=args.task)
        if args.task == "topic" and looks_like_sentiment(data.labels):
            print(f"warning: {sentiment_mixup(args.data)}, so the live topic accuracy below is "
                  "meaningless; if it is the sentiment CSV, add --task sentiment",
                  file=sys.stderr, flush=True)
        return data, data.fingerprint()
    whole = load_labelled_csv(resolve_split(train_split(args.task), data_dir), task=args.task)
    _, holdout = split_train_holdout(whole)
    return holdout, whole.fingerprint()


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings

    for flag, value in (("--host", args.host), ("--port", args.port)):
        if value is not None and not args.serve:
            args._parser.error(f"{flag} is the page's and applies only with --serve")
    settings = Settings.from_env(
        web_host=args.host, web_port=args.port, **shared_overrides(args),
    ).check("models_dir", "model", "transformer_runtime", "topic", "group", "redis_prefix",
            "batch_size", "max_wait_ms", "blas_threads", "bucket_retention_s",
            "result_retention_s", *(("web_host", "web_port") if args.serve else ()))
    # SIGINT and SIGTERM unwind the demo (fintweet.cli.main installs that for every command):
    # the stack stops, its temporary state is removed; --serve's loop has handlers of its own.
    try:
        if not args.serve:
            return demo(args, settings, None)
        from fintweet.web.server import listen

        # The page's port is bound first and held through the demo: a taken one is one line
        # (WebPortError) at once, not a traceback after minutes of training and replaying.
        with listen(settings.web_host, settings.web_port) as page:
            return demo(args, settings, page)
    except KeyboardInterrupt:
        # Its own words: the replay's (where to resume with --from-row) do not apply here.
        raise KeyboardInterrupt("interrupted; its embedded stack is stopped and its state "
                                "removed, nothing is left running") from None


def demo(args: argparse.Namespace, settings: Settings, page: socket.socket | None) -> int:
    """The demo itself; with ``page`` (``--serve``), then the page on it until Ctrl-C."""
    import tempfile

    from fintweet.cli.stats import format_stats
    from fintweet.core.config import model_path
    from fintweet.core.producer import TweetProducer
    from fintweet.devstack.stack import EmbeddedStack
    from fintweet.ingest.replay import replay, replay_rows
    from fintweet.models import load
    from fintweet.models.base import model_tag
    from fintweet.worker.app import Worker
    from fintweet.worker.consumer import FAST_GROUP_SETTINGS

    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    # read first: a bad CSV fails before anything starts
    data, csv_fingerprint = replay_data(args, data_dir)
    ensure_model(settings, data_dir)
    model = load(model_path(settings.models_dir, settings.model),
                 transformer_runtime=settings.transformer_runtime or None)
    info = model.info  # set by load()
    reason = (info.has_seen(args.task, csv_fingerprint, holdout_only=not args.data,
                            rows=(data.texts, data.labels)) if info else None)
    warning = seen_warning(model_tag(model), reason)
    if warning:  # the first line of the output, before any figure (stderr beside --json)
        print(warning, file=sys.stderr if args.json else sys.stdout, flush=True)

    with tempfile.TemporaryDirectory(prefix="fintweet-demo-") as state, EmbeddedStack(
        Path(state), kafka_port=0, redis_port=0, partitions=args.partitions,
        topics=(settings.topic,),
    ) as stack:
        settings = settings.override(kafka_bootstrap=stack.kafka_bootstrap,
                                     redis_url=stack.redis_url)
        print(f"embedded stack up: kafka {stack.kafka_bootstrap}, redis {stack.redis_url}",
              file=sys.stderr)
        with TweetProducer(settings.kafka_bootstrap, settings.topic) as producer:
            published = replay(data, producer, task=args.task, progress=not args.json).published
        # Redis keeps one result per id, and a CSV may name an id twice: the drain and the
        # final check count distinct ids, not rows.
        ids = replay_rows(data, task=args.task).ids or []  # replay_rows gives every row an id
        expected = len(set(ids[:published]))

        from tqdm import tqdm

        bar = tqdm(total=published, unit="tweet", desc="classify", disable=args.json)

        def drained(stats: WorkerStats) -> None:
            bar.update(min(stats.consumed, published) - bar.n)
            # Not ``consumed``: records redelivered after a rebalance count there twice.
            if stats.classified + stats.dead_letters >= expected:
                worker.stopping.set()

        worker = Worker(settings, model, consumer_options=FAST_GROUP_SETTINGS,
                        on_batch=drained, until_idle=60, until_unassigned=UNASSIGNED_LIMIT_S)
        worker_stats = worker.run()
        bar.close()
        if worker_stats.stopped_unassigned:  # said before the counts that fall short
            print(f"fintweet demo: error: the worker got no partition for {UNASSIGNED_LIMIT_S:.0f}"
                  " s (the embedded broker's consumer group did not settle); run the demo again",
                  file=sys.stderr)
        from fintweet.core.store import ResultStore

        store = ResultStore.from_settings(settings)
        try:
            stats = store.stats()
        finally:
            store.client.close()
        stats["published"] = published
        stats["tweets_per_s"] = round(worker_stats.rate(), 1)
        stats["model_has_seen_data"] = warning is not None
        stats["warning"] = warning

        if args.json:
            print(json.dumps(stats), flush=True)
        else:
            print(format_stats(stats, {
                "published": f"{published:,}",
                "worker throughput": f"{stats['tweets_per_s']:,.0f} tweets/s "
                                     f"({model.name}@{model.version})",
            }), flush=True)
        complete = stats["processed"] + stats["dlq"] == expected
        if not complete:
            print(f"fintweet demo: error: published {published} tweets ({expected} distinct "
                  f"ids) but Redis holds {stats['processed']} results and {stats['dlq']} dead "
                  "letters", file=sys.stderr)
        if page is not None:
            serve_until_interrupted(settings, model, page)
    return 0 if complete else 1


WORKER_STOP_S = 10.0
# A join takes seconds on the embedded broker; a group that has not settled in two minutes will
# not, and the demo would otherwise wait with no word for ever.
UNASSIGNED_LIMIT_S = 120.0


def serve_until_interrupted(settings: Settings, model: TwoHeadModel, page: socket.socket) -> None:
    """The page over the demo's stack, with a worker still consuming, so tweets published now
    (``fintweet ingest replay --bootstrap …``) appear live; Ctrl-C stops everything."""
    import threading

    from fintweet.core.signals import stop_on_signals
    from fintweet.web.server import ServerThread, build_app
    from fintweet.worker.app import Worker
    from fintweet.worker.consumer import FAST_GROUP_SETTINGS

    worker = Worker(settings, model, consumer_options=FAST_GROUP_SETTINGS)
    consuming = threading.Thread(target=worker.run, name="demo-worker", daemon=True)
    consuming.start()
    stop = threading.Event()
    # The handlers are installed here, not inherited (a process started as a background job
    # without job control inherits SIGINT *ignored*: measured, the serve test run that way waited
    # out its 60 s), and before the line that says the page is up, after which a user or a test
    # may signal at once.
    with ServerThread(build_app(settings, model), sock=page) as server, stop_on_signals(stop.set):
        print(f"live page: {server.url}/  (publish more with: fintweet ingest replay CSV "
              f"--bootstrap {settings.kafka_bootstrap}; Ctrl-C stops)", flush=True)
        # For `fintweet tail`, `show` and `stats` in another shell: the ports are random.
        print(f"export FINTWEET_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}\n"
              f"export FINTWEET_REDIS_URL={settings.redis_url}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
            print("stopping …", file=sys.stderr, flush=True)
        finally:
            # Bounded: a worker caught in a group join Tansu does not finish (the previous
            # worker just left) may not see the stop for a while. Everything it wrote is
            # committed or will be redelivered and recognised, so leaving it is safe.
            worker.stopping.set()
            consuming.join(timeout=WORKER_STOP_S)
            if consuming.is_alive():
                print(f"the worker did not stop within {WORKER_STOP_S:.0f}s; leaving it",
                      file=sys.stderr, flush=True)
