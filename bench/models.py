"""Every model kind present in a models dir, side by side: holdout accuracy and macro-F1 of both
tasks, tweets/s at batch 256 on this machine, and the share routed to the transformer (cascade).

The holdouts are the trainer's own (``fintweet.trainer.train.load_splits``: stratified 15% of
each CSV, fixed seed), checked against the data fingerprints each artifact records. An artifact
refitted on train + holdout (``fintweet train``'s default) has seen its holdout, so its figures
here are optimistic; the table marks it and also shows ``metrics.json``'s figures, which were
scored before the refit. Tweets/s: ``predict_proba`` on batches of 256 model texts (word
tokenization / WordPiece included, text preparation not) over ``--tweets`` tweets of the topic
holdout, timed after the holdouts were scored: warm, as a stream whose vocabulary has been seen
(the ANN's per-token cache then holds every token; a cold batch of unseen text took about twice
as long, docs/benchmarks.md). The load average is printed with it because the cores may be
shared.
A kind with a transformer in it (transformer, cascade, an ensemble with one) gets one row per
serving runtime in ``--runtimes`` (Keras, ONNX Runtime float32, ONNX Runtime int8): the
recorded figures were scored with Keras (a transformer member reused from an earlier run too:
the trainer loads it with Keras), so that row must match them.

    .venv/bin/python bench/models.py --models /path/to/models [--data-dir DIR] [--tweets 2048]
        [--json F] [--runtimes keras,onnx,onnx-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fintweet.core.config import Settings
from fintweet.core.labels import TASKS
from fintweet.models import available, load, transformers_in
from fintweet.models.cascade import CascadeModel
from fintweet.models.scoring import score
from fintweet.trainer.train import Splits, load_splits

BATCH = 256

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="models dir (<kind>/current)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated kinds (default: every kind present)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with topic_train.csv and sentiment_train.csv (default: the "
                             "data dir)")
    parser.add_argument("--tweets", type=int, default=2048,
                        help="tweets timed per kind, in batches of 256 (default 2048)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--runtimes", default="keras,onnx,onnx-int8",
                        help="serving runtimes measured for a kind with a transformer in it "
                             "(default keras,onnx,onnx-int8)")
    return parser.parse_args()

def rate(model: Any, texts: list[str], n: int) -> float:
    """Tweets/s of ``predict_proba`` at batch 256 over ``n`` tweets (holdout texts, cycled),
    warm: ``texts`` were scored before, and one more batch goes first."""
    pool = (texts * (n // len(texts) + 1))[: max(n, BATCH)]
    model.predict_proba(pool[:BATCH])  # warm-up: graph tracing, caches
    started = time.perf_counter()
    for start in range(0, len(pool), BATCH):
        model.predict_proba(pool[start: start + BATCH])
    return len(pool) / (time.perf_counter() - started)

def bench_kind(model: Any, splits: Splits, n: int, runtime: str | None = None,
               ) -> dict[str, Any]:
    """One row for a loaded model; ``runtime`` switches its transformer(s) to that runtime
    first (None: as loaded)."""
    assert model.info is not None
    if runtime:
        for transformer in transformers_in(model):
            transformer.use_runtime(runtime)
    row: dict[str, Any] = {"kind": model.name, "version": model.version,
                           "refit_on_holdout": model.info.refit_on_holdout}
    if runtime:
        row["runtime"] = runtime
    other = [task for task in TASKS if model.info.data(task).get("fingerprint")
             not in (None, splits.task(task).fingerprint)]
    if other:  # e.g. trained with --max-rows: a subsample has its own holdout
        row["warning"] = (f"{'/'.join(other)}: trained on other data (a subsample?), so this "
                          "holdout is not the one it was selected on")
    routed = []
    for task in TASKS:
        split = splits.task(task)
        proba = model.predict_proba(split.texts("holdout")).task(task)
        if isinstance(model, CascadeModel) and model.cheap_ is not None:
            share = float(model.route(model.cheap_.predict_proba(split.texts("holdout"))).mean())
            routed.append(f"{task} {share:.3f}")
            row[f"{task}_routed_share"] = round(share, 4)
        evaluation = score(task, split.holdout.labels, proba)
        row[f"{task}_accuracy"] = round(evaluation.accuracy, 4)
        row[f"{task}_macro_f1"] = round(evaluation.macro_f1, 4)
        recorded_metrics = model.info.holdout.get(task, {})
        row[f"{task}_recorded_accuracy"] = recorded_metrics.get("accuracy")
        row[f"{task}_recorded_macro_f1"] = recorded_metrics.get("macro_f1")
    load_before = os.getloadavg()[0]
    row["tweets_per_s_batch256"] = round(rate(model, splits.topic.texts("holdout"), n), 1)
    row["load_average_1m"] = round((load_before + os.getloadavg()[0]) / 2, 2)
    if routed:
        row["threshold"] = getattr(model, "threshold_", None)
    return row

def table(rows: list[dict[str, Any]]) -> str:
    head = ("kind", "topic acc", "topic F1", "sent. acc", "sent. F1", "recorded topic acc/F1",
            "recorded sent. acc/F1", "tweets/s@256", "load 1m", "routed", "note")
    lines = [head]
    for r in rows:
        routed = (f"{r['topic_routed_share']:.3f}/{r['sentiment_routed_share']:.3f}"
                  if "topic_routed_share" in r else "")

        def recorded(task: str, r: dict[str, Any] = r) -> str:
            acc, f1 = r[f"{task}_recorded_accuracy"], r[f"{task}_recorded_macro_f1"]
            return f"{acc:.4f}/{f1:.4f}" if acc is not None and f1 is not None else "-"

        note = "refit: holdout seen" if r["refit_on_holdout"] else ""
        kind = f"{r['kind']} ({r['runtime']})" if r.get("runtime") else r["kind"]
        lines.append((kind, *(f"{r[f'{t}_{m}']:.4f}" for t in TASKS
                                   for m in ("accuracy", "macro_f1")),
                      recorded("topic"), recorded("sentiment"),
                      f"{r['tweets_per_s_batch256']:.1f}", f"{r['load_average_1m']:.2f}",
                      routed, "; ".join(x for x in (note, r.get("warning", "")) if x)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)

def main() -> int:
    args = parse_args()
    present = available(args.models)
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else present
    missing = [k for k in kinds if k not in present]
    if missing or not kinds:
        sys.exit(f"{args.models}: no trained {', '.join(missing) or 'model'} there (present: "
                 f"{', '.join(present) or 'none'}); train with `fintweet train --out DIR`")
    data_dir = args.data_dir or Settings().data_dir
    splits = load_splits(data_dir)
    print(f"holdouts: topic {len(splits.topic.holdout)}, sentiment "
          f"{len(splits.sentiment.holdout)} tweets; cpus {os.cpu_count()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", file=sys.stderr, flush=True)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    rows = []
    for kind in kinds:
        model = load(args.models / kind)
        for runtime in (runtimes if transformers_in(model) else [None]):
            rows.append(bench_kind(model, splits, args.tweets, runtime))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    print("(routed: share of each holdout sent to the transformer; recorded: metrics.json, "
          "scored before any refit)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
