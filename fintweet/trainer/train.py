"""Train topic models on a labelled split, score them on the holdout, write artifacts.

The holdout (``fintweet.core.data.split_train_holdout``: stratified, 15%, fixed seed) is the only
thing early stopping and model selection ever see, and the only thing the reported numbers are
measured on; the models never train on it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.artifacts import read_json, write_artifact
from fintweet.core.data import LabelledData, stratified_holdout
from fintweet.models import KINDS, create
from fintweet.models.base import TopicModel
from fintweet.models.metrics import classification_metrics

DEFAULT_KINDS = ("linear", "ann", "cnn")
TIMING_BATCH = 512


def stratified_subsample(data: LabelledData, max_rows: int, seed: int = 0) -> LabelledData:
    """At most ``max_rows`` rows with the class mix kept (every class keeps at least one row where
    it can), so small demo/test runs still see every topic."""
    if max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if len(data) <= max_rows:
        return data
    _, keep = stratified_holdout(data.labels, fraction=max_rows / len(data), seed=seed)
    excess = len(keep) - max_rows  # per-class rounding can overshoot by a few rows
    if excess > 0:
        labels = data.labels[keep]
        remaining = np.bincount(labels)
        remove = np.zeros_like(remaining)
        for _ in range(excess):  # one row at a time from whichever class is largest now
            cls = int(remaining.argmax())
            remaining[cls] -= 1
            remove[cls] += 1
        mask = np.ones(len(keep), dtype=bool)
        for cls in np.flatnonzero(remove):
            mask[np.flatnonzero(labels == cls)[-remove[cls]:]] = False
        keep = keep[mask]
    return data.subset(keep)


def predict_us_per_tweet(model: TopicModel, texts: Sequence[str], repeats: int = 7) -> float:
    """Median µs per tweet of ``predict_proba`` on one batch of raw tweets, vectorizing
    included, after a warm-up call (which traces graphs and fills per-token caches, so this is
    the steady-state cost of a stream whose vocabulary has been seen)."""
    batch = list(texts[:TIMING_BATCH])
    while len(batch) < TIMING_BATCH:
        batch.extend(texts[: TIMING_BATCH - len(batch)])
    model.predict_proba(batch)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_proba(batch)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) / len(batch) * 1e6)


def train_one(
    kind: str, train: LabelledData, holdout: LabelledData, overrides: Mapping[str, Any]
) -> tuple[TopicModel, dict[str, Any]]:
    model = create(kind, **overrides)
    print(f"training {kind} on {len(train)} tweets (holdout {len(holdout)})", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    model.fit(train.texts, train.labels, validation=(holdout.texts, holdout.labels))
    seconds = time.perf_counter() - start
    metrics = classification_metrics(holdout.labels, model.predict(holdout.texts))
    metrics.update(
        train_seconds=round(seconds, 2),
        predict_us_per_tweet_batch512=round(predict_us_per_tweet(model, holdout.texts), 2),
        n_train=len(train),
        history=model.history,
    )
    return model, metrics


def train_models(
    train: LabelledData,
    holdout: LabelledData,
    kinds: Sequence[str] = DEFAULT_KINDS,
    out_dir: Path = Path("models"),
    config: Mapping[str, Mapping[str, Any]] | None = None,
    data_fingerprint: str | None = None,
) -> dict[str, Path]:
    """Train each of ``kinds``, write an artifact per kind under ``out_dir`` (switching its
    ``current`` when complete) and return the version dirs. ``config`` maps a kind to overrides
    of its default hyper-parameters (e.g. ``{"ann": {"epochs": 3}}``). ``data_fingerprint`` is
    the :meth:`LabelledData.fingerprint` of the set the split came from (default: computed over
    train + holdout)."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    if len(holdout) == 0:
        raise ValueError("the holdout is empty; it is needed for early stopping and metrics")
    config = config or {}
    fingerprint = data_fingerprint or train_fingerprint(train, holdout)
    paths: dict[str, Path] = {}
    for kind in kinds:
        model, metrics = train_one(kind, train, holdout, config.get(kind, {}))
        paths[kind] = write_artifact(
            Path(out_dir), kind, model.save,
            metrics=metrics, config=model.get_config(), data_fingerprint=fingerprint,
            extra={"data_source": train.source, "n_train": len(train), "n_holdout": len(holdout)},
        )
        print(
            f"{kind}: holdout accuracy {metrics['accuracy']:.4f}  macro-F1 "
            f"{metrics['macro_f1']:.4f}  in {metrics['train_seconds']:.0f}s → {paths[kind]}",
            file=sys.stderr, flush=True,
        )
    return paths


def train_fingerprint(train: LabelledData, holdout: LabelledData) -> str:
    """The data hash stored in artifacts: the whole labelled set the split came from, in the
    split's order (train then holdout), via :meth:`LabelledData.fingerprint`."""
    return LabelledData(
        texts=train.texts + holdout.texts,
        labels=np.concatenate([train.labels, holdout.labels]),
        source=train.source,
    ).fingerprint()


def results_table(paths: Mapping[str, Path]) -> str:
    rows = [("model", "accuracy", "macro-F1", "train s", "µs/tweet@512", "version")]
    for kind, path in paths.items():
        metrics = read_json(path / "metrics.json")
        rows.append((
            kind, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}",
            f"{metrics['train_seconds']:.1f}", f"{metrics['predict_us_per_tweet_batch512']:.1f}",
            path.name,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )
