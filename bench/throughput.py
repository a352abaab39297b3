"""Worker throughput and latency on the embedded stack, all in one run on the same broker:

1. raw: kafka-python consume + ``json.loads`` of N tweets — the ceiling for any Python consumer;
2. end to end: the worker (decode, clean, one predict_proba per batch, one Redis round trip,
   commit) over the same N tweets, with the chosen model;
3. the same worker with a model that costs nothing (constant probabilities): the pipeline's own
   ceiling, so the model's share of the time is the difference;
   with ``--workers N``, phases 2 and 3 run N worker processes in one consumer group (how a
   deployment uses more cores: one worker is one Python process, so one core at most), the rate
   counted from the first record any of them received to the last write any of them made;
4. latency: a replay process publishing at a steady rate while a worker runs; p50/p99 of
   ``ingested_at`` → Redis write. Always one worker, also with ``--workers N``: the default
   rate (2,000 tweets/s) is well inside one worker's capacity, so a second would only add a
   process competing for the same two cores, and latency is a question of one tweet's path.

Rates are measured from the first record received to the last one done, so the consumer-group
join is not counted. Figures vary with machine load: compare the ratio, which is measured on one
broker in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from kafka import ConsumerRebalanceListener

from fintweet.core.config import Settings
from fintweet.core.data import load_labelled_csv, resolve_split
from fintweet.core.errors import UserError
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS
from fintweet.core.producer import TweetProducer
from fintweet.core.schema import Tweet, utcnow
from fintweet.core.text import prepare_model_texts
from fintweet.devstack.stack import EmbeddedStack
from fintweet.models import Proba, load
from fintweet.models.base import model_tag
from fintweet.worker.app import Worker
from fintweet.worker.consumer import DEFAULT_CONSUMER_OPTIONS, FAST_GROUP_SETTINGS

# The workers join fast (FAST_GROUP_SETTINGS) but keep production's poll interval: the worker
# sizes a batch to a quarter of it, and the fast 10 s cut a slow model's batches (the
# transformer's, the cascade's) to ~500 tweets where a deployed worker takes up to 2,048.
WORKER_OPTIONS = {**FAST_GROUP_SETTINGS,
                  "max_poll_interval_ms": DEFAULT_CONSUMER_OPTIONS["max_poll_interval_ms"]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("FINTWEET_MODELS_DIR", "models"),
                        help="models directory (env FINTWEET_MODELS_DIR)")
    parser.add_argument("--model", default="ann", help="model kind (default ann)")
    parser.add_argument("--data", default=None, help="CSV of tweets (default: topic_train.csv)")
    parser.add_argument("--tweets", type=int, default=60_000, help="tweets for the rate phases")
    parser.add_argument("--rate", type=float, default=2000, help="tweets/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=15, help="length of the latency phase")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes in the group for the rate phases (default 1)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a --workers process
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--transformer-runtime", default=None,
                        choices=("auto", "keras", "onnx", "onnx-int8"),
                        help="serve the model's transformer with this runtime (default: the "
                             "artifact's, auto: onnx-int8 on a CPU)")
    return parser.parse_args()


def texts_for(args: argparse.Namespace) -> list[str]:
    path = Path(args.data) if args.data else resolve_split("train", Settings().data_dir)
    return load_labelled_csv(path).texts


def publish(stack: EmbeddedStack, topic: str, texts: list[str], n: int) -> None:
    with TweetProducer(stack.kafka_bootstrap, topic) as producer:
        for i in range(n):
            now = utcnow()
            producer.publish(Tweet(id=f"b{i}", text=texts[i % len(texts)], created_at=now,
                                   source="replay", ingested_at=now))


def raw_consume(stack: EmbeddedStack, topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=stack.kafka_bootstrap, group_id=f"{topic}-raw",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=512,
        fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
        **FAST_GROUP_SETTINGS,
    )
    seen = 0
    first = last = 0.0
    deadline = time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            if not first:
                first = time.monotonic()
            for record in records:
                json.loads(record.value)
            seen += len(records)
            last = time.monotonic()
    consumer.close(autocommit=False)
    if seen < n:
        raise RuntimeError(f"raw consumer saw {seen} of {n} tweets")
    return seen / (last - first)


class ConstantModel:
    """Costs nothing per tweet: isolates the worker's pipeline (Kafka, validation, cleaning,
    result JSON, Redis, commit) from inference."""

    name = "constant"
    version = "bench"

    def predict_proba(self, texts: list[str]) -> Proba:
        return Proba(
            topic=np.full((len(texts), NUM_TOPICS), 1 / NUM_TOPICS, dtype=np.float32),
            sentiment=np.full((len(texts), NUM_SENTIMENTS), 1 / NUM_SENTIMENTS, dtype=np.float32),
        )


def worker_settings(topic: str, args: argparse.Namespace, run: str = "worker",
                    stack: EmbeddedStack | None = None) -> Settings:
    """One group and one Redis prefix per ``run``; the broker and Redis of ``stack``, or without
    one (a ``--workers`` process) those its environment names."""
    addresses = {} if stack is None else {"kafka_bootstrap": stack.kafka_bootstrap,
                                          "redis_url": stack.redis_url}
    return Settings.from_env(
        **addresses, topic=topic, group=f"{topic}-{run}", redis_prefix=f"bench:{topic}:{run}",
        batch_size=args.batch_size,
    )


def end_to_end(stack: EmbeddedStack, topic: str, n: int, model, args,
               run: str = "worker") -> float:
    def stop_when_done(stats) -> None:
        if stats.consumed >= n:
            worker.stopping.set()

    worker = Worker(worker_settings(topic, args, run, stack), model,
                    consumer_options=WORKER_OPTIONS, on_batch=stop_when_done,
                    until_idle=60)
    stats = worker.run()
    if stats.classified != n:
        raise RuntimeError(f"worker classified {stats.classified} of {n} tweets")
    # From the first record to the last write, as the --workers runs are timed (not the
    # worker's own rate, which leaves out idle gaps).
    assert stats.first_record is not None and stats.last_record is not None
    return stats.consumed / (stats.last_record - stats.first_record)


PARTITIONS = 4  # of the bench topics: at most this many workers can share one
CHILD_SILENCE_S = 600  # the longest a --workers process may go without a line
JOIN_TIMEOUT_S = 120  # for every --workers process to hold its share of the partitions


def run_children(command: list[str], env: dict[str, str], logs: list[IO[str]]) -> list[dict]:
    """Start one child per log file; once every one says "ready" (model loaded and warm), tell
    all to join the group; once each holds its share of the partitions (none fetching yet), tell
    all to start; collect their stats lines. A child that dies raises with the last line it wrote
    to stderr.

    Joining first and fetching later keeps the split fair: had the children fetched as soon as
    they joined, the first member in the group could drain every partition before the next
    one's join completed."""
    children = [subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, text=True) for log in logs]
    # One reader thread per child: a line already buffered in one pipe's reader would never wake
    # a select() on that pipe.
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()  # None: that child's stdout closed

    def read(index: int, out: IO[str]) -> None:
        for line in out:
            lines.put((index, line.strip()))
        lines.put((index, None))

    for index, child in enumerate(children):
        threading.Thread(target=read, args=(index, child.stdout), daemon=True).start()

    def failed(index: int, what: str) -> RuntimeError:
        log = logs[index]
        log.seek(0)
        last = next((line.strip() for line in reversed(log.readlines()) if line.strip()), "")
        return RuntimeError(f"a worker process {what} (exit {children[index].wait()}): {last}")

    def next_line(phase: str, done: set[int]) -> tuple[int, str]:
        """The next line of a child not yet ``done``; ``phase`` ("to start" …), for errors."""
        while True:
            try:
                index, line = lines.get(timeout=CHILD_SILENCE_S)
            except queue.Empty:
                raise RuntimeError(f"no worker process said anything for {CHILD_SILENCE_S} s "
                                   f"(waiting for them {phase})") from None
            if line is None and index not in done:
                raise failed(index, f"failed {phase}")
            if line is not None:
                return index, line

    def tell(word: str) -> None:
        for index, child in enumerate(children):
            try:
                child.stdin.write(word + "\n")
                child.stdin.flush()
            except BrokenPipeError:
                raise failed(index, f"failed before {word!r}") from None

    try:
        ready: set[int] = set()
        while len(ready) < len(children):
            index, line = next_line("to start", set())
            if line == "ready":
                ready.add(index)
        tell("join")
        held: dict[int, tuple[set[int], int]] = {}  # child: (its partitions, the topic's count)
        joining_until = time.monotonic() + JOIN_TIMEOUT_S
        while not shares_complete(held, len(children)):
            if time.monotonic() > joining_until:  # a group rebalancing for ever, or too few
                raise RuntimeError(f"the worker processes' group did not settle in "
                                   f"{JOIN_TIMEOUT_S} s: {held}")
            index, line = next_line("to join the group", set())
            if line.startswith("assigned "):
                partitions, _, total = line.removeprefix("assigned ").partition(" of ")
                held[index] = ({int(p) for p in partitions.split(",") if p}, int(total))
        tell("start")
        stats: dict[int, dict] = {}
        while len(stats) < len(children):
            index, line = next_line("to finish", set(stats))
            if line.startswith("{"):
                stats[index] = json.loads(line)
        for index, child in enumerate(children):
            if child.wait(timeout=60) != 0:
                raise failed(index, "failed")
        return [stats[index] for index in range(len(children))]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def shares_complete(held: dict[int, tuple[set[int], int]], members: int) -> bool:
    """Whether the latest assignments the children reported are one generation's: each member
    holds some partitions, no partition twice, and every partition of the topic is held."""
    if len(held) < members or any(not partitions for partitions, _ in held.values()):
        return False
    total = next(iter(held.values()))[1]
    union: set[int] = set()
    for partitions, _ in held.values():
        if union & partitions:
            return False
        union |= partitions
    return union == set(range(total))


