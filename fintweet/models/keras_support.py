"""What the two Keras models share: quiet TensorFlow logs, seeding, the two-task training set,
holdout-driven epoch selection, sparse conversion and a compiled inference function
(``model.predict`` costs milliseconds of per-call set-up, which at a worker batch would be most
of the budget)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from fintweet.core.artifacts import ArtifactError
from fintweet.core.labels import TASKS, num_classes
from fintweet.models.base import Proba, TaskSets, class_weights
from fintweet.models.features import Tokens
from fintweet.models.scoring import accuracy, macro_f1, selection_score

if not logging.getLogger().isEnabledFor(logging.DEBUG):
    tf.get_logger().setLevel(logging.ERROR)

PREDICT_CHUNK = 8192


@functools.cache
def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (asked once per process: the answer cannot change)."""
    return bool(tf.config.list_physical_devices("GPU"))


def seed_everything(seed: int) -> None:
    """Python, NumPy and TF seeds plus, on CPU, TF's deterministic kernels: same data + config →
    same weights (a test checks it). Process-wide; inference is deterministic anyway.

    On a GPU the seeds are set but op determinism is not forced: TF has no deterministic GPU
    kernel for some sparse/segment ops the sparse input layers use, and would refuse to train."""
    keras.utils.set_random_seed(seed)
    if not tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class UnionSet:
    """Both tasks' training tweets as one set for a network with two heads: each row carries a
    label for one task only, and the other head's loss is masked on it (weight 0)."""

    tokens: list[Tokens]
    targets: dict[str, np.ndarray]  # task → class id per row (0 where the row has none)
    weights: dict[str, np.ndarray]  # task → sample weight per row (0 where it has no label)


def union_set(sets: TaskSets, class_weight_power: float,
              task_weights: dict[str, float]) -> UnionSet:
    """Rows of the topic set, then of the sentiment set. Each head's weights are its class
    weights scaled so that head's loss is the mean over its *own* rows (not diluted by the
    other task's rows, which carry weight 0 for it), times ``task_weights[task]``."""
    tokens = sets.topic.tokens + sets.sentiment.tokens
    n = len(tokens)
    offsets = {"topic": (0, len(sets.topic)), "sentiment": (len(sets.topic), n)}
    targets: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    for task in TASKS:
        labels = sets.task(task).labels
        start, stop = offsets[task]
        target = np.zeros(n, dtype=np.int64)
        target[start:stop] = labels
        weight = np.zeros(n, dtype=np.float32)
        weight[start:stop] = class_weights(labels, num_classes(task), class_weight_power)[labels]
        weight *= np.float32(n / len(labels) * task_weights.get(task, 1.0))
        targets[task], weights[task] = target, weight
    return UnionSet(tokens, targets, weights)


def csr_to_sparse_tensor(matrix: sp.csr_matrix) -> tf.SparseTensor:
    """CSR with sorted column indices per row is already in the canonical order TF expects."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    indices = np.column_stack((rows, matrix.indices.astype(np.int64)))
    return tf.SparseTensor(indices, matrix.data.astype(np.float32, copy=False), matrix.shape)


def compiled_forward(model: keras.Model, input_spec: Any) -> Callable[[Any], Any]:
    """``model(x, training=False)`` traced once for ``input_spec`` (batch dimension None)."""

    @tf.function(input_signature=[input_spec], reduce_retracing=True)
    def forward(batch: Any) -> Any:
        return model(batch, training=False)

    return forward


def load_keras_model(path: Path) -> keras.Model:
    """``safe_mode`` stays on: a ``.keras`` file with a Lambda layer (stored code) is refused."""
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ArtifactError(f"{path}: cannot load the Keras model ({exc})") from None


class HoldoutSelection(keras.callbacks.Callback):
    """Early stopping and best-epoch selection on both holdouts: the score is the mean over the
    two tasks of accuracy + macro-F1 (:func:`fintweet.models.scoring.selection_score`); the best
    epoch's weights are restored at the end. Prints one line per epoch so a long training run
    shows progress."""

    def __init__(
        self, predict: Callable[[], Proba], holdout: TaskSets, patience: int,
        verbose: bool = True, tag: str = "",
    ) -> None:
        super().__init__()
        self._predict = predict
        self._labels = {task: holdout.task(task).labels for task in TASKS}
        self.patience = patience
        self.verbose = verbose
        self.tag = tag
        self.best_score = -np.inf
        self.best_epoch = -1
        self.history: list[dict[str, Any]] = []
        self._best_weights: list[np.ndarray] | None = None
        self._started = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        proba = self._predict()
        entry: dict[str, Any] = {"epoch": epoch + 1,
                                 "loss": float((logs or {}).get("loss", float("nan")))}
        scores = []
        for task in TASKS:
            labels, predicted = self._labels[task], proba.task(task).argmax(axis=1)
            entry[task] = {"accuracy": accuracy(labels, predicted),
                           "macro_f1": macro_f1(labels, predicted)}
            scores.append(selection_score(labels, predicted))
        score = float(np.mean(scores))
        self.history.append(entry)
        improved = score > self.best_score + 1e-6
        if improved:
            self.best_score, self.best_epoch = score, epoch
            self._best_weights = [w.copy() for w in self.model.get_weights()]
        if self.verbose:
            figures = "  ".join(
                f"{task} acc {entry[task]['accuracy']:.4f} F1 {entry[task]['macro_f1']:.4f}"
                for task in TASKS
            )
            print(f"{self.tag}epoch {epoch + 1:3d}  loss {entry['loss']:.4f}  holdout {figures}"
                  f" {'*' if improved else ' '} ({time.perf_counter() - self._started:.0f}s)",
                  file=sys.stderr, flush=True)
        if epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
