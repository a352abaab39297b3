"""``fintweet evaluate``: score a saved model's topic or sentiment head on a labelled CSV."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fintweet.cli.options import (
    add_transformer_runtime_option,
    directory,
    positive_int,
    writable_folder,
)
from fintweet.core.config import DEFAULT_BATCH_SIZE

if TYPE_CHECKING:
    from fintweet.models.base import TwoHeadModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a saved model on a labelled CSV (accuracy, F1, per-class table, plots)",
        description=(
            "Predict every row of a labelled CSV (columns text,label) with a saved model and "
            "print accuracy, macro-F1, weighted-F1 and a per-class precision/recall/F1 table "
            "for the --task head, each headline figure with its 95% bootstrap interval. "
            "Macro-F1 averages over the classes the CSV has rows of; when some have none, the "
            "report says over how many (macro_f1_classes in --json). With "
            "--baseline, a second model is scored on the same rows and the difference comes "
            "with a paired interval (the one to read when comparing two variants). When a model "
            "trained on these tweets, the first line says so. Progress goes to stderr, so "
            "--json output on stdout can be piped."
        ),
    )
    parser.add_argument(
        "--model", type=Path, default=None, metavar="DIR",
        help="model artifact: <models>/<kind>, <models>/<kind>/current or a version directory "
             "(default: $FINTWEET_MODELS_DIR/$FINTWEET_MODEL, i.e. models/ann)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, metavar="CSV",
        help="labelled CSV with columns text,label (topic 0-19 or sentiment 0-2, or LABEL_n)",
    )
    parser.add_argument("--task", choices=("topic", "sentiment"), default="topic",
                        help="which head to score against the CSV's labels (default topic)")
    parser.add_argument(
        "--holdout", action="store_true",
        help="score only the deterministic 15%% stratified holdout of CSV: the rows a model "
             "trained on this same CSV with --no-refit (and without --max-rows) never saw; "
             "evaluate warns otherwise",
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, metavar="DIR",
        help="a second model artifact to compare with: scored on the same rows, the report "
             "adds its accuracy and macro-F1 and the difference (model - baseline) with a 95%% "
             "paired bootstrap interval",
    )
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the table")
    parser.add_argument(
        "--report-dir", type=directory, default=None, metavar="DIR",
        help="also write <task>_confusion_matrix.png and <task>_per_class_f1.png into DIR",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N",
        help="tweets per predict call (default: $FINTWEET_BATCH_SIZE, else "
             f"{DEFAULT_BATCH_SIZE} as the worker)",
    )
    add_transformer_runtime_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.config import model_path as served_model
    from fintweet.core.data import DataError, load_labelled_csv, stratified_holdout
    from fintweet.core.labels import looks_like_sentiment, sentiment_mixup

    settings = Settings.from_env(transformer_runtime=args.transformer_runtime).check(
        "transformer_runtime", *(() if args.batch_size else ("batch_size",)),
        *(() if args.model else ("models_dir", "model")))
    batch_size = args.batch_size or settings.batch_size
    # The CSV is checked before the model loads: a typo in --data should fail in milliseconds,
    # not after TensorFlow has started.
    data = load_labelled_csv(args.data, task=args.task)
    if args.task == "topic" and looks_like_sentiment(data.labels):
        print(f"warning: {sentiment_mixup(args.data)}; if it is the sentiment CSV, evaluate it "
              "with --task sentiment", file=sys.stderr, flush=True)
    csv_fingerprint = data.fingerprint()
    training_texts: set[str] | None = None
    if args.holdout:
        from fintweet.core.text import prepare_model_texts

        train_rows, holdout_rows = stratified_holdout(data.labels)
        training_texts = set(prepare_model_texts(data.subset(train_rows).texts))
        data = data.subset(holdout_rows)
        if len(data) == 0:
            raise DataError(f"{args.data}: too few rows for --holdout (it keeps 15% of each "
                            "label); evaluate the whole file without it")
    model_path = args.model or served_model(settings.models_dir, settings.model)
    if args.report_dir is not None:
        writable_folder(args.report_dir, "--report-dir")

    from fintweet.core.text import prepare_model_texts
    from fintweet.models import load
    from fintweet.models.scoring import accuracy, macro_f1, paired_difference, score
    from fintweet.trainer.evaluate import (
        Comparison,
        format_report,
        model_summary,
        predict_in_batches,
    )

    runtime = settings.transformer_runtime or None
    model = load(model_path, transformer_runtime=runtime)
    baseline = load(args.baseline, transformer_runtime=runtime) if args.baseline else None

    def seen_by(classifier: TwoHeadModel) -> str | None:
        """Why ``classifier`` has seen these tweets (None: it has not), said first."""
        info = classifier.info
        seen = (info.has_seen(args.task, csv_fingerprint, args.holdout,
                              rows=(data.texts, data.labels)) if info else None)
        if seen:
            warning = (f"warning: {classifier.name}@{classifier.version} has seen these tweets "
                       f"({seen}); {'its' if classifier is baseline else 'the'} figures below "
                       "are optimistic")
            print(warning, file=sys.stderr if args.json else sys.stdout, flush=True)
        return seen

    seen = seen_by(model)
    baseline_seen = seen_by(baseline) if baseline is not None else None
    texts = prepare_model_texts(data.texts)
    prediction = predict_in_batches(model, texts, batch_size=batch_size)
    evaluation = score(args.task, data.labels, prediction.proba.task(args.task))
    unseen = None
    # Rows whose text the model trained on, as one of either task's rows: from the hashes its
    # artifact keeps, and with --holdout from the CSV's own training part too. 15% of the topic
    # holdout repeat a training row's text once prepared (templated headlines differing in
    # their links), and every model gets nearly all of those right: the rest is what it
    # generalises to.
    model_texts = model.info.trained_texts() if model.info is not None else None
    if training_texts is not None or model_texts is not None:
        from fintweet.core.data import text_hashes

        repeat = np.zeros(len(texts), dtype=bool)
        if training_texts is not None:
            repeat |= np.array([text in training_texts for text in texts], dtype=bool)
        if model_texts is not None:
            repeat |= np.isin(text_hashes(texts), model_texts)
        fresh = ~repeat
        labels = np.asarray(data.labels)[fresh]
        predicted = prediction.proba.task(args.task).argmax(axis=1)[fresh]
        unseen = {"n": int(fresh.sum()), "repeats": int((~fresh).sum()),
                  "accuracy": accuracy(labels, predicted) if fresh.any() else None,
                  "macro_f1": macro_f1(labels, predicted) if fresh.any() else None}
    comparison = None
    if baseline is not None:
        baseline_proba = predict_in_batches(baseline, texts, batch_size=batch_size).proba
        comparison = Comparison(
            baseline, args.baseline, baseline_seen is not None,
            score(args.task, data.labels, baseline_proba.task(args.task)),
            paired_difference(data.labels, prediction.proba.task(args.task).argmax(axis=1),
                              baseline_proba.task(args.task).argmax(axis=1)),
        )
    title = (f"{model.name} {model.version} on {args.data.name}"
             + (" (holdout)" if args.holdout else ""))
    figures = []
    if args.report_dir is not None:
        from fintweet.trainer.evaluate import write_report_figures

        figures = write_report_figures(evaluation, args.report_dir, title)

    if args.json:
        result = {
            "seen_by_model": seen is not None,
            **evaluation.as_dict(),
            "model": model_summary(model, model_path),
            "data": {"path": str(args.data), "holdout": args.holdout,
                     "fingerprint": data.fingerprint()},
            "predict_seconds": prediction.seconds,
            "tweets_per_second": prediction.tweets_per_second,
            "figures": [str(path) for path in figures],
        }
        if unseen is not None:
            result["unseen_text"] = unseen
        if comparison is not None:
            result["baseline"] = comparison.as_dict()
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0

    header = [
        ("model", f"{model.name} {model.version} ({model_path})"),
        ("data", f"{args.data}" + (" (holdout rows only)" if args.holdout else "")),
        ("speed", f"{prediction.tweets_per_second:,.0f} tweets/s "
                  f"({prediction.seconds:.2f} s, batch {batch_size}, both heads)"),
    ]
    if unseen is not None and unseen["n"]:
        header.append(("unseen text", f"{unseen['n']:,} of {evaluation.n:,} rows (the other "
                       f"{unseen['repeats']:,} repeat a training row's text): accuracy "
                       f"{unseen['accuracy']:.4f}, macro-F1 {unseen['macro_f1']:.4f}"))
    print(format_report(evaluation, header))
    if comparison is not None:
        print()
        print(comparison.report())
    for path in figures:
        print(f"wrote {path}")
    return 0
