"""What every model is: an estimator with two heads (topic and sentiment) over *model texts*,
which can write itself into an artifact dir and be rebuilt from one without running stored code.

Models read the ``model_text`` field of :func:`fintweet.core.text.prepare` (or
:func:`~fintweet.core.text.prepare_model_texts`), never raw tweets: text is prepared once per
tweet by whoever holds it (worker, trainer, evaluate, web app). Inside a model the text is
tokenized once (:meth:`TwoHeadModel.predict_proba`), and every feature block, and every member
of the ensemble, reads the same token lists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from fintweet.core.artifacts import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_TEXTS,
    TRAINED_ROWS_FILE,
    ArtifactError,
    ArtifactInfo,
    load_arrays,
    read_json,
    version_remedy,
)
from fintweet.core.data import row_hashes
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TASKS, num_classes
from fintweet.core.text import tokenize
from fintweet.models.features import Tokens


@dataclass(frozen=True)
class Proba:
    """Class probabilities of a batch, one float32 matrix per head; rows sum to 1."""

    topic: np.ndarray  # (n, NUM_TOPICS)
    sentiment: np.ndarray  # (n, NUM_SENTIMENTS)

    def __len__(self) -> int:
        return len(self.topic)

    def task(self, task: str) -> np.ndarray:
        """The head of ``task`` ("topic" or "sentiment")."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        return self.topic if task == "topic" else self.sentiment

    @classmethod
    def empty(cls) -> Proba:
        return cls(np.zeros((0, NUM_TOPICS), np.float32), np.zeros((0, NUM_SENTIMENTS), np.float32))


@dataclass(frozen=True)
class LabelledTexts:
    """Model texts with their class ids, for one task. The two tasks' sets are different
    tweets, so ``fit`` takes one of these per task."""

    texts: Sequence[str]
    labels: np.ndarray
    # A teacher model's probabilities of both heads on these texts, for a kind that distils
    # (the ANN and the CNN: their ``distill`` setting); None: the labels alone.
    teacher: Proba | None = None


class Classifier(Protocol):
    """What the worker, ``evaluate``, ``classify`` and the web app need of a loaded model."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict_proba(self, texts: Sequence[str]) -> Proba: ...


def model_tag(model: Classifier) -> str:
    """``name@version``: how stored results, answers and metrics name the model."""
    return f"{model.name}@{model.version}"


# How far a row of float32 probabilities may sum from 1: softmax in float32 (or bfloat16 cast
# up) is within 1e-3 of it.
PROBA_SUM_TOLERANCE = 1e-2


def checked_proba(model: Classifier, texts: Sequence[str]) -> Proba:
    """``predict_proba`` as float32, refused (ValueError) unless each head has one row of its
    classes per text: answers of the wrong shape would land on the wrong tweets."""
    proba = model.predict_proba(texts)
    topic = np.asarray(proba.topic, dtype=np.float32)
    sentiment = np.asarray(proba.sentiment, dtype=np.float32)
    if topic.shape != (len(texts), NUM_TOPICS) or sentiment.shape != (len(texts), NUM_SENTIMENTS):
        raise ValueError(f"{model_tag(model)} returned topic {topic.shape} and sentiment "
                         f"{sentiment.shape} probabilities for {len(texts)} texts")
    # Rows that are no distribution (all zeros from a model that made no batch, NaN from a
    # broken weight) would be stored as answers, each tweet filed under class 0.
    for head, rows in (("topic", topic), ("sentiment", sentiment)):
        sums = rows.sum(axis=1)
        bad = ~(np.isfinite(sums) & (np.abs(sums - 1) <= PROBA_SUM_TOLERANCE))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{model_tag(model)} returned {int(bad.sum())} {head} row(s) that "
                             f"are no probabilities (row {row} sums to {rows[row].sum():.4g})")
    return Proba(topic, sentiment)


@dataclass(frozen=True)
class TokenizedSet:
    """One task's training (or holdout) set, tokenized once for every feature block."""

    tokens: list[Tokens]
    labels: np.ndarray
    teacher: Proba | None = None  # see LabelledTexts

    def __len__(self) -> int:
        return len(self.labels)

    def joined(self) -> LabelledTexts:
        """The tokens joined by spaces, for a model that reads texts but was handed tokens:
        the model text less the characters the word tokenizer drops."""
        return LabelledTexts([" ".join(tokens) for tokens in self.tokens], self.labels,
                             self.teacher)


@dataclass(frozen=True)
class TaskSets:
    """Both tasks' sets, the unit models train and select on."""

    topic: TokenizedSet
    sentiment: TokenizedSet

    @classmethod
    def from_texts(cls, topic: LabelledTexts, sentiment: LabelledTexts) -> TaskSets:
        return cls(tokenized("topic", topic), tokenized("sentiment", sentiment))

    def task(self, task: str) -> TokenizedSet:
        return self.topic if task == "topic" else self.sentiment


