"""``fintweet eda``: an exploratory HTML report on a labelled CSV (topic or sentiment)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fintweet.cli.options import directory, positive_int, writable_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eda",
        help="exploratory report on a labelled CSV (PNGs, index.html, summary.json)",
        description=(
            "Profile a labelled CSV (columns text,label; topic or sentiment labels): class "
            "distribution, tweet lengths, a word cloud, the most distinctive terms per class, "
            "and how often tweets carry URLs, cashtags, mentions and hashtags. Writes PNGs, "
            "index.html and summary.json to --out."
        ),
    )
    parser.add_argument("--data", type=Path, required=True, metavar="CSV",
                        help="labelled CSV with columns text,label")
    parser.add_argument("--out", type=directory, required=True, metavar="DIR",
                        help="directory for the report (created if missing)")
    parser.add_argument("--task", choices=("topic", "sentiment"), default=None,
                        help="what the labels are (default: sentiment when every label is "
                             "0-2, else topic)")
    parser.add_argument(
        "--min-count", type=positive_int, default=3, metavar="N",
        help="rank a term for a class only if at least N of its tweets contain it (default 3)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.data import load_labelled_csv
    from fintweet.core.labels import looks_like_sentiment, sentiment_mixup
    from fintweet.trainer.eda import guess_task, profile, write_report

    data = load_labelled_csv(args.data, task=args.task or "topic")
    task = args.task or guess_task(data.labels)
    if not args.quiet and args.task is None:
        print(f"eda: labels read as {task} classes (--task to say otherwise)", file=sys.stderr)
    if args.task == "topic" and looks_like_sentiment(data.labels):  # as evaluate and replay warn
        print(f"warning: {sentiment_mixup(str(args.data))}; if it is the sentiment CSV, leave "
              "--task out or give --task sentiment", file=sys.stderr, flush=True)
    writable_folder(args.out, "--out")
    result = profile(data, task=task, progress=not args.quiet, min_count=args.min_count)
    try:
        write_report(result, args.out, progress=not args.quiet)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {args.out} may hold part of a report (index.html "
                                "and summary.json come last): run it again") from None
    print(f"{args.out / 'index.html'}")
    return 0
