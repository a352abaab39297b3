"""``fintweet show ID``: one stored result, without Redis tooling."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from fintweet.cli.options import add_redis_option
from fintweet.cli.terminal import printable
from fintweet.core.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show", help="print one tagged tweet by id",
        description="Print the stored result of one tweet: topic, sentiment, links, timestamps.",
    )
    parser.add_argument("id", help="tweet id")
    parser.add_argument("--json", action="store_true", help="print the stored JSON")
    add_redis_option(parser)
    parser.set_defaults(func=run)


class NotFound(UserError, LookupError):
    """No stored result under the id asked for."""


def format_result(result: dict[str, Any]) -> str:
    """The result as aligned ``field: value`` lines; what people read before the JSON. Values
    come from a tweet (its text, links, id), so their control characters are escaped."""
    sentiment = result.get("sentiment") or {}
    links = result.get("links") or {}
    lines = [
        ("id", result.get("id")),
        ("text", result.get("text")),
        ("topic", f"{result.get('topic')} ({result.get('confidence', 0):.1%})"),
        ("top-3", ", ".join(f"{t['topic']} {t['p']:.1%}" for t in result.get("top3", []))),
    ]
    if sentiment:
        lines.append(("sentiment",
                      f"{sentiment.get('label')} ({sentiment.get('confidence', 0):.1%})"))
    if "label" in result:
        lines.append(("true topic", result["label"]))
    if result.get("true_sentiment"):
        lines.append(("true sentiment", result["true_sentiment"].get("label")))
    for kind in ("cashtags", "mentions", "hashtags", "urls"):
        if links.get(kind):
            lines.append((kind, " ".join(links[kind])))
    for key in ("model", "source", "created_at", "ingested_at", "processed_at"):
        if result.get(key) is not None:
            lines.append((key, result[key]))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {printable(v)}" for k, v in lines)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.keys import ID_PATTERN
    from fintweet.core.reader import ResultReader
    from fintweet.core.store import CLIENT_TIMEOUTS, redacted, reporting_unreachable

    if not re.fullmatch(ID_PATTERN, args.id):  # no stored id is anything else
        raise NotFound(f"{printable(args.id)!r} is not a tweet id (ids are 1-64 of A-Z a-z 0-9 "
                       "_ . -); `fintweet tail` lists recent ids")
    settings = Settings.from_env(redis_url=args.redis_url)
    reader = ResultReader.from_url(settings.redis_url, settings.redis_prefix, **CLIENT_TIMEOUTS)
    with reporting_unreachable(settings.redis_url):
        result = reader.result(args.id)
    if result is None:
        raise NotFound(f"no result for tweet id {args.id!r} in {redacted(settings.redis_url)} "
                       f"(prefix {settings.redis_prefix!r}); `fintweet tail` lists recent ids")
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_result(result))
    return 0