# A file at least this much of whose rows a model trained on is (part of) its training data: an
# independent split repeats some training rows word for word too (templated headlines, ~15% of
# the topic holdout once links are masked), never most of them.
SEEN_SHARE = 0.5


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from: its verified artifact and the holdout figures recorded
    when it was trained (per task: accuracy, macro_f1, weighted_f1, n)."""

    path: Path
    kind: str
    version: str
    manifest: dict[str, Any]
    holdout: dict[str, dict[str, Any]]

    @property
    def refit_on_holdout(self) -> bool:
        return bool(self.manifest.get("refit_on_holdout"))

    def data(self, task: str) -> dict[str, Any]:
        """What the artifact records of ``task``'s training data (fingerprint, source, sizes)."""
        return dict(self.manifest.get("data", {}).get(task, {}))

    def trained_rows(self, task: str) -> np.ndarray | None:
        """The hashes of the rows of ``task`` it trained on (``row_hashes``), where recorded."""
        return self._trained(task)

    def trained_texts(self) -> np.ndarray | None:
        """The hashes of the model texts it trained on, both tasks' (``text_hashes``), where
        recorded."""
        return self._trained(MODEL_TEXTS)

    def _trained(self, name: str) -> np.ndarray | None:
        if TRAINED_ROWS_FILE not in self.manifest.get("files", {}):
            return None
        return load_arrays(self.path / TRAINED_ROWS_FILE).get(name)

    def has_seen(self, task: str, csv_fingerprint: str, holdout_only: bool,
                 rows: tuple[Sequence[str], np.ndarray] | None = None) -> str | None:
        """Why this model has trained on (some of) the rows of a CSV, or None when it has not,
        as far as the artifact tells: it records the fingerprint of each task's training CSV
        and whether it was refit on the holdout. ``holdout_only``: only the CSV's holdout rows
        are used (``evaluate --holdout``, the demo's default replay). ``rows`` (texts, labels):
        the rows scored, checked against the rows it trained on, which also finds its training
        rows in another file (a reordered, cut or merged copy)."""
        reason = self._seen_csv(task, csv_fingerprint, holdout_only)
        trained = self.trained_rows(task) if reason is None and rows is not None else None
        if trained is not None and rows is not None and len(rows[0]):
            n = int(np.isin(row_hashes(*rows), trained).sum())
            if n >= SEEN_SHARE * len(rows[0]):
                return (f"{n:,} of {len(rows[0]):,} rows are rows it trained on, with the same "
                        "text and label")
        return reason

    def _seen_csv(self, task: str, csv_fingerprint: str, holdout_only: bool) -> str | None:
        data = self.data(task)
        if data.get("subsample_of") == csv_fingerprint:  # its holdout is not this CSV's
            return ("it trained on a subsample of this CSV (train --max-rows), so some of these "
                    "rows are its training rows")
        if data.get("fingerprint") != csv_fingerprint:
            return None
        if not holdout_only:
            return "this CSV is its training data"
        if self.refit_on_holdout:
            return ("it was refit on train + holdout (train with --no-refit to keep the holdout "
                    "unseen)")
        return None


def tokenize_all(texts: Sequence[str]) -> list[Tokens]:
    return [tokenize(t) for t in texts]