def end_to_end_processes(stack: EmbeddedStack, topic: str, n: int, args,
                         run: str = "worker") -> tuple[float, list[int]]:
    """``args.workers`` processes, each loading the model and warming it up first, then joining
    the group without fetching, then all starting once every one holds its share, so no model
    load or rebalance falls inside the measured span and no process can take it all. CLOCK_MONOTONIC
    is one clock for every process on Linux, so their first/last record times compare. Returns
    the rate and how many tweets each process classified."""
    env = {**os.environ, "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
           "FINTWEET_REDIS_URL": stack.redis_url}
    command = [sys.executable, __file__, "--child", f"{topic}:{run}", "--models", args.models,
               "--model", args.model, "--tweets", str(n)]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    if args.transformer_runtime:
        command += ["--transformer-runtime", args.transformer_runtime]
    if args.data:
        command += ["--data", args.data]
    # Each child's stderr goes to a file of its own (a pipe could fill up while we read stdout),
    # so a child that dies can say why.
    with contextlib.ExitStack() as opened:
        logs = [opened.enter_context(tempfile.TemporaryFile("w+")) for _ in range(args.workers)]
        stats = run_children(command, env, logs)
    classified = sum(s["classified"] for s in stats)
    if classified != n:
        raise RuntimeError(f"{args.workers} workers classified {classified} of {n} tweets")
    busy = [s for s in stats if s["first_record"] is not None]  # few tweets: some got none
    span = max(s["last_record"] for s in busy) - min(s["first_record"] for s in busy)
    return n / span, [s["classified"] for s in stats]


