"""``fintweet dlq``: the dead letters on ``<topic>.dlq``, readable, and sent back once fixed."""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from fintweet.cli.options import add_kafka_options
from fintweet.cli.terminal import printable
from fintweet.core.errors import UserError

if TYPE_CHECKING:
    from fintweet.core.config import Settings
    from fintweet.ingest.dead_letters import StoredLetter

PREVIEW_CHARS = 100
DEFAULT_SHOWN = 20
NOT_A_LETTER = ""  # the counter's key for a record on the DLQ that is no dead letter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dlq", help="list the dead letters (messages the worker could not use), or requeue them",
        description="List the dead letters on <topic>.dlq, oldest first: when, why, where the "
                    "message came from (topic/partition@offset), the error, and the start of "
                    "the original message. With --requeue, publish the originals of the letters "
                    "of the given --reason back to <topic> (after fixing what rejected them): "
                    "keys and bytes as received, so a tweet already counted is not counted "
                    "again, and one still bad comes back as a second letter of the same "
                    "message, counted once; each message is sent once however many letters it "
                    "has. Letters whose copy was cut to fit a Kafka record, or unreadable, cannot "
                    "be requeued.")
    parser.add_argument("-n", type=int, default=None,
                        help=f"the last N matching letters (0: all; default {DEFAULT_SHOWN} "
                             "listed, and every matching one with --requeue)")
    parser.add_argument("--reason", default=None,
                        help="only letters of these reasons, comma-separated (e.g. not_json, "
                             "invalid_field, internal_error; `fintweet stats` counts them)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per letter: the stored letter and its "
                             "dlq_partition and dlq_offset")
    parser.add_argument("--requeue", action="store_true",
                        help="publish the matching letters' originals to the topic (needs "
                             "--reason)")
    add_kafka_options(parser, topic_role="the topic whose dead letters (<topic>.dlq) are read, "
                                         "and where --requeue publishes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fintweet.cli.options import shared_overrides
    from fintweet.core.config import Settings
    from fintweet.ingest.dead_letters import NoDeadLetterTopic, read_dead_letters

    if args.n is not None and args.n < 0:
        raise UserError(f"-n {args.n}: give 0 (all) or more")
    if args.reason is not None and not args.reason.strip(", "):
        raise UserError("--reason is empty: name one or more reasons (`fintweet stats` counts "
                        "them)" + ("" if args.requeue else
                                   ", or leave the option out to list every letter"))
    reasons = {r.strip() for r in args.reason.split(",") if r.strip()} if args.reason else set()
    if args.requeue and not reasons:
        raise UserError("--requeue needs --reason: say which letters to send back (a message "
                        "that is still bad would only become a dead letter again)")
    if args.requeue and args.json:
        raise UserError("--json lists letters; --requeue sends them: give one of the two")
    settings = Settings.from_env(**shared_overrides(args)).check("kafka_bootstrap", "topic")

    def wanted(stored: StoredLetter) -> bool:
        return not reasons or (stored.letter is not None and stored.letter.reason in reasons)

    n = args.n if args.n is not None else (0 if args.requeue else DEFAULT_SHOWN)
    try:
        chosen, total = latest(read_dead_letters(settings.kafka_bootstrap, settings.dlq_topic),
                               wanted, n)
    except NoDeadLetterTopic as missing:
        print(f"no {missing.dlq_topic} on {settings.kafka_bootstrap}: no worker reading "
              f"{settings.topic} has dead-lettered anything there; the dead-letter topics "
              f"there: {', '.join(missing.dlq_topics) or 'none'}", file=sys.stderr)
        return 0
    others = total.pop(NOT_A_LETTER, 0)
    unknown = sorted(reasons - set(total))
    if unknown and args.requeue and not reasons & set(total):  # a typo would send nothing, exit 0
        raise UserError(f"no letter has reason {', '.join(unknown)}, so nothing would be "
                        f"requeued; the reasons there: {', '.join(sorted(total)) or 'none'}")
    if unknown:
        print(f"warning: no letter has reason {', '.join(unknown)}; the reasons there: "
              f"{', '.join(sorted(total)) or 'none'}", file=sys.stderr)
    if args.requeue:
        return requeue(settings, chosen, reasons)
    for stored in chosen:
        print(as_json(stored) if args.json else as_line(stored))
    by_reason = ", ".join(f"{reason} {count:,}" for reason, count in total.most_common())
    print(f"{sum(total.values()):,} dead letter(s) on {settings.dlq_topic}"
          + (f" ({by_reason})" if by_reason else "")
          + (f" and {others:,} other record(s)" if others else "")
          + f"; {len(chosen):,} shown", file=sys.stderr)
    if not total and not others:  # while `fintweet stats` may count some: say why they differ
        print("(`fintweet stats` counts every letter ever recorded in Redis; a letter is listed "
              "here while the broker keeps it: past the topic's retention, or after a restart "
              "of the embedded broker, which keeps nothing, it is gone)", file=sys.stderr)
    return 0


def latest(letters: Iterator[StoredLetter], wanted: Callable[[StoredLetter], bool],
           n: int) -> tuple[list[StoredLetter], collections.Counter[str]]:
    """The last ``n`` wanted letters (0: all), oldest first, and every letter's count by
    reason. The last n of each partition hold the last n of all: memory bounded by
    partitions x n."""
    total: collections.Counter[str] = collections.Counter()
    kept: dict[int, collections.deque[StoredLetter]] = collections.defaultdict(
        lambda: collections.deque(maxlen=n or None))
    for stored in letters:
        total[stored.letter.reason if stored.letter else NOT_A_LETTER] += 1
        if wanted(stored):
            kept[stored.partition].append(stored)
    ordered = sorted((stored for part in kept.values() for stored in part), key=written)
    return (ordered[-n:] if n else ordered), total


def requeue(settings: Settings, chosen: list[StoredLetter], reasons: set[str]) -> int:
    from fintweet.core.producer import PUBLISH_TIMEOUTS, TweetProducer
    from fintweet.ingest import dead_letters

    result = dead_letters.RequeueResult()
    try:
        with TweetProducer(settings.kafka_bootstrap, settings.topic,
                           **PUBLISH_TIMEOUTS) as producer:
            dead_letters.requeue(chosen, producer.publish_raw, result)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted after handing {result.requeued:,} letters to the producer, of "
            f"{len(chosen):,} chosen (the last ones may not have reached the broker); running "
            "it again sends them all again, and a tweet already counted is not counted twice"
        ) from None
    print(f"requeued {result.requeued:,} dead letter(s) ({', '.join(sorted(reasons))}) to "
          f"{settings.topic}"
          + (f"; {result.no_copy:,} had no usable copy (cut to fit, or unreadable) and "
             f"{'was' if result.no_copy == 1 else 'were'} left" if result.no_copy else "")
          + (f"; {result.repeats:,} repeated a message sent once (requeued before, and still "
             "bad)" if result.repeats else ""),
          file=sys.stderr)
    return 0


def written(stored: StoredLetter) -> tuple[int, int, int]:
    """Oldest first across partitions, as written to the DLQ (in offset order within each)."""
    return stored.timestamp_ms, stored.partition, stored.offset


def as_line(stored: StoredLetter) -> str:
    letter = stored.letter
    if letter is None:
        return f"{stored.partition}@{stored.offset}  (not a dead letter: {len(stored.raw):,} bytes)"
    original = stored.original
    if original is None:
        preview = "(no copy: cut to fit)" if letter.truncated else "(no copy: unreadable)"
    else:
        text = original.decode("utf-8", errors="replace")
        preview = (text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")
                   if text else "(empty message)")
    return "  ".join((
        letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"), letter.reason,
        f"{letter.topic}/{letter.partition}@{letter.offset}",
        printable(letter.error[:PREVIEW_CHARS]), printable(preview)))


def as_json(stored: StoredLetter) -> str:
    body = (stored.letter.model_dump(mode="json") if stored.letter is not None
            else {"raw": stored.raw.decode("utf-8", errors="replace")})
    return json.dumps({"dlq_partition": stored.partition, "dlq_offset": stored.offset, **body},
                      ensure_ascii=False)
