"""Train topic models on a labelled split, score them on the holdout, write artifacts.

The holdout (``fintweet.core.data.split_train_holdout``: stratified, 15%, fixed seed) is the only
thing early stopping and model selection ever see, and the only thing the reported numbers are
measured on; the selected model never trains on it.

With ``refit`` (``fintweet train``'s default) the shipped model is then trained once more, on train
+ holdout, with the hyper-parameters the holdout chose (epochs, C). Why: the learning curve is
still steep here, and the holdout is 18% more labelled data; ``bench/refit_gain.py`` replays the
protocol one level down and measured +0.6 (CNN) to +1.4 (ANN) points of accuracy on tweets
neither variant saw. The price
is that the holdout figures in ``metrics.json`` then describe the selection run, not the shipped
weights, and the shipped model cannot be scored on the holdout again; ``metrics.json`` says so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.artifacts import read_json, write_artifact
from fintweet.core.data import LabelledData, stratified_holdout
from fintweet.models import KINDS, create
from fintweet.models.base import TopicModel
from fintweet.models.ensemble import MEMBER_KINDS, EnsembleTopicModel
from fintweet.models.metrics import classification_metrics

DEFAULT_KINDS = ("linear", "ann", "cnn", "ensemble")
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


@dataclass
class Trained:
    model: TopicModel  # what gets saved: the refitted model when refitting
    metrics: dict[str, Any]
    holdout_proba: np.ndarray  # the selection run's probabilities on the holdout


REFIT_NOTE = ("accuracy, macro_f1 and per_class were measured on the holdout with the model "
              "selected before this refit; the saved model has also trained on the holdout, so "
              "scoring it there again would be optimistic")


def train_one(
    kind: str, train: LabelledData, holdout: LabelledData, overrides: Mapping[str, Any],
    refit: bool = False,
) -> Trained:
    """Fit ``kind`` on ``train`` with ``holdout`` driving selection, score it on the holdout and,
    with ``refit``, ship instead a fresh model fitted on both with the selected settings."""
    model = create(kind, **overrides)
    print(f"training {kind} on {len(train)} tweets (holdout {len(holdout)})", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    model.fit(train.texts, train.labels, validation=(holdout.texts, holdout.labels))
    seconds = time.perf_counter() - start
    proba = model.predict_proba(holdout.texts)
    metrics = classification_metrics(holdout.labels, proba.argmax(axis=1))
    metrics.update(train_seconds=round(seconds, 2), n_train=len(train), history=model.history)
    if refit:
        everything = combined(train, holdout)
        selected = dict(model.selected)
        print(f"refitting {kind} on train + holdout ({len(everything)} tweets) with "
              f"{selected or 'its settings'}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        model = create(kind, **{**overrides, **selected}).fit(everything.texts, everything.labels)
        metrics["refit"] = {
            "n_train": len(everything), "selected": selected,
            "train_seconds": round(time.perf_counter() - start, 2), "note": REFIT_NOTE,
        }
    metrics["predict_us_per_tweet_batch512"] = round(predict_us_per_tweet(model, holdout.texts), 2)
    return Trained(model, metrics, proba)


def assemble_ensemble(members: Mapping[str, Trained], holdout: LabelledData) -> Trained:
    """The ensemble of members trained in this run, scored on the holdout through the average
    of the members' selection-run probabilities: no member is trained twice."""
    model = EnsembleTopicModel.from_members([t.model for t in members.values()])
    proba = sum(t.holdout_proba for t in members.values()) / len(members)
    metrics = classification_metrics(holdout.labels, proba.argmax(axis=1))
    metrics.update(
        train_seconds=round(sum(t.metrics["train_seconds"] for t in members.values()), 2),
        n_train=next(iter(members.values())).metrics["n_train"], history=[],
    )
    refits = {kind: t.metrics["refit"] for kind, t in members.items() if "refit" in t.metrics}
    if refits:
        metrics["refit"] = {
            "n_train": next(iter(refits.values()))["n_train"],
            "selected": {"member_configs": {k: r["selected"] for k, r in refits.items()}},
            "train_seconds": round(sum(r["train_seconds"] for r in refits.values()), 2),
            "note": REFIT_NOTE,
        }
    metrics["predict_us_per_tweet_batch512"] = round(predict_us_per_tweet(model, holdout.texts), 2)
    return Trained(model, metrics, proba.astype(np.float32))


