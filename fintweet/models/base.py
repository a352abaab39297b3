"""What every topic model is: a scikit-learn style estimator over RAW tweets that can write
itself into an artifact dir and be rebuilt from one without running stored code."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from fintweet.core.labels import NUM_TOPICS

Validation = tuple[Sequence[str], np.ndarray]


def class_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-class weights ``(1/freq)**power``, scaled so the average *sample* weight is 1.

    Why tempered (power 0.5) rather than the raw inverse frequency the reference notebook used:
    raw weights make a 44-tweet class (IPO) weigh 80x the largest one, which buys minority recall
    with a lot of majority precision and makes training noisy; the square root keeps most of the
    macro-F1 gain without the accuracy loss (measured in the trainer notes)."""
    counts = np.bincount(labels, minlength=NUM_TOPICS).astype(np.float64)
    weights = np.zeros(NUM_TOPICS, dtype=np.float64)
    present = counts > 0
    weights[present] = (counts[present].sum() / counts[present]) ** power
    weights /= (weights[labels]).mean()
    return weights.astype(np.float32)


def check_fit_input(texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError("cannot train on no texts")
    if labels.min() < 0 or labels.max() >= NUM_TOPICS:
        raise ValueError(f"labels must be within 0..{NUM_TOPICS - 1}")
    return labels


class TopicModel(ABC):
    """``fit`` / ``predict_proba`` / ``predict`` on lists of raw tweets; ``save``/``load`` on an
    artifact dir. ``name`` is the model kind; ``version`` and ``metadata`` are set by the loader."""

    name: ClassVar[str]
    config_class: ClassVar[type[Any]]

    def __init__(self) -> None:
        self.version: str | None = None
        self.metadata: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []  # per-epoch holdout scores, when it has epochs
        # What ``fit`` chose on the holdout (epochs, C), as config overrides: a refit on train +
        # holdout, which has no holdout left to choose with, reuses the choice.
        self.selected: dict[str, Any] = {}

    @abstractmethod
    def fit(
        self, texts: Sequence[str], labels: np.ndarray, validation: Validation | None = None
    ) -> Self:
        """Train. ``validation`` (the trainer's stratified holdout) drives early stopping and
        picks the best epoch; it is never trained on."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (n, NUM_TOPICS) whose rows sum to 1."""

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba(texts).argmax(axis=1)

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters, JSON-able; what ``config.json`` stores and ``from_config`` takes."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write this model's own files (not the common artifact files) into ``directory``."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Self:
        """Rebuild from files written by :meth:`save` and the stored config."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r})"


# --- the two-head contract (sentiment issue) ------------------------------------------------------
# Every model kind answers both tasks. It reads *model texts*: the ``model_text`` field of
# ``fintweet.core.text.prepare(raw)`` (or ``prepare_model_texts``), never raw tweets, so text is
# prepared once per tweet by whoever holds it (worker, trainer, evaluate, web app).


@dataclass(frozen=True)
class Proba:
    """Class probabilities of a batch, one float32 matrix per head; rows sum to 1."""

    topic: np.ndarray  # (n, NUM_TOPICS)
    sentiment: np.ndarray  # (n, NUM_SENTIMENTS)

    def __len__(self) -> int:
        return len(self.topic)


@dataclass(frozen=True)
class LabelledTexts:
    """Model texts with their class ids, for one task. The two tasks' sets are different
    tweets, so ``fit`` takes one of these per task."""

    texts: Sequence[str]
    labels: np.ndarray


class Classifier(Protocol):
    """What the worker, ``evaluate``, ``classify`` and the web app need of a loaded model."""

    name: str
    version: str

    def predict_proba(self, texts: Sequence[str]) -> Proba: ...
