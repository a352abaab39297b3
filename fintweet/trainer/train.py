"""Train the models (both heads) on the labelled splits, score each head on its holdout, write
artifacts.

Each task's holdout (``fintweet.core.data.stratified_holdout``: stratified, 15%, fixed seed) is
the only thing early stopping and model selection ever see, and the only thing the reported
numbers are measured on; the selected model never trains on it.

With ``refit`` (``fintweet train``'s default) the shipped model is then trained once more, on train
+ holdout of both tasks, with the hyper-parameters the holdout chose (epochs, C). Why: the learning
curve is still steep here, and the holdout is 18% more labelled data; ``bench/refit_gain.py``
replays the protocol one level down, on tweets neither variant saw (its figures, and the official
splits' ~0 gain, are in docs/models.md). The price is that the holdout figures in ``metrics.json``
then describe the selection run, not the shipped weights, and the shipped model cannot be scored on
the holdout again; ``metrics.json`` says so (``holdout_scored_before_refit``)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.artifacts import (
    METRICS_FILE,
    MODEL_TEXTS,
    TRAINED_ROWS_FILE,
    ArtifactError,
    check_switchable,
    read_json,
    save_arrays,
    write_artifact,
)
from fintweet.core.config import DEFAULT_BATCH_SIZE, DEFAULT_TRAIN_KINDS, Settings
from fintweet.core.data import (
    DataError,
    LabelledData,
    load_labelled_csv,
    resolve_split,
    row_hashes,
    stratified_holdout,
    text_hashes,
    train_split,
)
from fintweet.core.labels import TASKS, looks_like_sentiment, sentiment_mixup
from fintweet.core.text import prepare_model_texts
from fintweet.models import KINDS, create, model_class
from fintweet.models.base import LabelledTexts, Proba, TwoHeadModel
from fintweet.models.cascade import MEMBER_KINDS as CASCADE_MEMBERS
from fintweet.models.cascade import CascadeConfig, CascadeModel, cascade_proba, choose_threshold
from fintweet.models.ensemble import (
    MEMBER_KINDS,
    EnsembleConfig,
    EnsembleModel,
    average,
    choose_weights,
    member_kind,
)
from fintweet.models.scoring import score
from fintweet.trainer.evaluate import predict_in_batches
from fintweet.trainer.provenance import provenance
from fintweet.trainer.teacher import Teacher

# The teacher of a run without a transformer to learn from: it trains in a minute and a half, and
# the extra tweets it labels for the other head are most of what a transformer teacher gave
# (docs/models.md, "A teacher without a transformer"). Trained first; saved only when asked for.
RUN_TEACHER = "linear"
ASSEMBLED = ("ensemble", "cascade")  # built from members trained in the same run, last
TIMING_BATCH = DEFAULT_BATCH_SIZE  # the worker's
# Holdout scoring goes this many tweets at a time, for its progress bar: the transformer scores
# a few thousand holdout tweets in minutes on a CPU. The fast models barely notice the split.
SCORING_BATCH = 256
# The transformer runtime every holdout figure, weight and threshold is computed with: a model
# fitted in this process serves its Keras model, so a member reused from an earlier run is
# loaded with Keras too (not its configured ``auto``, ONNX int8 on a CPU), else an assembled
# model's weights, threshold and figures would depend on whether its transformer was reused.
SCORING_RUNTIME = "keras"


def stratified_subsample(data: LabelledData, max_rows: int, seed: int = 0) -> LabelledData:
    """At most ``max_rows`` rows with the class mix kept (every class keeps at least one row where
    it can), so small demo/test runs still see every class."""
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
        for cls in map(int, np.flatnonzero(remove)):
            mask[np.flatnonzero(labels == cls)[-remove[cls]:]] = False
        keep = keep[mask]
    return data.subset(keep)


@dataclass(frozen=True)
class TaskSplit:
    """One task's labelled CSV split into train and holdout, with the model texts of each part
    prepared once (``fintweet.core.text.prepare_model_texts``)."""

    task: str
    train: LabelledData
    holdout: LabelledData
    fingerprint: str  # of the whole labelled set the split came from (the CSV, in file order)
    # With --max-rows: the fingerprint of the CSV the rows were drawn from, so that `evaluate`
    # and the demo can tell that a model trained on some of that CSV's rows.
    subsample_of: str | None = None
    _prepared: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, task: str, data: LabelledData, subsample_of: str | None = None) -> TaskSplit:
        train_idx, holdout_idx = stratified_holdout(data.labels)
        return cls(task, data.subset(train_idx), data.subset(holdout_idx), data.fingerprint(),
                   subsample_of)

    def texts(self, part: str) -> list[str]:
        if part not in self._prepared:
            source = self.train if part == "train" else self.holdout
            self._prepared[part] = prepare_model_texts(source.texts)
        return self._prepared[part]

    def labelled(self, part: str) -> LabelledTexts:
        """``part`` ("train", "holdout" or "all" = train then holdout) as model texts."""
        if part == "all":
            return LabelledTexts(self.texts("train") + self.texts("holdout"),
                                 np.concatenate([self.train.labels, self.holdout.labels]))
        labels = self.train.labels if part == "train" else self.holdout.labels
        return LabelledTexts(self.texts(part), labels)

    def describe(self) -> dict[str, Any]:
        described = {"source": self.train.source, "fingerprint": self.fingerprint,
                     "n_train": len(self.train), "n_holdout": len(self.holdout)}
        if self.subsample_of is not None:
            described["subsample_of"] = self.subsample_of
        return described


@dataclass(frozen=True)
class Splits:
    topic: TaskSplit
    sentiment: TaskSplit

    def task(self, task: str) -> TaskSplit:
        return self.topic if task == "topic" else self.sentiment

    def both(self, part: str) -> tuple[LabelledTexts, LabelledTexts]:
        return self.topic.labelled(part), self.sentiment.labelled(part)

    def fingerprint(self) -> str:
        """The artifact's data hash: both tasks' CSV fingerprints."""
        return hashlib.sha256(
            f"{self.topic.fingerprint}:{self.sentiment.fingerprint}".encode()
        ).hexdigest()


def load_splits(
    data_dir: Path | None = None, topic_csv: Path | None = None,
    sentiment_csv: Path | None = None, max_rows: int | None = None,
) -> Splits:
    """Both tasks' training CSVs (given, else ``data_dir``'s (None: the settings'), else
    downloaded there), optionally subsampled to ``max_rows`` per task, split into train and
    holdout."""
    if (topic_csv is not None and sentiment_csv is not None
            and topic_csv.resolve() == sentiment_csv.resolve()):
        raise DataError(f"{topic_csv} is given for both tasks; the topic and the sentiment "
                        "heads learn from different CSVs (--topic-data, --sentiment-data)")
    folder = data_dir if data_dir is not None else Settings.from_env().data_dir
    parts = {}
    for task, given in (("topic", topic_csv), ("sentiment", sentiment_csv)):
        data = load_labelled_csv(given or resolve_split(train_split(task), folder), task=task)
        if task == "topic" and looks_like_sentiment(data.labels):
            # A warning, not an error: a topic file cut to three topics is legitimate.
            print(f"warning: {sentiment_mixup(data.source)}; if it is the sentiment CSV, put "
                  "the topic CSV in its place", file=sys.stderr, flush=True)
        if len(np.unique(data.labels)) < 2:
            raise DataError(f"{data.source}: every row is labelled {data.labels[0]}; a {task} "
                            "head needs rows of at least two classes to learn from")
        whole = None
        if max_rows is not None and len(data) > max_rows:
            whole = data.fingerprint()
            data = stratified_subsample(data, max_rows)
        parts[task] = TaskSplit.of(task, data, subsample_of=whole)
    return Splits(**parts)


def predict_us_per_tweet(model: TwoHeadModel, texts: Sequence[str], repeats: int = 5) -> float:
    """Median µs per tweet of ``predict_proba`` (both heads) on one worker-sized batch of model
    texts, vectorizing included, after a warm-up call (which traces graphs and fills per-token
    caches, so this is the steady-state cost of a stream whose vocabulary has been seen). A model
    whose warm-up took over 5 s (the transformer on a CPU) is timed once, not ``repeats`` times."""
    print(f"timing {model.name} on one batch of {TIMING_BATCH:,} tweets", file=sys.stderr,
          flush=True)
    batch = list(texts[:TIMING_BATCH])
    while len(batch) < TIMING_BATCH:
        batch.extend(texts[: TIMING_BATCH - len(batch)])
    start = time.perf_counter()
    model.predict_proba(batch)
    if time.perf_counter() - start > 5.0:
        repeats = 1
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_proba(batch)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings) / len(batch) * 1e6)


@dataclass
class Trained:
    model: TwoHeadModel  # what gets saved: the refitted model when refitting
    metrics: dict[str, Any]
    holdout_proba: dict[str, np.ndarray]  # task → the selection run's holdout probabilities
    # task → both heads of the selection run on that task's holdout (the cascade routes the
    # sentiment holdout by the ANN's topic head there)
    holdout_both: dict[str, Proba] = field(default_factory=dict)
    # with ``keep_selection``: the model the holdouts chose, fitted on the train splits only
    # (``model`` itself unless refitted), what may teach a student of the same run
    selection: TwoHeadModel | None = None


# An assembled model's one or two numbers chosen on the holdouts it is then scored on: its
# figures there are a little optimistic, which metrics.json and the results table say.
TUNED_WEIGHTS = "the transformer's share of the ensemble, per task"
TUNED_THRESHOLD = "the cascade's routing threshold"

REFIT_NOTE = ("the per-task figures were measured on each task's holdout with the model selected "
              "before this refit; the saved model has also trained on the holdouts, so scoring it "
              "there again would be optimistic")


def holdout_probas(model: TwoHeadModel, splits: Splits) -> dict[str, Proba]:
    """Both heads of ``model`` on each task's holdout, with a progress bar per task."""
    return {task: predict_in_batches(model, splits.task(task).texts("holdout"), SCORING_BATCH,
                                     desc=f"scoring the {task} holdout").proba
            for task in TASKS}


