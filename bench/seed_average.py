"""What averaging several fine-tunes buys: holdout figures of each model, of the average of every
k of them, and of each mix with a second kind of model.

Why a script: one transformer's holdout figure moves by up to a point with its seed
(docs/transformer.md), so "the transformer scores X" needs the spread of several seeds, and
whether averaging seeds is worth its serving cost needs the average measured against the single
model on the same tweets. The inputs are ``bench/gpu.py holdout`` files (probabilities on the
trainer's two holdouts), so the seeds can be trained on a GPU machine and only their
probabilities carried back.

    .venv/bin/python bench/seed_average.py out/holdout-*.npz [--with linear.npz] [--json]

Per task it prints each model's accuracy / macro-F1, the mean (and range) over the
combinations of k models averaged with equal weights (a seeded sample of 200 where there are
more), the same with ``--with`` mixed in at half weight, and the all-model average minus the
first model with a 95% paired bootstrap interval (the first file is the baseline: give the
model you would otherwise ship first). With ``--with`` and ``--choose-weights``, also what the
trainer's ensemble of that model and all the fine-tunes scores (``fintweet train
--ensemble-members linear,transformer,transformer-2,...``: the fine-tunes' share chosen on this
same holdout, so a little optimistic).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fintweet.core.labels import TASKS  # noqa: E402
from fintweet.models.scoring import macro_f1, paired_difference  # noqa: E402

MAX_COMBINATIONS = 200  # per k: enough for a mean, and 12 seeds would otherwise be 924
SAMPLE_SEED = 0


def read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def figures(labels: np.ndarray, proba: np.ndarray) -> tuple[float, float]:
    predicted = proba.argmax(axis=1)
    return float((predicted == labels).mean()), float(macro_f1(labels, predicted))


def combinations(n: int, k: int) -> list[tuple[int, ...]]:
    """Every k of n, or a seeded sample of ``MAX_COMBINATIONS`` of them: the first ones in
    order would all hold the first files."""
    every = list(itertools.combinations(range(n), k))
    if len(every) <= MAX_COMBINATIONS:
        return every
    rng = np.random.default_rng(SAMPLE_SEED)
    return [every[i] for i in sorted(rng.choice(len(every), MAX_COMBINATIONS, replace=False))]


def check_same_holdouts(files: list[dict[str, np.ndarray]]) -> None:
    fingerprints = {str(f["data_fingerprint"]) for f in files if "data_fingerprint" in f}
    same_labels = all(np.array_equal(f[f"{task}_labels"], files[0][f"{task}_labels"])
                      for f in files for task in TASKS)
    if len(fingerprints) > 1 or not same_labels:
        sys.exit("the holdouts differ between the files: train every model on the same CSVs "
                 "(and --max-rows) and write them with bench/gpu.py holdout")


def trainer_ensemble(models: list[dict[str, np.ndarray]], mix: dict[str, np.ndarray],
                     ) -> dict[str, Any]:
    """The ensemble ``fintweet train`` assembles from the ``--with`` model and the fine-tunes
    (named transformer, transformer-2, ...), weighed by its own rule on these holdouts."""
    from fintweet.models.base import Proba
    from fintweet.models.ensemble import average, choose_weights

    names = ("with", "transformer", *(f"transformer-{k}" for k in range(2, len(models) + 1)))
    probas = [Proba(m["topic_proba"], m["sentiment_proba"]) for m in (mix, *models)]
    labels = {task: models[0][f"{task}_labels"] for task in TASKS}
    weights, _ = choose_weights(names, probas, labels)
    mixed = average(probas, weights)
    return {task: {"figures": figures(labels[task], mixed.task(task)),
                   "share": round(sum(weights[task][1:]), 2)} for task in TASKS}


def summarise(models: list[dict[str, np.ndarray]], mix: dict[str, np.ndarray] | None,
              task: str) -> dict[str, Any]:
    labels = models[0][f"{task}_labels"]
    probas = [m[f"{task}_proba"] for m in models]
    result: dict[str, Any] = {"n": len(labels),
                              "single": [figures(labels, p) for p in probas], "average": {}}
    for k in range(2, len(probas) + 1):
        combos = combinations(len(probas), k)
        scored = [figures(labels, np.mean([probas[i] for i in c], axis=0)) for c in combos]
        entry = {"combinations": len(combos),
                 "accuracy": float(np.mean([a for a, _ in scored])),
                 "macro_f1": float(np.mean([f for _, f in scored])),
                 "accuracy_range": (min(a for a, _ in scored), max(a for a, _ in scored))}
        if mix is not None:
            mixed = [figures(labels, 0.5 * np.mean([probas[i] for i in c], axis=0)
                             + 0.5 * mix[f"{task}_proba"]) for c in combos]
            entry["with"] = (float(np.mean([a for a, _ in mixed])),
                             float(np.mean([f for _, f in mixed])))
        result["average"][k] = entry
    if mix is not None:
        result["single_with"] = [figures(labels, 0.5 * p + 0.5 * mix[f"{task}_proba"])
                                 for p in probas]
    if len(probas) > 1:
        result["all_minus_first"] = paired_difference(
            labels, np.mean(probas, axis=0).argmax(axis=1), probas[0].argmax(axis=1)).as_dict()
    return result


def report(task: str, summary: dict[str, Any], names: list[str]) -> str:
    lines = [f"{task} (holdout {summary['n']} tweets)"]
    for name, (acc, f1) in zip(names, summary["single"], strict=True):
        lines.append(f"  {name:<28} {acc:.4f} / {f1:.4f}")
    singles = np.array(summary["single"])
    lines.append(f"  {'mean of the singles':<28} {singles[:, 0].mean():.4f} / "
                 f"{singles[:, 1].mean():.4f}  (accuracy {singles[:, 0].min():.4f}–"
                 f"{singles[:, 0].max():.4f})")
    if "single_with" in summary:
        mixed = np.array(summary["single_with"])
        lines.append(f"  {'one + with, half each':<28} {mixed[:, 0].mean():.4f} / "
                     f"{mixed[:, 1].mean():.4f}  (mean over the singles)")
    for k, entry in summary["average"].items():
        low, high = entry["accuracy_range"]
        line = (f"  {f'average of {k}':<28} {entry['accuracy']:.4f} / {entry['macro_f1']:.4f}"
                f"  (accuracy {low:.4f}–{high:.4f} over {entry['combinations']})")
        if "with" in entry:
            line += f"; + with, half each: {entry['with'][0]:.4f} / {entry['with'][1]:.4f}"
        lines.append(line)
    if "all_minus_first" in summary:
        d = summary["all_minus_first"]
        lines.append(
            f"  average of all − {names[0]}: accuracy {100 * d['accuracy']:+.2f} points "
            f"({100 * d['accuracy_interval'][0]:+.2f} to {100 * d['accuracy_interval'][1]:+.2f}),"
            f" macro-F1 {100 * d['macro_f1']:+.2f} ({100 * d['macro_f1_interval'][0]:+.2f} to "
            f"{100 * d['macro_f1_interval'][1]:+.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path,
                        help="bench/gpu.py holdout files, the baseline first")
    parser.add_argument("--with", dest="mix", type=Path,
                        help="a second kind's holdout file, mixed in at half weight")
    parser.add_argument("--choose-weights", action="store_true",
                        help="with --with: also the trainer's ensemble of it and all the "
                             "models, its weights chosen as fintweet train chooses them")
    parser.add_argument("--json", action="store_true", help="one JSON object instead")
    args = parser.parse_args(argv)
    if args.choose_weights and args.mix is None:
        parser.error("--choose-weights needs --with (the non-transformer member)")
    for path in [*args.models, *([args.mix] if args.mix else [])]:
        if not path.is_file():
            parser.error(f"{path}: no such file (write it with bench/gpu.py holdout)")
    models = [read(p) for p in args.models]
    mix = read(args.mix) if args.mix else None
    check_same_holdouts([*models, *([mix] if mix else [])])
    summaries: dict[str, Any] = {task: summarise(models, mix, task) for task in TASKS}
    if args.choose_weights and mix is not None:
        summaries["trainer_ensemble"] = trainer_ensemble(models, mix)
    if args.json:
        print(json.dumps(summaries))
        return 0
    names = [p.stem for p in args.models]
    print("\n".join(report(task, summaries[task], names) for task in TASKS))
    if "trainer_ensemble" in summaries:
        for task, entry in summaries["trainer_ensemble"].items():
            acc, f1 = entry["figures"]
            print(f"{task}: the trainer's ensemble of --with and all {len(models)}: "
                  f"{acc:.4f} / {f1:.4f} (fine-tunes' share {entry['share']}, chosen on this "
                  "holdout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
