"""``fintweet stats``: what the workers have written to Redis."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fintweet.cli.options import add_redis_option, positive_int
from fintweet.core.config import TOP_TICKERS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="topic and sentiment counts, top tickers, dead letters and live accuracy from Redis",
        description="Read the counters the workers keep in Redis.",
    )
    add_redis_option(parser)
    parser.add_argument("--top", type=positive_int, default=TOP_TICKERS,
                        help="most named tickers to list (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _share(count: int, total: int) -> str:
    return f"{count / total:>6.1%}" if total else f"{'-':>6}"


def _accuracy_line(task: str, figures: dict[str, Any]) -> str:
    if figures["accuracy"] is None:
        return f"live {task} accuracy: n/a (no labelled tweets)"
    return (f"live {task} accuracy: {figures['accuracy']:.4f} on {figures['labelled']:,} "
            "labelled tweets")


def format_stats(stats: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """A table people can read; the demo prints the same one."""
    from fintweet.core.labels import SENTIMENT_NAMES

    lines = []
    total = stats["processed"]
    width = max([len(t) for t in stats["topics"]] + [len("topic")])
    short = {name: name[:4] for name in SENTIMENT_NAMES}  # Bear / Bull / Neut columns
    lines.append(f"{'topic':<{width}}  {'tweets':>7}  {'share':>6}  "
                 + "  ".join(f"{short[s]:>5}" for s in SENTIMENT_NAMES))
    for topic, count in stats["topics"].items():
        mix = stats["topic_sentiment"].get(topic, {})
        lines.append(f"{topic:<{width}}  {count:>7,}  {_share(count, total)}  "
                     + "  ".join(f"{mix.get(s, 0):>5,}" for s in SENTIMENT_NAMES))
    lines.append(f"{'total':<{width}}  {total:>7,}")
    lines.append("")
    lines.append("sentiment: " + ", ".join(
        f"{name} {count:,} ({_share(count, total).strip()})"
        for name, count in stats["sentiments"].items()))
    if stats["tickers"]:
        lines.append("top tickers: " + ", ".join(
            f"{t['ticker']} {t['count']:,} ("
            + "/".join(f"{t['sentiments'][s]}" for s in SENTIMENT_NAMES) + ")"
            for t in stats["tickers"]) + "   (counts: " + "/".join(SENTIMENT_NAMES) + ")")
    else:
        lines.append("top tickers: - (no cashtags seen)")
    for task, figures in stats["live_accuracy"].items():
        lines.append(_accuracy_line(task, figures))
    reasons = sorted(stats["dlq_reasons"].items(), key=lambda item: (-item[1], item[0]))
    lines.append(f"dead letters: {stats['dlq']:,}"
                 + (" (" + ", ".join(f"{reason} {count:,}" for reason, count in reasons)
                    + "; `fintweet dlq` lists them)" if reasons else ""))
    lines.append(f"duplicates ignored: {stats['duplicates']:,}")
    lines.append(f"models: {', '.join(f'{m} ({n:,})' for m, n in stats['models'].items()) or '-'}")
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:

    from fintweet.core.config import Settings
    from fintweet.core.store import CLIENT_TIMEOUTS, ResultStore, reporting_unreachable

    settings = Settings.from_env(redis_url=args.redis_url)
    store = ResultStore.from_url(settings.redis_url, settings.redis_prefix, **CLIENT_TIMEOUTS)
    with reporting_unreachable(settings.redis_url):
        stats = store.stats(top_tickers=args.top)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
