"""What refitting on train + holdout is worth, measured on tweets neither run has seen.

``fintweet train`` selects epochs / C on the holdout and then, by default, refits on train +
holdout, so the shipped model cannot be scored on that holdout any more. This script replays the
same protocol one level down, where an untouched set is left to score on:

- outer split: each task's holdout H (15%) is set aside and only ever scored on;
- inner split: each train part is split again (15%) into train' and holdout';
- "selected": each model fitted on train' with holdout' choosing epochs / C (what ``--no-refit``
  would ship at this data size);
- "refit": the same settings refitted on train' + holdout' (what ``fintweet train`` ships).

Both are scored on H, per task; the gap is the refit's gain. Also prints the average of the
models' probabilities for each variant, for comparison. Takes ~2x the training time of the kinds
chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fintweet.core.config import Settings
from fintweet.core.labels import TASKS
from fintweet.models import KINDS, create
from fintweet.models.scoring import accuracy, macro_f1
from fintweet.trainer.train import Splits, TaskSplit, load_splits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with topic_train.csv and sentiment_train.csv (default: the "
                             "data dir)")
    parser.add_argument("--models", default="linear,ann,cnn",
                        help="comma-separated kinds (default linear,ann,cnn)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    kinds = [k for k in args.models.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"refit_gain: unknown kind(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    outer = load_splits(args.data_dir or Settings().data_dir)
    inner = Splits(*(TaskSplit.of(task, outer.task(task).train) for task in TASKS))
    print("scored on " + ", ".join(f"{t} {len(outer.task(t).holdout)}" for t in TASKS)
          + " held-out tweets", file=sys.stderr)

    results: dict[str, dict[str, float]] = {}
    summed: dict[str, dict[str, np.ndarray]] = {"selected": {}, "refit": {}}
    for kind in kinds:
        overrides = {} if kind == "linear" else {"verbose": False}
        start = time.perf_counter()
        model = create(kind, **overrides).fit(*inner.both("train"),
                                              validation=inner.both("holdout"))
        selected_s = time.perf_counter() - start
        start = time.perf_counter()
        refit = create(kind, **overrides, **model.selected_).fit(*inner.both("all"))
        refit_s = time.perf_counter() - start
        for variant, estimator, seconds in (("selected", model, selected_s),
                                            ("refit", refit, refit_s)):
            for task in TASKS:
                proba = estimator.predict_proba(outer.task(task).texts("holdout")).task(task)
                previous = summed[variant].get(task)
                summed[variant][task] = proba if previous is None else previous + proba
                results[f"{kind}_{variant}_{task}"] = score(outer.task(task).holdout.labels,
                                                            proba, seconds)
        print(f"{kind}: " + "  ".join(
            f"{task} selected {fmt(results[f'{kind}_selected_{task}'])} refit "
            f"{fmt(results[f'{kind}_refit_{task}'])}" for task in TASKS), file=sys.stderr,
            flush=True)
    if len(kinds) > 1:
        for variant, by_task in summed.items():
            for task, proba in by_task.items():
                results[f"average_{variant}_{task}"] = score(outer.task(task).holdout.labels,
                                                             proba, 0.0)

    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'model':32s} {'accuracy':>9s} {'macro-F1':>9s} {'train s':>8s}")
    for name, figures in results.items():
        print(f"{name:32s} {figures['accuracy']:9.4f} {figures['macro_f1']:9.4f} "
              f"{figures['train_seconds']:8.1f}")
    for kind in [*kinds, "average"] if len(kinds) > 1 else kinds:
        for task in TASKS:
            gain = (results[f"{kind}_refit_{task}"]["accuracy"]
                    - results[f"{kind}_selected_{task}"]["accuracy"])
            print(f"refit gain, {kind}, {task}: {gain * 100:+.2f} points of accuracy")
    return 0


def score(labels: np.ndarray, proba: np.ndarray, seconds: float) -> dict[str, float]:
    predicted = proba.argmax(axis=1)
    return {"accuracy": round(accuracy(labels, predicted), 4),
            "macro_f1": round(macro_f1(labels, predicted), 4),
            "train_seconds": round(seconds, 1)}


def fmt(figures: dict[str, float]) -> str:
    return f"acc {figures['accuracy']:.4f} macro-F1 {figures['macro_f1']:.4f}"


if __name__ == "__main__":
    sys.exit(main())