def check_labels(task: str, texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if len(texts) != len(labels):
        raise ValueError(f"{task}: {len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError(f"{task}: cannot train on no texts")
    top = num_classes(task) - 1
    if labels.min() < 0 or labels.max() > top:
        raise ValueError(f"{task} labels must be within 0..{top}")
    return labels


def tokenized(task: str, data: LabelledTexts) -> TokenizedSet:
    if data.teacher is not None and len(data.teacher.topic) != len(data.texts):
        raise ValueError(f"{task}: {len(data.texts)} texts but teacher probabilities for "
                         f"{len(data.teacher.topic)}")
    return TokenizedSet(tokenize_all(data.texts), check_labels(task, data.texts, data.labels),
                        data.teacher)


def class_weights(labels: np.ndarray, n_classes: int, power: float = 0.5) -> np.ndarray:
    """Per-class weights ``(1/freq)**power``, scaled so the average *sample* weight is 1.

    Why tempered (power 0.5) rather than the raw inverse frequency the reference notebook used:
    raw weights make a 44-tweet class (IPO) weigh 80x the largest one, which buys minority recall
    with a lot of majority precision and makes training noisy; the square root keeps most of the
    macro-F1 gain without the accuracy loss (docs/models.md)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = (counts[present].sum() / counts[present]) ** power
    weights /= (weights[labels]).mean()
    return weights.astype(np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in place on a float32 array (the project's one softmax: the linear
    model's scores and the ANN's folded CPU forward both end here)."""
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def config_from_dict(config_class: type[Any], data: dict[str, Any]) -> Any:
    """A config dataclass from ``config.json`` (JSON lists back to tuples; ``kind`` dropped).
    An unknown key raises TypeError, which the loader reports as an ArtifactError."""
    known = {f.name for f in fields(config_class)}
    values = {k: v for k, v in data.items() if k != "kind"}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown setting(s) {sorted(unknown)}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class TwoHeadModel(ABC):
    """``fit`` / ``predict_proba`` on model texts, ``save`` / ``from_artifact`` on an artifact dir.

    ``config`` holds hyper-parameters only (what ``config.json`` stores). Everything learned
    carries a trailing underscore (``history_``, ``selected_`` and each kind's weights).
    ``info`` is set by :meth:`from_artifact` and says where a loaded model came from."""

    name: ClassVar[str]
    config_class: ClassVar[type[Any]]
    # Whether ``fintweet train``'s refit on train + holdout applies to this kind. A kind that
    # costs most of an hour per fit says False: the refit would double that for a gain the
    # official splits did not show for the fast kinds (~0).
    refit_on_holdout: ClassVar[bool] = True

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.info: ModelInfo | None = None
        self.history_: list[dict[str, Any]] = []  # per-epoch (or per-C) holdout scores
        # What ``fit`` chose on the holdout (epochs, C), as config overrides: a refit on train +
        # holdout, which has no holdout left to choose with, reuses the choice.
        self.selected_: dict[str, Any] = {}

    @property
    def version(self) -> str:
        return self.info.version if self.info is not None else "unsaved"

    def members(self) -> list[TwoHeadModel]:
        """The models this one is assembled from (ensemble, cascade); none for a single one."""
        return []

    def refits(self) -> bool:
        """Whether ``fintweet train``'s refit applies: not when this kind or any member's says
        no (a cascade or ensemble that trains its own transformer would fine-tune it twice)."""
        return self.refit_on_holdout and all(member.refits() for member in self.members())

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters, JSON-able; what ``config.json`` stores."""
        config = asdict(self.config)
        config.pop("verbose", None)  # how chatty training is, not how the model is built
        return {"kind": self.name, **config}

    def fit(
        self, topic: LabelledTexts, sentiment: LabelledTexts,
        validation: tuple[LabelledTexts, LabelledTexts] | None = None,
    ) -> Self:
        """Train both heads; the two sets are different tweets. ``validation`` (the trainer's
        stratified holdout of each task) drives early stopping and picks the epoch or C; it is
        never trained on."""
        held = TaskSets.from_texts(*validation) if validation is not None else None
        return self.fit_tokens(TaskSets.from_texts(topic, sentiment), held)

    @abstractmethod
    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        """:meth:`fit` on already tokenized sets (the ensemble tokenizes once for its members)."""

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        """Both heads' probabilities for a batch of model texts."""
        if len(texts) == 0:
            return Proba.empty()
        return self.predict_tokens(tokenize_all(texts))

    @abstractmethod
    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        """:meth:`predict_proba` on token lists (non-empty batch)."""

    def predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each head's class ids, ``{"topic": (n,), "sentiment": (n,)}``: the most probable
        class of :meth:`predict_proba`, as scikit-learn's ``predict``."""
        proba = self.predict_proba(texts)
        return {task: proba.task(task).argmax(axis=1) for task in TASKS}

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write this model's own files (not the common artifact files) into ``directory``."""

    @classmethod
    @abstractmethod
    def load_files(cls, directory: Path, config: Any) -> Self:
        """Rebuild from files written by :meth:`save` and the stored hyper-parameters."""

    @classmethod
    def from_artifact(cls, info: ArtifactInfo) -> Self:
        """The model stored in a verified artifact, with its :class:`ModelInfo`."""
        config_data = read_json(info.file(CONFIG_FILE))
        metrics = read_json(info.file(METRICS_FILE))
        if not isinstance(config_data, dict) or not isinstance(metrics, dict):
            raise ArtifactError(f"{info.path}: config.json and metrics.json must be JSON objects")
        try:
            model = cls.load_files(info.path, config_from_dict(cls.config_class, config_data))
        except ArtifactError:
            raise
        except (TypeError, ValueError, KeyError) as exc:  # e.g. a config from another version
            raise ArtifactError(
                f"{info.path}: cannot rebuild the {info.kind} model ({exc}); retrain it with "
                f"`fintweet train --models {info.kind}`"
            ) from None
        for task in TASKS:  # an AttributeError traceback from a hand-edited file
            if not isinstance(metrics.get(task, {}), dict):
                raise ArtifactError(
                    f"{info.file(METRICS_FILE)}: {task!r} must be a JSON object of that head's "
                    f"holdout figures, not {metrics[task]!r:.40} (edited by hand?); "
                    f"{version_remedy(info.path)}")
        holdout = {
            task: {k: metrics.get(task, {}).get(k) for k in ("accuracy", "macro_f1",
                                                              "weighted_f1", "n")}
            for task in TASKS
        }
        model.info = ModelInfo(info.path, info.kind, info.version, info.manifest, holdout)
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r})"
