"""Replay a labelled CSV through the ``tweets`` topic, so ops can check the live system against
known labels. Ids are stable across replays of the same file (and across shuffles: a row's id is
fixed before the order is), which is what lets the worker recognise a second replay and leave the
counts alone (while the first replay's results live: ``FINTWEET_RESULT_RETENTION_S``, 30 days by
default; a replay after that counts again), and what makes resuming a broken replay
(``from_row``) harmless when it re-sends a few tweets the broker already had."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka.errors import KafkaError

from fintweet.core.data import DataError, LabelledData, row_id
from fintweet.core.keys import ID_PATTERN
from fintweet.core.labels import TASKS, num_classes
from fintweet.core.producer import PublishError, TweetProducer
from fintweet.core.schema import Tweet, utcnow
from fintweet.core.text import text_problem

INTERRUPT_FLUSH_S = 10.0  # Ctrl-C: how long the tweets already sent may take to be acknowledged


def replay_rows(data: LabelledData, *, task: str = "topic", shuffle: bool = False,
                seed: int = 0) -> LabelledData:
    """The rows in publishing order, each with its id: the CSV's, else :func:`row_id` of its
    place in the file (fixed before any shuffle). Ids and labels are checked here, so a bad file
    fails before the first tweet is sent instead of filling the dead-letter topic."""
    if task not in TASKS:
        raise DataError(f"{data.source}: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    ids = data.ids or [row_id(i + 1, text) for i, text in enumerate(data.texts)]
    pattern = re.compile(ID_PATTERN)
    for i, (tweet_id, text) in enumerate(zip(ids, data.texts, strict=True)):
        if not pattern.fullmatch(tweet_id):
            raise DataError(f"{data.source}: row {i + 1}: id {tweet_id[:80]!r} is not 1-64 of "
                            "A-Z a-z 0-9 _ . - (ids become Redis key parts)")
        problem = text_problem(text)
        if problem:
            raise DataError(f"{data.source}: row {i + 1}: {problem}")
    limit = num_classes(task)
    too_big = np.flatnonzero(data.labels >= limit)
    if too_big.size:
        row = int(too_big[0])
        raise DataError(f"{data.source}: row {row + 1}: label {int(data.labels[row])} is outside "
                        f"0..{limit - 1} for --task {task}")
    rows = LabelledData(texts=data.texts, labels=data.labels, source=data.source, ids=list(ids))
    if shuffle:
        rows = rows.subset(np.random.default_rng(seed).permutation(len(rows)))
    return rows


def tweets_from(data: LabelledData, task: str = "topic") -> Iterator[Tweet]:
    """One tweet per row, built (and stamped) only when the caller asks for it: after any
    pacing wait, so ``ingested_at`` measures the pipeline, not the replay's own schedule. A
    topic label goes to ``label``, a sentiment label to ``sentiment_label``."""
    field = "label" if task == "topic" else "sentiment_label"
    for index, (text, label) in enumerate(zip(data.texts, data.labels.tolist(), strict=True)):
        now = utcnow()
        truth = {field: label} if label >= 0 else {}
        yield Tweet(
            id=data.ids[index] if data.ids else row_id(index + 1, text),
            text=text,
            created_at=now,
            source="replay",
            ingested_at=now,
            **truth,
        )


class Acknowledged:
    """Which rows the broker acknowledged, so a broken replay can say where to resume: the first
    row not yet acknowledged (acknowledgements arrive out of order across partitions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: set[int] = set()
        self.first_missing = 0
        self.count = 0

    def callback(self, row: int) -> Callable[[Any], None]:
        def acked(_metadata: Any) -> None:
            with self._lock:
                self.count += 1
                self._done.add(row)
                while self.first_missing in self._done:
                    self._done.discard(self.first_missing)
                    self.first_missing += 1

        return acked


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
    task: str = "topic",
    shuffle: bool = False,
    seed: int = 0,
    from_row: int = 0,
    holdout: bool = False,
) -> ReplayResult:
    """Publish rows ``from_row`` (0-based, in publishing order) onwards, at most ``limit``.
    When the broker stops acknowledging, raise :class:`PublishError` saying how many were
    acknowledged and the flags that resume there: ``--from-row``, what is left of ``--limit``,
    ``--holdout`` when ``data`` is the CSV's holdout (rows count within it), ``--task``, the same
    shuffle.
    On Ctrl-C, what was sent gets up to ``INTERRUPT_FLUSH_S`` to be acknowledged, then a
    KeyboardInterrupt carries the same resume line (the CLI prints it and exits 130)."""
    from tqdm import tqdm

    rows = replay_rows(data, task=task, shuffle=shuffle, seed=seed)
    if from_row < 0 or from_row > len(rows):
        raise DataError(f"{data.source}: --from-row {from_row} is outside 0..{len(rows)}")
    rows = rows.subset(np.arange(from_row, len(rows)))
    total = len(rows) if limit is None else min(limit, len(rows))
    limiter = RateLimiter(rate)
    acked = Acknowledged()
    started = time.monotonic()

    def resume() -> str:
        """The flags that publish exactly what was not acknowledged yet."""
        flags = [f"--from-row {from_row + acked.first_missing}"]
        if limit is not None:
            flags.append(f"--limit {limit - acked.first_missing}")
        if holdout:
            flags.append("--holdout")
        if task != "topic":  # the default: a sentiment row resumed as topic spoils its label
            flags.append(f"--task {task}")
        return (f"resume with {' '.join(flags)}"
                f"{' and the same --shuffle --seed' if shuffle else ''}"
                " (ids are stable, so re-sent tweets are not counted twice)")

    try:
        with tqdm(total=total, unit="tweet", desc="replay", disable=not progress) as bar:
            tweets = tweets_from(rows, task)
            for row in range(total):
                limiter.wait()
                producer.publish(next(tweets)).add_callback(acked.callback(row))
                bar.update(1)
        producer.flush()
    except (KafkaError, PublishError) as exc:
        cause = exc.__cause__ or exc.__context__ if isinstance(exc, PublishError) else exc
        detail = type(cause).__name__ if cause is not None else str(exc).split(" (")[0]
        # A broker that failed may have lost what it acknowledged (the embedded one keeps
        # everything in memory): then only a replay from the start publishes every tweet.
        raise PublishError(
            f"replay stopped: {acked.count:,} of {total:,} tweets acknowledged before the broker "
            f"failed ({detail}); {resume()}; if the broker lost data (the embedded one keeps "
            "nothing over a restart), replay from the start instead: tweets already counted are "
            "not counted again") from None
    except KeyboardInterrupt:
        # What was sent gets its chance to be acknowledged, so the resume point is as late as
        # it can be; the CLI prints the message and exits 130.
        # A second Ctrl-C only cuts that wait short: the acknowledgements so far still make an
        # exact resume point, which a bare KeyboardInterrupt from here used to lose.
        with contextlib.suppress(KafkaError, PublishError, KeyboardInterrupt):
            producer.flush(INTERRUPT_FLUSH_S)
        raise KeyboardInterrupt(f"replay interrupted: {acked.count:,} of {total:,} tweets "
                                f"acknowledged; {resume()}") from None
    return ReplayResult(published=total, seconds=time.monotonic() - started)

