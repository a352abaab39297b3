"""Replay a labelled CSV through the ``tweets`` topic, so ops can check the live system against
known labels. Ids are stable across replays of the same file, which is what lets the worker
recognise a second replay and leave the counts alone."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fintweet.core.data import LabelledData
from fintweet.core.schema import Tweet, utcnow
from fintweet.ingest.producer import TweetProducer


def row_id(row_number: int, text: str) -> str:
    """An id for a CSV row without an ``id`` column: the row number and the text, hashed. The row
    number keeps two identical tweets in one file apart (the dataset has such rows, and each is
    one labelled example)."""
    digest = hashlib.sha256(f"{row_number}\x1f{text}".encode()).hexdigest()
    return f"r{digest[:24]}"


def tweets_from(data: LabelledData) -> Iterator[Tweet]:
    """One tweet per row, built (and stamped) only when the caller asks for it: after any
    pacing wait, so ``ingested_at`` measures the pipeline, not the replay's own schedule."""
    for index, (text, label) in enumerate(zip(data.texts, data.labels.tolist(), strict=True)):
        now = utcnow()
        yield Tweet(
            id=data.ids[index] if data.ids else row_id(index + 1, text),
            text=text,
            created_at=now,
            source="replay",
            label=label if label >= 0 else None,
            ingested_at=now,
        )


class RateLimiter:
    """Paces a loop at ``rate`` iterations per second (no limit when ``rate`` is None). Waits
    against a schedule rather than a fixed gap, so a slow iteration is caught up, not lost."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._count = 0

    def wait(self) -> None:
        if self.rate is None:
            return
        self._count += 1
        due = self._start + self._count / self.rate
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)


@dataclass(frozen=True)
class ReplayResult:
    published: int
    seconds: float


def replay(
    data: LabelledData,
    producer: TweetProducer,
    *,
    rate: float | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> ReplayResult:
    from tqdm import tqdm

    total = len(data) if limit is None else min(limit, len(data))
    limiter = RateLimiter(rate)
    started = time.monotonic()
    with tqdm(total=total, unit="tweet", desc="replay", disable=not progress) as bar:
        tweets = tweets_from(data)
        for _ in range(total):
            limiter.wait()
            producer.publish(next(tweets))
            bar.update(1)
    producer.flush()
    return ReplayResult(published=total, seconds=time.monotonic() - started)

