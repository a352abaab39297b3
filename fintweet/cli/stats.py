"""``fintweet stats``: what the workers have written to Redis."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stats", help="per-topic counts, dead letters and live accuracy from Redis",
        description="Read the counters the workers keep in Redis.",
    )
    parser.add_argument("--redis-url", default=None, help="Redis URL (env FINTWEET_REDIS_URL)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def format_stats(stats: dict, extra: dict | None = None) -> str:
    """A table people can read; the demo prints the same one."""
    lines = []
    total = stats["processed"]
    width = max([len(t) for t in stats["topics"]] + [len("topic")])
    lines.append(f"{'topic':<{width}}  {'tweets':>7}  {'share':>6}")
    for topic, count in stats["topics"].items():
        share = count / total if total else 0.0
        lines.append(f"{topic:<{width}}  {count:>7,}  {share:>6.1%}")
    lines.append(f"{'total':<{width}}  {total:>7,}")
    lines.append("")
    accuracy = stats["accuracy"]
    acc = "n/a (no labelled tweets)" if accuracy is None else (
        f"{accuracy:.4f} on {stats['labelled']:,} labelled tweets")
    lines.append(f"live accuracy: {acc}")
    lines.append(f"dead letters: {stats['dlq']:,}"
                 + (f" {stats['dlq_reasons']}" if stats["dlq_reasons"] else ""))
    lines.append(f"duplicates ignored: {stats['duplicates']:,}")
    lines.append(f"models: {', '.join(f'{m} ({n:,})' for m, n in stats['models'].items()) or '-'}")
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.store import ResultStore

    settings = Settings().override(redis_url=args.redis_url)
    stats = ResultStore.from_url(settings.redis_url, settings.redis_prefix).stats()
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
