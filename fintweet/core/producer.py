"""Publishing to Kafka: tweets from the CSV replay and the X ingester, dead letters from the worker
and `fintweet dlq --requeue`. In the core because all of them publish the same way.

``acks=all`` and idempotence-friendly settings: a tweet counts as published only once every
in-sync replica has it. Send failures are collected from the futures and raised at ``flush()`` so
a caller cannot finish "successfully" with tweets silently missing; a ``send()`` that gives up on
a dead broker (KafkaTimeoutError) is a :class:`PublishError` at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fintweet.core.config import DLQ_SUFFIX
from fintweet.core.errors import UserError
from fintweet.core.kafka_errors import any_broker_accepts, connect
from fintweet.core.schema import Tweet

log = logging.getLogger(__name__)


# The ingest commands' bounded waits: a broker that stops acknowledging ends `ingest replay` or
# `ingest x` in under a minute with one line (a replay's names where to resume), not a traceback
# after kafka-python's two minutes. delivery_timeout_ms must exceed linger + request timeout.
PUBLISH_TIMEOUTS = {"max_block_ms": 15_000, "request_timeout_ms": 10_000,
                    "delivery_timeout_ms": 30_000}


# How long a client retired after an outage may take to fail its stuck batches.
RETIRE_JOIN_S = 2.0


class PublishError(UserError, RuntimeError):
    """Some tweets were not acknowledged by the broker."""


class TweetProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        linger_ms: int = 5,
        on_published: Any = None,
        **kafka_config: Any,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self._on_published = on_published
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []
        self.published = 0
        kafka_config.setdefault("bootstrap_timeout_ms", 10_000)
        self._factory = lambda: KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=linger_ms,
            retries=10,
            max_in_flight_requests_per_connection=1,  # keeps order per partition across retries
            batch_size=256 * 1024,
            **kafka_config,
        )
        self._producer = connect("producer", bootstrap_servers, self._factory)
        # Which client sent a record: a failure the client retired by renew() reports after it
        # was replaced belongs to the outage already dealt with, not to the new client's sends.
        self._generation = 0
        self._abandoned = False

    def reachable(self) -> bool:
        """Whether a bootstrap broker accepts connections: kafka-python reconnects by itself,
        and a caller waiting out an outage needs to know when trying again is worth it."""
        return any_broker_accepts(self.bootstrap_servers)

    def renew(self) -> int:
        """A new kafka-python client in place of this one, for after an outage: kafka-python
        3.0's producer that lived through a broker that stopped answering may never send again
        (against a SIGSTOPped and resumed Tansu, its flush timed out with nothing failed, for
        as long as it was tried), while a new one sends at once. Returns how many records were
        not acknowledged since the last flush: failed, or dropped with the old client. Their
        callers must publish them again."""
        new = connect("producer", self.bootstrap_servers, self._factory)
        with self._lock:
            old, self._producer = self._producer, new
        # Its stuck batches fail as it closes, within the join, and are counted below; one
        # later than that is the retired generation's, and ignored. (The caller's thread is
        # the only one sending: the new client has sent nothing yet.)
        self._close_client(timeout=0, client=old, join_s=RETIRE_JOIN_S)
        with self._lock:
            self._generation += 1
            self._abandoned = False
            failures, self._failures = self._failures, []
        return len(failures)

    def abandon(self) -> None:
        """Give up on the current client without waiting for it (a stop during an outage, when
        it cannot deliver): what it holds is dropped, and later flushes and the close return at
        once instead of waiting out their timeouts on a client known to be stuck. Nothing can
        be published after it until :meth:`renew`."""
        with self._lock:
            self._abandoned = True
            self._generation += 1
        self._close_client(timeout=0, join_s=RETIRE_JOIN_S)

    def publish(self, tweet: Tweet) -> Any:
        return self.publish_raw(tweet.id, tweet.to_bytes())

    def publish_raw(self, key: str | bytes | None, value: bytes, topic: str | None = None,
                    headers: list[tuple[str, bytes]] | None = None) -> Any:
        """Send bytes as they are (the worker's dead letters, requeued originals, the
        malformed-message tests). Returns kafka-python's future, for callers that track each
        record's acknowledgement."""
        from kafka.errors import KafkaTimeoutError

        raw_key = key.encode() if isinstance(key, str) else key
        if self._abandoned:
            raise PublishError(f"the producer was abandoned in an outage; {key!r} not sent")
        try:
            future = self._producer.send(topic or self.topic, key=raw_key, value=value,
                                         headers=headers)
        except KafkaTimeoutError as exc:
            # send() itself waits for the topic's metadata or for room in the buffer, and gives
            # up with this when the broker is gone: the X ingester had no handler for it, and
            # showed a traceback. (Other errors of send() stay as they are: a record too large
            # is its caller's to handle, as the dead-letter sink does.)
            raise PublishError(f"the broker did not take {key!r} ({type(exc).__name__}); is it "
                               f"up? {self.published} tweet(s) acknowledged before") from exc
        future.add_callback(self._acked)
        # kafka-python calls errback(*args, exception): the generation and key come first.
        future.add_errback(self._failed, self._generation,
                           key if isinstance(key, str) else repr(key))
        return future

    def _acked(self, _metadata: Any) -> None:
        with self._lock:
            self.published += 1
        if self._on_published is not None:
            self._on_published()

    def _failed(self, generation: int, key: str, exc: BaseException) -> None:
        with self._lock:
            if generation != self._generation:
                log.debug("publish of %s failed with a retired client: %s", key, exc)
                return
            first = not self._failures
            self._failures.append((key, exc))
        # One line per outage, not one per record: a dead broker fails thousands at once, and
        # flush() reports the count.
        if first:
            log.error("publish of %s failed: %s (later failures are counted, not logged)", key,
                      exc)
        else:
            log.debug("publish of %s failed: %s", key, exc)

    def flush(self, timeout: float | None = 60.0) -> None:
        from kafka.errors import KafkaError

        if self._abandoned:
            return

        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:  # e.g. KafkaTimeoutError: the broker stopped answering
            with self._lock:
                lost = len(self._failures)
            raise PublishError(f"the broker did not acknowledge in {timeout}s "
                               f"({type(exc).__name__}); {self.published} acknowledged, "
                               f"{lost} failed so far") from None
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            sample = ", ".join(f"{key}: {exc}" for key, exc in failures[:3])
            raise PublishError(f"{len(failures):,} tweet(s) were not acknowledged ({sample})")

    def close(self, timeout: float = 30.0) -> None:
        if self._abandoned:
            return
        try:
            self.flush(timeout)
        finally:
            self._close_client(timeout)

    def _close_client(self, timeout: float, client: Any = None,
                      join_s: float | None = None) -> None:
        """kafka-python's ``close`` flushes first and raises when records are still pending (a
        dead broker); raised from a ``finally`` or ``__exit__`` that would replace the error
        that says what happened and where to resume, so it is logged instead. ``client``: one
        :meth:`renew` replaced, else the current one; ``join_s``: how long its forced close may
        take (default ``timeout``)."""
        from kafka.errors import KafkaError

        client = client or self._producer
        try:
            client.close(timeout=timeout)
        except KafkaError as exc:
            log.debug("closing the producer with records unsent: %s", exc)
            # The failed flush leaves kafka-python's I/O thread retrying the dead broker, and the
            # client's __del__ would flush and raise again later, in whatever code runs then
            # (seen as an unraisable-exception warning in an unrelated test). Force-closing the
            # sender (kafka-python 3.x; no public call does it) fails the queued batches, whose
            # callers were already told, so a second close completes.
            sender = getattr(client, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(timeout if join_s is None else join_s)
            try:
                client.close(timeout=0)
            except KafkaError as again:
                log.debug("the producer did not close: %s", again)

    def __enter__(self) -> TweetProducer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: do not wait out another flush timeout to report it
            self._close_client(timeout=1)


def absent_topic_warning(bootstrap_servers: str, topic: str) -> str | None:
    """A warning when ``topic`` is not on the broker yet. Publishing would create it (brokers
    allow that by default, the embedded one too) and nothing would say that no worker reads it:
    a misspelt ``--topic`` replayed thousands of tweets into a topic of their own. Checked by
    listing the topics, which creates none; a broker that does not answer the listing is the
    publish's to report, so then nothing is said here."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers,
                                 request_timeout_ms=15_000, bootstrap_timeout_ms=5_000)
        try:
            topics = consumer.topics()
        finally:
            consumer.close()
    except KafkaConfigurationError:
        raise  # this code's settings, not the broker's answer
    except KafkaError as exc:
        log.debug("could not list the topics on %s: %s", bootstrap_servers, exc)
        return None
    if topic in topics:
        return None
    others = sorted(t for t in topics if not t.startswith("__") and not t.endswith(DLQ_SUFFIX))
    return (f"topic {topic!r} does not exist on {bootstrap_servers}: a broker that creates "
            "topics on use creates it with the first tweet (one that does not refuses them), "
            f"and only a worker started with --topic {topic} (or FINTWEET_TOPIC={topic}) reads "
            "it; the topics there: "
            + (", ".join(others[:10]) + (", …" if len(others) > 10 else "") if others
               else "none"))
