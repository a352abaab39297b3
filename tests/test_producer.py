"""The producer after an outage, on a broker of the test's own that is stopped (SIGSTOP) and
resumed: kafka-python 3.0's client whose batch expired meanwhile never sends again, so the
producer swaps in a new client (``renew``) or gives up on the old one (``abandon``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fintweet.core.producer import PublishError, TweetProducer
from fintweet.devstack.stack import EmbeddedStack

# Short waits: a record expires 3 s after it was sent while the broker is stopped.
QUICK = {"max_block_ms": 2_000, "request_timeout_ms": 1_000, "delivery_timeout_ms": 3_000}


@pytest.fixture
def stuck(tmp_path: Path) -> Iterator[TweetProducer]:
    """A producer whose client lived through an outage: a record expired while the broker was
    stopped, the broker is back, and five records sent since are held, never sent."""
    with EmbeddedStack(tmp_path / "state", kafka_port=0, redis_port=0, topics=("t",)) as own:
        producer = TweetProducer(own.kafka_bootstrap, "t", **QUICK)
        try:
            producer.publish_raw("k0", b"before")
            producer.flush(10)
            broker = own.pids()["kafka"]
            os.kill(broker, signal.SIGSTOP)
            try:
                producer.publish_raw("k1", b"during")
                with pytest.raises(PublishError, match="1 tweet"):
                    producer.flush(20)
            finally:
                os.kill(broker, signal.SIGCONT)
            for i in range(5):
                producer.publish_raw(f"after{i}", b"after")
            with pytest.raises(PublishError, match="did not acknowledge in 3"):
                producer.flush(3)  # held: neither sent nor failed
            yield producer
        finally:
            producer._close_client(timeout=1)


def test_renew_counts_what_the_old_client_dropped_and_the_new_one_sends(stuck) -> None:
    """The old client's five held records fail as it is closed: they are counted, not left to
    fail the new client's first flush."""
    assert stuck.renew() == 5
    stuck.publish_raw("new", b"new")
    stuck.flush(10)  # nothing of the old client's raised here
    assert stuck.published == 2  # "before" and "new"


def test_an_abandoned_producer_flushes_and_closes_at_once(stuck) -> None:
    """A stop during an outage: the held records would keep the flush waiting out its timeout,
    then fail it, and the close after it too."""
    started = time.monotonic()
    stuck.abandon()
    stuck.flush(60)
    stuck.close(30)
    assert time.monotonic() - started < 20  # not the flush's 60 s nor the close's 30 s
    with pytest.raises(PublishError, match="abandoned"):
        stuck.publish_raw("later", b"x")
