"""Crash recovery at scale: replay N labelled tweets while W workers share the topic and one of
them is SIGKILLed (and replaced at once) K times, then drain with W fresh workers and check that
Redis counted every tweet exactly once.

    .venv/bin/python bench/crash_recovery.py --tweets 100000 --kills 20 --workers 2

Prints processed, the sum of the per-topic counts, duplicates seen (the redelivered tweets the
store recognised), the wall time, the drain time (last kill to the last worker's exit) and how
often a worker logged "no partitions assigned" (a stuck group shows here). Exit code 1 when
anything was lost or double counted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fintweet.core.artifacts import read_artifact
from fintweet.core.config import Settings
from fintweet.core.data import load_labelled_csv, resolve_split
from fintweet.core.errors import UserError
from fintweet.core.producer import TweetProducer
from fintweet.core.store import ResultStore
from fintweet.devstack.stack import EmbeddedStack
from fintweet.ingest.replay import replay


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("FINTWEET_MODELS_DIR", "models"))
    parser.add_argument("--model", default="ann", help="the kind the workers serve (default ann)")
    parser.add_argument("--data", default=None, help="labelled CSV (default: topic_train.csv)")
    parser.add_argument("--tweets", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers sharing the topic; each kill hits the next one in turn")
    parser.add_argument("--rate", type=float, default=2000, help="replay rate, tweets/s")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="small batches put more kills between a Redis write and its commit")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


# Every worker process this run started, so that any way out of main() stops them: one left
# without --until-idle would wait on its stopped broker for ever.
STARTED: list[subprocess.Popen] = []


def start_worker(env: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    """A worker process; SIGKILL gives it no chance to commit or leave the group."""
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "fintweet.cli.main", "worker", "--max-poll-interval-ms",
             "10000", "--session-timeout-ms", "3000", *extra],
            env=env, stdout=out, stderr=out,
        )
    STARTED.append(worker)
    return worker


def main() -> int:
    args = parse_args()
    try:
        model = read_artifact(Path(args.models) / args.model)
    except UserError as exc:
        sys.exit(f"crash_recovery: {exc}")
    try:
        return run(args, f"{model.kind}@{model.version}")
    finally:
        for worker in STARTED:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def run(args: argparse.Namespace, model: str) -> int:
    path = Path(args.data) if args.data else resolve_split("train", Settings().data_dir)
    data = load_labelled_csv(path)
    data = data.subset(list(range(len(data))) * (args.tweets // len(data) + 1))
    # Distinct ids for repeated rows: a second lap of the CSV is new tweets, not a replay.
    data = type(data)(texts=data.texts[: args.tweets], labels=data.labels[: args.tweets],
                      source=data.source, ids=[f"c{i}" for i in range(args.tweets)])
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as state, EmbeddedStack(
        state, kafka_port=0, redis_port=0, partitions=4
    ) as stack:
        # Every setting the run depends on is pinned: the caller's FINTWEET_TOPIC or prefix
        # would leave the workers reading a topic nobody writes, or counting under other keys.
        env = {**os.environ, "FINTWEET_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
               "FINTWEET_REDIS_URL": stack.redis_url, "FINTWEET_MODELS_DIR": args.models,
               "FINTWEET_MODEL": args.model, "FINTWEET_TOPIC": "tweets",
               "FINTWEET_GROUP": "fintweet-workers", "FINTWEET_REDIS_PREFIX": "fintweet",
               "TF_CPP_MIN_LOG_LEVEL": "3",
               "FINTWEET_BATCH_SIZE": str(args.batch_size)}
        store = ResultStore.from_url(stack.redis_url, prefix="fintweet")
        log = Path(state) / "workers.log"

        def publish() -> None:
            with TweetProducer(stack.kafka_bootstrap, "tweets") as producer:
                replay(data, producer, rate=args.rate, progress=False)

        publisher = threading.Thread(target=publish, daemon=True)  # not waited for on error
        publisher.start()
        workers = [start_worker(env, log) for _ in range(args.workers)]
        for k in range(args.kills):
            target = (k + 1) * args.tweets // (args.kills + 2) + 37 * k  # off batch boundaries
            target = min(target, args.tweets - 1)  # many kills on few tweets: still reachable
            stalled_after = time.monotonic() + 600
            while store.stats()["processed"] < target:
                if any(w.poll() is not None for w in workers):
                    print(log.read_text()[-3000:], file=sys.stderr)
                    raise RuntimeError("a worker died on its own")
                if time.monotonic() > stalled_after:
                    print(log.read_text()[-3000:], file=sys.stderr)
                    raise RuntimeError(f"stuck below {target:,} processed for 10 minutes")
                time.sleep(0.05)
            victim = k % len(workers)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = start_worker(env, log)
            print(f"SIGKILLed worker {k + 1} at {store.stats()['processed']:,} processed",
                  file=sys.stderr)
        drain_started = time.monotonic()  # the last kill
        publisher.join()
        for worker in workers:  # the survivors finish their batch, commit and leave
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=120)
        final = [start_worker(env, log, "--until-idle", "8") for _ in range(args.workers)]
        for worker in final:
            if worker.wait(timeout=1200) != 0:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise RuntimeError("a draining worker failed")
        drain_s = time.monotonic() - drain_started
        stats = store.stats()
        stuck_warnings = log.read_text(errors="replace").count("no partitions assigned for")
    figures = {
        "model": model,
        "tweets": args.tweets,
        "kills": args.kills,
        "workers": args.workers,
        "processed": stats["processed"],
        "topic_counts_sum": sum(stats["topics"].values()),
        "duplicates_recognised": stats["duplicates"],
        "labelled": stats["labelled"],
        "seconds": round(time.monotonic() - started, 1),
        "drain_seconds": round(drain_s, 1),
        "no_partition_warnings": stuck_warnings,
    }
    print(json.dumps(figures) if args.json else "\n".join(f"{k:>22}: {v}"
                                                          for k, v in figures.items()))
    ok = figures["processed"] == figures["topic_counts_sum"] == figures["labelled"] == args.tweets
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