def holdout_metrics(splits: Splits, proba: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Per task: accuracy, macro-F1, weighted-F1 and the per-class table on its holdout."""
    return {
        task: {**score(task, splits.task(task).holdout.labels, proba[task]).as_dict(),
               "n_train": len(splits.task(task).train)}
        for task in TASKS
    }


def distils(kind: str) -> bool:
    """Whether ``kind`` learns from a teacher's probabilities (its config has ``distill``)."""
    return "distill" in {f.name for f in fields(model_class(kind).config_class)}


def training_sets(splits: Splits, part: str,
                  teacher: Teacher | None) -> tuple[LabelledTexts, LabelledTexts]:
    """``splits.both(part)``, with the teacher's probabilities attached when there is one."""
    sets = splits.both(part)
    if teacher is None:
        return sets
    pieces = ("train", "holdout") if part == "all" else (part,)
    parts = {task: [splits.task(task).texts(p) for p in pieces] for task in TASKS}
    return teacher.teach(sets, parts)


def train_one(
    kind: str, splits: Splits, overrides: Mapping[str, Any], refit: bool = False,
    teacher: Teacher | None = None, name: str | None = None, keep_selection: bool = False,
) -> Trained:
    """Fit ``kind`` with the holdouts driving selection, score each head on its holdout and,
    with ``refit``, ship instead a fresh model fitted on train + holdout with the selected
    settings. ``teacher``: soft targets for a kind that distils (:func:`distils`). ``name``:
    what the progress lines call it (an ensemble's ``transformer-2``), else ``kind``.
    ``keep_selection``: keep the selection model too (``Trained.selection``), which a refit
    would otherwise free."""
    model = create(kind, **overrides)
    sizes = ", ".join(f"{t} {len(splits.task(t).train)} (holdout {len(splits.task(t).holdout)})"
                      for t in TASKS)
    print(f"training {name or kind} on {sizes}" + (f", distilling {teacher.describe()['kind']}"
                                           if teacher else ""), file=sys.stderr, flush=True)
    start = time.perf_counter()
    model.fit(*training_sets(splits, "train", teacher), validation=splits.both("holdout"))
    seconds = time.perf_counter() - start
    both = holdout_probas(model, splits)
    proba = {task: both[task].task(task) for task in TASKS}
    metrics = holdout_metrics(splits, proba)
    metrics.update(train_seconds=round(seconds, 2), history=model.history_)
    # the epochs the holdout chose (a refit trains that many; config.json has them only then)
    if epochs := {k: v for k, v in model.selected_.items() if k.endswith("epochs")}:
        metrics["selected_epochs"] = epochs
    # an ensemble or cascade that trained its own members chose its weights / threshold on
    # these holdouts inside fit: recorded as when assembled (before any refit replaces it)
    metrics.update(tuning_metrics(model, model.history_, splits))
    selection = model if keep_selection else None
    refit = refit and model.refits()
    if refit:
        selected = dict(model.selected_)
        print(f"refitting {kind} on train + holdout with {selected or 'its settings'}",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        model = create(kind, **{**overrides, **selected}).fit(
            *training_sets(splits, "all", teacher))
        metrics["refit"] = _refit_entry(splits, selected, time.perf_counter() - start)
    metrics["holdout_scored_before_refit"] = refit
    if teacher is not None:
        metrics["teacher"] = teacher.describe()
    metrics[f"predict_us_per_tweet_batch{TIMING_BATCH}"] = round(
        predict_us_per_tweet(model, splits.topic.texts("holdout")), 2)
    return Trained(model, metrics, proba, both, selection)


def tuning_metrics(model: TwoHeadModel, history: Sequence[Mapping[str, Any]], splits: Splits,
                   cheap_holdout: Mapping[str, Proba] | None = None) -> dict[str, Any]:
    """What an ensemble or cascade records beside its holdout figures, the same whether the
    trainer assembled it from members (:func:`assemble_ensemble`, :func:`assemble_cascade`) or
    it trained its own (:func:`train_one`): its weights, or its threshold and the share of each
    task's holdout routed to the transformer, and ``tuned_on_holdout`` when those were chosen on
    the holdouts its figures are scored on (``history``, the choice's grid, is not empty), which
    the results table turns into its optimism note. ``cheap_holdout``: per task, the ANN's
    selection-run probabilities on that task's holdout, which route the cascade's figures
    (default: its own ANN's, which is that ANN when the cascade trained its members). Empty for
    a single model."""
    if isinstance(model, EnsembleModel):
        assert model.weights_ is not None
        record: dict[str, Any] = {"weights": {t: list(w) for t, w in model.weights_.items()}}
        tuned = TUNED_WEIGHTS
    elif isinstance(model, CascadeModel):
        if cheap_holdout is None:
            assert model.cheap_ is not None
            cheap_holdout = {task: model.cheap_.predict_proba(splits.task(task).texts("holdout"))
                             for task in TASKS}
        record = {"threshold": model.threshold_, "routed_share": {
            task: round(float(model.route(cheap_holdout[task]).mean()), 4) for task in TASKS}}
        tuned = TUNED_THRESHOLD
    else:
        return {}
    if history:
        record["tuned_on_holdout"] = tuned
    return record


def _refit_entry(splits: Splits, selected: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "n_train": {t: len(splits.task(t).train) + len(splits.task(t).holdout) for t in TASKS},
        "selected": selected, "train_seconds": round(seconds, 2), "note": REFIT_NOTE,
    }


def assemble_ensemble(members: Mapping[str, Trained], splits: Splits) -> Trained:
    """The ensemble of members trained in this run (or reused, :func:`reuse_member`), weighed
    (:func:`fintweet.models.ensemble.choose_weights`) and scored on the holdouts through the
    members' selection-run probabilities: no member is trained twice."""
    probas = [Proba(t.holdout_proba["topic"], t.holdout_proba["sentiment"])
              for t in members.values()]
    labels = {task: splits.task(task).holdout.labels for task in TASKS}
    weights, history = choose_weights(tuple(members), probas, labels)
    model = EnsembleModel.from_members([t.model for t in members.values()], weights,
                                       names=tuple(members))
    mixed = average(probas, model.weights_ or weights)
    proba = {task: mixed.task(task) for task in TASKS}
    metrics = holdout_metrics(splits, proba)
    metrics.update(
        train_seconds=round(sum(t.metrics["train_seconds"] for t in members.values()), 2),
        history=history, **tuning_metrics(model, history, splits),
    )
    refits = {kind: t.metrics["refit"] for kind, t in members.items() if "refit" in t.metrics}
    if refits:
        entry = _refit_entry(splits, {"member_configs": {k: r["selected"]
                                                         for k, r in refits.items()}}, 0.0)
        entry["train_seconds"] = round(sum(r["train_seconds"] for r in refits.values()), 2)
        metrics["refit"] = entry
    metrics["holdout_scored_before_refit"] = bool(refits)
    metrics[f"predict_us_per_tweet_batch{TIMING_BATCH}"] = round(
        predict_us_per_tweet(model, splits.topic.texts("holdout")), 2)
    return Trained(model, metrics, proba)


def reuse_member(kind: str, out_dir: Path, splits: Splits,
                 wanted: Mapping[str, Any] | None = None) -> Trained | None:
    """``out_dir/<kind>/current`` as a member of an ensemble or cascade trained now, when it
    can be: trained on these same CSVs and never on their holdouts (``--no-refit``), so its
    holdout probabilities, computed here, are as honest as those of a member trained in this
    run, and with every hyper-parameter in ``wanted`` (what this run was told for it, e.g.
    ``--epochs``, ``--seed``) as asked, so a given option is never silently not applied. Why:
    a transformer costs an hour on a CPU; assembling it with a model trained later should not
    cost another. None when there is no such artifact."""
    from fintweet.core.artifacts import available
    from fintweet.models import load

    if kind not in available(out_dir):
        return None
    try:
        model = load(Path(out_dir) / kind, transformer_runtime=SCORING_RUNTIME)
    except ArtifactError as exc:  # said, since a transformer trained again costs an hour
        print(f"not reusing {Path(out_dir) / kind}: {exc}", file=sys.stderr, flush=True)
        return None
    assert model.info is not None
    if (model.info.manifest.get("data_fingerprint") != splits.fingerprint()
            or model.info.refit_on_holdout):
        return None
    have = model.get_config()  # hyper-parameters only (not verbose)
    differ = [f"{k} is {have[k]!r}, not {v!r}" for k, v in (wanted or {}).items()
              if k in have and json.loads(json.dumps(have[k])) != json.loads(json.dumps(v))]
    if differ:
        print(f"not reusing {model.info.path}: its {'; '.join(differ)}", file=sys.stderr,
              flush=True)
        return None
    print(f"reusing {model.info.path} (same data, holdouts unseen)", file=sys.stderr, flush=True)
    both = holdout_probas(model, splits)
    metrics = read_json(model.info.path / METRICS_FILE)
    return Trained(model, metrics, {task: both[task].task(task) for task in TASKS}, both)


def _version(member: Trained) -> str:
    """A reused member's artifact version; a repeat (``transformer-2``) has none of its own."""
    if member.model.info is None:
        return f"trained with the ensemble (seed {member.model.get_config().get('seed')})"
    return member.model.info.version


def assemble_cascade(members: Mapping[str, Trained], splits: Splits,
                     config: CascadeConfig) -> Trained:
    """The cascade of the ANN and transformer trained in this run: the threshold chosen on the
    topic holdout from their selection-run probabilities, both holdouts scored through the same
    route, and the routed share recorded per task."""
    cheap, accurate = (members[k] for k in CASCADE_MEMBERS)
    threshold, history = choose_threshold(splits.topic.holdout.labels,
                                          cheap.holdout_both["topic"].topic,
                                          accurate.holdout_both["topic"].topic, config.tolerance)
    model = CascadeModel.from_members(cheap.model, accurate.model, threshold, config.tolerance)
    proba = {task: cascade_proba(cheap.holdout_both[task], accurate.holdout_both[task],
                                 model.route(cheap.holdout_both[task])).task(task)
             for task in TASKS}
    metrics = holdout_metrics(splits, proba)
    metrics.update(
        train_seconds=round(sum(t.metrics["train_seconds"] for t in (cheap, accurate)), 2),
        history=history, **tuning_metrics(model, history, splits, cheap.holdout_both),
    )
    refits = [t.metrics["refit"] for t in (cheap, accurate) if "refit" in t.metrics]
    if refits:
        # The shipped ANN is not the one the threshold was chosen with (docs/transformer.md)
        print(f"warning: the cascade's threshold {threshold} was chosen with the selection-run "
              "ANN but ships with the ANN refit on train + holdout, whose confidences differ, "
              "so the share it routes can too (--no-refit ships the ANN it was chosen with)",
              file=sys.stderr, flush=True)
        entry = _refit_entry(splits, {"threshold": threshold}, 0.0)
        entry["train_seconds"] = round(sum(r["train_seconds"] for r in refits), 2)
        metrics["refit"] = entry
    metrics["holdout_scored_before_refit"] = bool(refits)
    metrics[f"predict_us_per_tweet_batch{TIMING_BATCH}"] = round(
        predict_us_per_tweet(model, splits.topic.texts("holdout")), 2)
    return Trained(model, metrics, proba)


def train_models(
    splits: Splits,
    kinds: Sequence[str] = DEFAULT_TRAIN_KINDS,
    out_dir: Path = Path("models"),
    config: Mapping[str, Mapping[str, Any]] | None = None,
    refit: bool = False,
    teacher: Teacher | None = None,
    teacher_kind: str | None = None,
    published: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Train each of ``kinds``, write an artifact per kind under ``out_dir`` (switching its
    ``current`` when complete) and return the version dirs. ``config`` maps a kind to overrides
    of its default hyper-parameters (e.g. ``{"ann": {"epochs": 3}}``). ``refit``: ship a model
    refitted on train + holdout (module notes). An ``ensemble`` whose members are all among
    ``kinds`` is assembled from them, last. ``teacher``: distil it into the kinds that can
    (:func:`distils`). ``teacher_kind``, without ``teacher``: a kind trained first, whose
    selection model (:meth:`Teacher.of_this_run`) teaches them instead; when it is not one of
    ``kinds`` it is trained to teach only (no refit, no artifact). ``published``, when given,
    gets each kind's version dir as soon as it is published: what a caller interrupted before
    the return can report as this run's, where ``current`` may also have been moved by others."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
        check_switchable(Path(out_dir) / kind)
    for task in TASKS:
        if len(splits.task(task).holdout) == 0:
            split = splits.task(task)
            raise DataError(f"{split.train.source}: the {task} holdout is empty (15% of each "
                            f"label, and {len(split.train)} rows give none); it is needed for "
                            "early stopping and metrics: give at least two rows per label")
    if teacher_kind is not None and (teacher is not None or teacher_kind not in KINDS
                                     or distils(teacher_kind) or teacher_kind in ASSEMBLED
                                     or not any(distils(kind) for kind in kinds)):
        raise ValueError(f"teacher_kind {teacher_kind!r}: must be a kind that learns from no "
                         f"teacher itself, for a student among {kinds}, given without a teacher")
    config = config or {}
    members = {
        "ensemble": tuple(config.get("ensemble", {}).get("members", MEMBER_KINDS)),
        "cascade": CASCADE_MEMBERS,
    }
    trained: dict[str, Trained] = {}
    for kind in ASSEMBLED:  # members not trained in this run but already trained well enough
        if kind in kinds:
            for member in set(members[kind]) - set(kinds) - set(trained):
                wanted = config.get(kind, {}).get("member_configs", {}).get(member)
                reused = reuse_member(member, Path(out_dir), splits, wanted)
                if reused is not None:
                    trained[member] = reused
    # transformer-2, ...: further fine-tunes for an ensemble assembled from this run (they have
    # no artifact of their own to reuse); an ensemble that trains its own members trains them too.
    repeats = [n for n in members["ensemble"] if member_kind(n) != n] if "ensemble" in kinds else []
    assemble = {k: k in kinds and set(members[k]) - set(repeats) <= set(kinds) | set(trained)
                for k in ASSEMBLED}
    if teacher_kind is not None and teacher_kind not in kinds:
        teaching = train_one(teacher_kind, splits, config.get(teacher_kind, {}), refit=False,
                             keep_selection=True)
        assert teaching.selection is not None
        teacher = Teacher.of_this_run(teaching.selection, teacher_kind)
        figures = "  ".join(f"{t} acc {teaching.metrics[t]['accuracy']:.4f}" for t in TASKS)
        print(f"{teacher_kind}: trained to teach, not saved: holdout {figures}  in "
              f"{teaching.metrics['train_seconds']:.0f}s", file=sys.stderr, flush=True)
    order = ([k for k in kinds if k == teacher_kind]  # first: it teaches the others
             + [k for k in kinds if k not in ASSEMBLED and k != teacher_kind]
             + sorted((k for k in ASSEMBLED if k in kinds),  # an ensemble with repeats last
                      key=lambda k: k == "ensemble" and bool(repeats)))
    paths: dict[str, Path] = published if published is not None else {}
    for kind in order:
        if kind == "ensemble" and assemble[kind]:
            # The repeats train last, after every kind that is published on its own: each is as
            # slow as the transformer, and a run cut short (a time limit, a Ctrl-C, a failure in
            # a cheap member) then keeps the artifacts it finished instead of losing them behind
            # fine-tunes it cannot publish.
            ensemble_config = EnsembleConfig(**config.get("ensemble", {}))  # seeds moved on
            for name in repeats:
                trained[name] = train_one(member_kind(name), splits,
                                          ensemble_config.member_configs.get(name, {}), refit,
                                          name=name)
            result = assemble_ensemble({k: trained[k] for k in members[kind]}, splits)
        elif kind == "cascade" and assemble[kind]:
            result = assemble_cascade({k: trained[k] for k in members[kind]}, splits,
                                      CascadeConfig(**config.get("cascade", {})))
        else:
            result = train_one(kind, splits, config.get(kind, {}), refit,
                               teacher if distils(kind) else None,
                               keep_selection=kind == teacher_kind)
        trained[kind] = result
        if kind == teacher_kind:
            assert result.selection is not None
            teacher = Teacher.of_this_run(result.selection, kind)
        metrics = result.metrics
        extra: dict[str, Any] = {
            "built_with": provenance(),
            "data": {t: splits.task(t).describe() for t in TASKS},
            "refit_on_holdout": bool(metrics.get("holdout_scored_before_refit"))}
        if kind in ASSEMBLED:
            # The members' files are copied in, so nothing depends on these versions; they say
            # which artifacts went in, reused ones included. One that trained its own members
            # took none.
            extra["members"] = {
                m: (paths[m].name if m in paths else _version(trained[m])) if assemble[kind]
                else f"trained with the {kind}" for m in members[kind]}
        rows = trained_rows(splits, extra["refit_on_holdout"])

        def write_files(directory: Path, model: TwoHeadModel = result.model,
                        rows: dict[str, np.ndarray] = rows) -> None:
            model.save(directory)
            save_arrays(directory / TRAINED_ROWS_FILE, rows)

        paths[kind] = write_artifact(
            Path(out_dir), kind, write_files,
            metrics=metrics, config=result.model.get_config(),
            data_fingerprint=splits.fingerprint(), extra=extra,
        )
        figures = "  ".join(f"{t} acc {metrics[t]['accuracy']:.4f} F1 {metrics[t]['macro_f1']:.4f}"
                            for t in TASKS)
        print(f"{kind}: holdout {figures}  in {metrics['train_seconds']:.0f}s"
              + (f" (+{metrics['refit']['train_seconds']:.0f}s refit)"
                 if "refit" in metrics else "")
              + f" → {paths[kind]}", file=sys.stderr, flush=True)
    return {kind: paths[kind] for kind in kinds}


def trained_rows(splits: Splits, refit: bool) -> dict[str, np.ndarray]:
    """Per task, the sorted hashes of the rows a model of this run trained on: the train split,
    and the holdout too when it was refit on it; and those of their model texts, both tasks'."""
    rows, texts = {}, []
    for task in TASKS:
        split = splits.task(task)
        parts = [split.train, split.holdout] if refit else [split.train]
        rows[task] = np.unique(np.concatenate([row_hashes(p.texts, p.labels) for p in parts]))
        texts += split.texts("train") + (split.texts("holdout") if refit else [])
    rows[MODEL_TEXTS] = np.unique(text_hashes(texts))
    return rows


def train_default(
    kinds: Sequence[str], out_dir: Path, data_dir: Path | None = None, refit: bool = True
) -> dict[str, Path]:
    """Both tasks' training CSVs from ``data_dir`` (downloaded when absent) → ``kinds`` under
    ``out_dir`` with default settings, a student taught by the run's linear model (never a
    transformer: the demo's first model must not wait for one): what ``fintweet demo`` runs
    when it has no model."""
    teacher_kind = RUN_TEACHER if any(distils(kind) for kind in kinds) else None
    return train_models(load_splits(data_dir), kinds, out_dir, refit=refit,
                        teacher_kind=teacher_kind)


def results_table(paths: Mapping[str, Path]) -> str:
    """Holdout figures per model and task; "train s" includes the refit when there was one."""
    rows: list[tuple[str, ...]] = [("model", "topic acc", "topic F1", "sent. acc", "sent. F1",
                                    "train s", f"µs/tweet@{TIMING_BATCH}", "version")]
    refit = False
    tuned: dict[str, str] = {}
    for kind, path in paths.items():
        metrics = read_json(path / "metrics.json")
        if "tuned_on_holdout" in metrics:
            tuned[kind] = metrics["tuned_on_holdout"]
        seconds = metrics["train_seconds"]
        if "refit" in metrics:
            seconds += metrics["refit"]["train_seconds"]
            refit = True
        rows.append((
            kind,
            *(f"{metrics[t][k]:.4f}" for t in TASKS for k in ("accuracy", "macro_f1")),
            f"{seconds:.1f}", f"{metrics[f'predict_us_per_tweet_batch{TIMING_BATCH}']:.1f}",
            path.name,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    if refit:
        table += ("\n(accuracy and macro-F1: each task's holdout, scored before each model was "
                  "refit on train + holdout)")
    for kind, what in tuned.items():
        table += (f"\n({kind}: {what} was chosen on the holdouts, so its figures there are "
                  "a little optimistic)")
    return table