def train_models(
    train: LabelledData,
    holdout: LabelledData,
    kinds: Sequence[str] = DEFAULT_KINDS,
    out_dir: Path = Path("models"),
    config: Mapping[str, Mapping[str, Any]] | None = None,
    data_fingerprint: str | None = None,
    refit: bool = False,
) -> dict[str, Path]:
    """Train each of ``kinds``, write an artifact per kind under ``out_dir`` (switching its
    ``current`` when complete) and return the version dirs. ``config`` maps a kind to overrides
    of its default hyper-parameters (e.g. ``{"ann": {"epochs": 3}}``). ``data_fingerprint`` is
    the :meth:`LabelledData.fingerprint` of the set the split came from (default: computed over
    train + holdout). ``refit``: ship a model refitted on train + holdout (module notes). An
    ``ensemble`` whose members are all among ``kinds`` is assembled from them, last."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    if len(holdout) == 0:
        raise ValueError("the holdout is empty; it is needed for early stopping and metrics")
    config = config or {}
    fingerprint = data_fingerprint or train_fingerprint(train, holdout)
    members = tuple(config.get("ensemble", {}).get("members", MEMBER_KINDS))
    assemble = "ensemble" in kinds and set(members) <= set(kinds)
    order = [k for k in kinds if k != "ensemble"] + (["ensemble"] if "ensemble" in kinds else [])
    trained: dict[str, Trained] = {}
    paths: dict[str, Path] = {}
    for kind in order:
        if kind == "ensemble" and assemble:
            result = assemble_ensemble({k: trained[k] for k in members}, holdout)
        else:
            result = train_one(kind, train, holdout, config.get(kind, {}), refit)
        trained[kind] = result
        metrics = result.metrics
        n_train = metrics["refit"]["n_train"] if refit else len(train)
        paths[kind] = write_artifact(
            Path(out_dir), kind, result.model.save,
            metrics=metrics, config=result.model.get_config(), data_fingerprint=fingerprint,
            extra={"data_source": train.source, "n_train": n_train, "n_holdout": len(holdout),
                   "refit_on_holdout": refit},
        )
        print(
            f"{kind}: holdout accuracy {metrics['accuracy']:.4f}  macro-F1 "
            f"{metrics['macro_f1']:.4f}  in {metrics['train_seconds']:.0f}s"
            + (f" (+{metrics['refit']['train_seconds']:.0f}s refit)" if refit else "")
            + f" → {paths[kind]}",
            file=sys.stderr, flush=True,
        )
    return {kind: paths[kind] for kind in kinds}


def combined(train: LabelledData, holdout: LabelledData) -> LabelledData:
    """Train then holdout as one set (the refit's training data, and what the data hash covers)."""
    return LabelledData(
        texts=train.texts + holdout.texts,
        labels=np.concatenate([train.labels, holdout.labels]),
        source=train.source,
    )


def train_fingerprint(train: LabelledData, holdout: LabelledData) -> str:
    """The data hash stored in artifacts: the whole labelled set the split came from, in the
    split's order (train then holdout), via :meth:`LabelledData.fingerprint`."""
    return combined(train, holdout).fingerprint()


def results_table(paths: Mapping[str, Path]) -> str:
    """Holdout figures per model; "train s" includes the refit when there was one."""
    rows = [("model", "accuracy", "macro-F1", "train s", "µs/tweet@512", "version")]
    refit_sizes = set()
    for kind, path in paths.items():
        metrics = read_json(path / "metrics.json")
        seconds = metrics["train_seconds"]
        if "refit" in metrics:
            seconds += metrics["refit"]["train_seconds"]
            refit_sizes.add(metrics["refit"]["n_train"])
        rows.append((
            kind, f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}", f"{seconds:.1f}",
            f"{metrics['predict_us_per_tweet_batch512']:.1f}", path.name,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )
    if refit_sizes:
        table += (f"\n(accuracy and macro-F1: the holdout, scored before each model was refit on "
                  f"train + holdout, {', '.join(map(str, sorted(refit_sizes)))} tweets)")
    return table
