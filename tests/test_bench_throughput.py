"""bench/throughput.py --workers N: the rate it prints for several worker processes is only
meaningful if they really share the topic in one group and every tweet is counted once; checked
on the real broker and Redis with the session's ANN."""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path

import pytest

from fintweet.core.keys import Keys

from .helpers import make_tweets, publish


def load_bench(repo_root: Path):
    spec = importlib.util.spec_from_file_location("bench_throughput",
                                                  repo_root / "bench" / "throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_worker_processes_share_the_topic_and_count_each_tweet_once(
        stack, topic, redis_client, models_dir, repo_root, tmp_path) -> None:
    bench = load_bench(repo_root)
    tweets = make_tweets(3000, prefix="bt", labelled=False)
    warmup = tmp_path / "warmup.csv"  # the processes warm their model up on these texts
    with warmup.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t.text, 0] for t in tweets[:50])
    publish(stack.kafka_bootstrap, topic, tweets)
    args = argparse.Namespace(workers=2, models=str(models_dir), model="ann", batch_size=256,
                              transformer_runtime=None, data=str(warmup))
    rate, per_process = bench.end_to_end_processes(stack, topic, len(tweets), args)
    assert rate > 0
    assert len(per_process) == 2 and all(n > 0 for n in per_process)  # both took partitions
    assert sum(per_process) == len(tweets)
    processed = redis_client.get(Keys(f"bench:{topic}:worker").processed)
    assert int(processed) == len(tweets)


def test_a_worker_process_that_dies_says_why(stack, topic, repo_root, tmp_path) -> None:
    bench = load_bench(repo_root)
    args = argparse.Namespace(workers=2, models=str(tmp_path), model="ann", batch_size=None,
                              transformer_runtime=None, data=None)
    with pytest.raises(RuntimeError, match=r"failed to start \(exit 1\): .*no such model artifact"):
        bench.end_to_end_processes(stack, topic, 10, args)


def test_the_children_start_only_once_their_shares_are_one_generations(repo_root) -> None:
    complete = load_bench(repo_root).shares_complete
    assert complete({0: ({0, 1}, 4), 1: ({2, 3}, 4)}, members=2)
    assert not complete({0: ({0, 1, 2, 3}, 4)}, members=2)  # the second has not reported
    assert not complete({0: ({0, 1, 2, 3}, 4), 1: ({2, 3}, 4)}, members=2)  # the first's is old
    assert not complete({0: ({0, 1, 2, 3}, 4), 1: (set(), 4)}, members=2)  # one holds nothing
    assert not complete({0: ({0}, 4), 1: ({2, 3}, 4)}, members=2)  # partition 1 not yet held
