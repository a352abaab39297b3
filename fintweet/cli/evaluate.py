"""``fintweet evaluate``: score a saved model on a labelled CSV."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a saved model on a labelled CSV (accuracy, F1, per-topic table, plots)",
        description=(
            "Predict every row of a labelled CSV (columns text,label) with a saved model and "
            "print accuracy, macro-F1, weighted-F1 and a per-topic precision/recall/F1 table. "
            "Progress goes to stderr, so --json output on stdout can be piped."
        ),
    )
    parser.add_argument(
        "--model", type=Path, default=None, metavar="DIR",
        help="model artifact: <models>/<kind>, <models>/<kind>/current or a version directory "
             "(default: $FINTWEET_MODELS_DIR/$FINTWEET_MODEL, i.e. models/ann)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, metavar="CSV",
        help="labelled CSV with columns text,label (labels 0-19 or LABEL_n)",
    )
    parser.add_argument(
        "--holdout", action="store_true",
        help="score only the deterministic 15%% stratified holdout of CSV: the rows a model "
             "trained on this same CSV never saw",
    )
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the table")
    parser.add_argument(
        "--report-dir", type=Path, default=None, metavar="DIR",
        help="also write confusion_matrix.png and per_class_f1.png into DIR",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=None, metavar="N",
        help="tweets per predict call (default: $FINTWEET_BATCH_SIZE, 512)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.data import load_labelled_csv, split_train_holdout
    from fintweet.trainer.evaluate import format_report, predict_in_batches, score

    settings = Settings()
    # The CSV is checked before the model loads: a typo in --data should fail in milliseconds,
    # not after TensorFlow has started.
    data = load_labelled_csv(args.data)
    if args.holdout:
        _, data = split_train_holdout(data)
    model_path = args.model or settings.models_dir / settings.model

    from fintweet.models import load

    model = load(model_path)
    refit = bool(model.metadata.get("refit_on_holdout"))
    if args.holdout and refit:
        print(f"warning: {model.name}@{model.version} was refit on train + holdout; its score on "
              "the holdout is optimistic (train with --no-refit to keep the holdout unseen)",
              file=sys.stderr)
    prediction = predict_in_batches(
        model, data.texts, batch_size=args.batch_size or settings.batch_size
    )
    evaluation = score(data.labels, prediction.probabilities)
    title = f"{model.name} {model.version} on {args.data.name}" + (" (holdout)" if args.holdout
                                                                  else "")
    figures = []
    if args.report_dir is not None:
        from fintweet.trainer.evaluate import write_report_figures

        figures = write_report_figures(evaluation, args.report_dir, title)

    if args.json:
        result = {
            **evaluation.as_dict(),
            "model": {"name": model.name, "version": model.version, "path": str(model_path),
                      "refit_on_holdout": refit},
            "data": {"path": str(args.data), "holdout": args.holdout,
                     "fingerprint": data.fingerprint()},
            "predict_seconds": prediction.seconds,
            "tweets_per_second": prediction.tweets_per_second,
            "figures": [str(path) for path in figures],
        }
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0

    header = [
        ("model", f"{model.name} {model.version} ({model_path})"),
        ("data", f"{args.data}" + (" (holdout rows only)" if args.holdout else "")),
        ("speed", f"{prediction.tweets_per_second:,.0f} tweets/s "
                  f"({prediction.seconds:.2f} s, batch {args.batch_size or settings.batch_size})"),
    ]
    print(format_report(evaluation, header))
    for path in figures:
        print(f"wrote {path}")
    return 0