class HoldUntilStarted(ConsumerRebalanceListener):
    """Pauses every partition the group assigns until :meth:`start`, so a ``--workers`` process
    can join the group and hold its share without fetching anything."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.started = False

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        if not self.started:
            self.consumer.pause(*assigned)

    def start(self) -> None:
        self.started = True
        self.consumer.resume(*self.consumer.assignment())


def child(args: argparse.Namespace) -> int:
    """One ``--workers`` process: load and warm the model, say ready; on "join", join the group
    with its partitions paused and report each assignment it holds; on "start", run until the
    group's topic has been quiet for 3 s, print its stats."""
    topic, run = args.child.split(":")
    if run == "constant":
        model = ConstantModel()
    else:
        model = load(Path(args.models) / args.model, transformer_runtime=args.transformer_runtime)
        model.predict_proba(prepare_model_texts(texts_for(args)[:512]))
    print("ready", flush=True)
    sys.stdin.readline()  # "join"
    worker = Worker(worker_settings(topic, args, run), model,
                    consumer_options=WORKER_OPTIONS, until_idle=3)
    consumer = worker.consumer
    hold = HoldUntilStarted(consumer)
    consumer.subscribe([topic], listener=hold)  # same topic: only the listener changes
    started = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), started.set()), daemon=True).start()
    reported = None
    while not started.is_set():
        if consumer.poll(timeout_ms=100):  # joins the group and keeps up with its rebalances
            raise RuntimeError("fetched records while holding its partitions paused")
        held = sorted(tp.partition for tp in consumer.assignment())
        if held != reported:
            total = len(consumer.partitions_for_topic(topic) or ())
            print(f"assigned {','.join(map(str, held))} of {total}", flush=True)
            reported = held
    hold.start()
    stats = worker.run()
    print(json.dumps({"classified": stats.classified, "first_record": stats.first_record,
                      "last_record": stats.last_record}))
    return 0


def latency(stack: EmbeddedStack, topic: str, texts: list[str], model, args) -> dict[str, float]:
    total = int(args.rate * args.seconds)
    warmup = 200
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steady.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["id", "text"])
            for i in range(total):
                out.writerow([f"s{i}", texts[i % len(texts)]])
        publish(stack, topic, texts, warmup)  # lets the worker join before the clock matters

        def stop_when_done(stats) -> None:
            if stats.consumed >= warmup and not measuring.is_set():
                measuring.set()
            if stats.consumed >= warmup + total:
                worker.stopping.set()

        measuring = threading.Event()
        worker = Worker(worker_settings(topic, args, stack=stack), model,
                        consumer_options=WORKER_OPTIONS, on_batch=stop_when_done,
                        record_latencies=True, until_idle=60)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        if not measuring.wait(120):
            raise RuntimeError("latency worker never consumed the warm-up tweets")
        worker.latencies.clear()
        env = {**os.environ, "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
               "FINTWEET_TOPIC": topic}
        subprocess.run(
            [sys.executable, "-m", "fintweet.cli.main", "ingest", "replay", str(path),
             "--rate", str(args.rate), "--no-progress"],
            env=env, check=True, stderr=subprocess.DEVNULL,
        )
        thread.join(timeout=120)
    seconds = np.concatenate(worker.latencies) if worker.latencies else np.empty(0)
    if len(seconds) < total:
        raise RuntimeError(f"latency phase saw {len(seconds)} of {total} tweets")
    return {
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p99_ms": float(np.percentile(seconds, 99) * 1000),
        "latency_tweets": len(seconds),
    }


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    if not 1 <= args.workers <= PARTITIONS:
        raise SystemExit(f"--workers must be 1 to {PARTITIONS} (the bench topics' partitions), "
                         f"got {args.workers}")
    try:  # the model first: a missing one is one line before the CSV is read or fetched
        model = load(Path(args.models) / args.model,
                     transformer_runtime=args.transformer_runtime)
    except UserError as exc:
        raise SystemExit(f"throughput: {exc}") from None
    texts = texts_for(args)
    model.predict_proba(prepare_model_texts(texts[:512]))  # build the graph before timing
    with tempfile.TemporaryDirectory() as state, EmbeddedStack(
        state, kafka_port=0, redis_port=0, partitions=PARTITIONS, topics=("bench", "bench-latency")
    ) as stack:
        log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
        log(f"publishing {args.tweets:,} tweets …")
        publish(stack, "bench", texts, args.tweets)
        log("raw consume …")
        raw = raw_consume(stack, "bench", args.tweets)
        log(f"  {raw:,.0f} tweets/s")
        log(f"worker end to end with {model.name}@{model.version}"
            + (f", {args.workers} processes" if args.workers > 1 else "") + " …")
        e2e = (end_to_end(stack, "bench", args.tweets, model, args) if args.workers == 1
               else end_to_end_processes(stack, "bench", args.tweets, args)[0])
        log(f"  {e2e:,.0f} tweets/s")
        log("worker end to end with a model that costs nothing …")
        no_model = (end_to_end(stack, "bench", args.tweets, ConstantModel(), args, run="constant")
                    if args.workers == 1 else
                    end_to_end_processes(stack, "bench", args.tweets, args, run="constant")[0])
        log(f"  {no_model:,.0f} tweets/s")
        log(f"latency at {args.rate:,.0f} tweets/s for {args.seconds:.0f}s …")
        lat = latency(stack, "bench-latency", texts, model, args)
    figures = {
        "model": model_tag(model),
        "transformer_runtime": args.transformer_runtime or "default",
        "tweets": args.tweets,
        "workers": args.workers,
        "raw_consume_per_s": round(raw, 1),
        "end_to_end_per_s": round(e2e, 1),
        "ratio": round(e2e / raw, 3),
        "no_model_per_s": round(no_model, 1),
        "no_model_ratio": round(no_model / raw, 3),
        "p50_ms": round(lat["p50_ms"], 1),
        "p99_ms": round(lat["p99_ms"], 1),
        "latency_rate_per_s": args.rate,
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
