"""What the two Keras models share: quiet TensorFlow logs, seeding, the two-task training set,
holdout-driven epoch selection, sparse conversion and a compiled inference function
(``model.predict`` costs milliseconds of per-call set-up, which at a worker batch would be most
of the budget)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from fintweet.core import signals
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
    label for one task only, and the other head's loss is masked on it (weight 0). Distilling,
    targets are probability rows instead (:func:`union_set`)."""

    tokens: list[Tokens]
    # task → class id per row (0 where the row has none), or, distilling, (n, classes) targets
    targets: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]  # task → sample weight per row (0 where it has no label)

    @property
    def loss(self) -> str:
        dense = self.targets[TASKS[0]].ndim == 2
        return "categorical_crossentropy" if dense else "sparse_categorical_crossentropy"


def union_set(sets: TaskSets, class_weight_power: float,
              task_weights: dict[str, float], distill: float | None = None,
              distill_tasks: Collection[str] = TASKS) -> UnionSet:
    """Rows of the topic set, then of the sentiment set. Each head's weights are its class
    weights scaled so that head's loss is the mean over its *own* rows (not diluted by the
    other task's rows, which carry weight 0 for it), times ``task_weights[task]``.

    ``distill`` (the teacher's share, when both sets carry teacher probabilities): each head's
    target on its own rows is ``(1 - distill) * one-hot + distill * teacher``, and on the other
    task's rows, which have no label for it, the teacher's probabilities alone at weight 1. Why
    the other task's rows: they are ~2x more tweets for the sentiment head (8 k labelled, 14 k
    topic tweets), and the teacher says what it would have labelled them. Only the heads named in
    ``distill_tasks`` learn from the teacher; the others keep their labels alone (as one-hot rows,
    so both heads share one loss)."""
    unknown = set(distill_tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"distill_tasks: unknown task(s) {sorted(unknown)}; expected some of "
                         f"{', '.join(TASKS)}")
    tokens = sets.topic.tokens + sets.sentiment.tokens
    n = len(tokens)
    offsets = {"topic": (0, len(sets.topic)), "sentiment": (len(sets.topic), n)}
    teachers = [sets.topic.teacher, sets.sentiment.teacher]
    distilling = distill is not None and all(t is not None for t in teachers)
    targets: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    for task in TASKS:
        labels = sets.task(task).labels
        start, stop = offsets[task]
        own = class_weights(labels, num_classes(task), class_weight_power)[labels]
        weight = np.zeros(n, dtype=np.float32)
        weight[start:stop] = own
        if distilling and task in distill_tasks:
            assert distill is not None
            target = np.concatenate([t.task(task) for t in teachers if t is not None])
            target = target.astype(np.float32)
            one_hot = np.eye(num_classes(task), dtype=np.float32)[labels]
            target[start:stop] = (1 - distill) * one_hot + distill * target[start:stop]
            weight[:start] = weight[stop:] = 1.0
            weight *= np.float32(task_weights.get(task, 1.0))
        elif distilling:
            target = np.zeros((n, num_classes(task)), dtype=np.float32)
            target[np.arange(start, stop), labels] = 1.0
            weight *= np.float32(n / len(labels) * task_weights.get(task, 1.0))
        else:
            target = np.zeros(n, dtype=np.int64)
            target[start:stop] = labels
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


Branches = dict[str, list[str]]  # task → names of the layers only that task's head depends on


def _branch_weights(model: keras.Model, names: list[str]) -> list[list[np.ndarray]]:
    return [[w.copy() for w in model.get_layer(name).get_weights()] for name in names]


def _set_branch_weights(model: keras.Model, names: list[str],
                        weights: list[list[np.ndarray]]) -> None:
    for name, values in zip(names, weights, strict=True):
        model.get_layer(name).set_weights(values)


class StopWhenInterrupted(keras.callbacks.Callback):
    """Raise the KeyboardInterrupt of a Ctrl-C again after the batch it came in: raised inside
    TensorFlow's C code it can be swallowed, and training went on to the end."""

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if signals.interrupted():
            raise KeyboardInterrupt


class HoldoutSelection(keras.callbacks.Callback):
    """Early stopping and best-epoch selection on the holdouts, restoring the best weights at
    the end. The score of a task is (accuracy + macro-F1) / 2 on its holdout
    (:func:`fintweet.models.scoring.selection_score`).

    With ``branches`` (a network whose two heads share no layer), each task's layers are kept
    from that task's own best epoch, and training stops once neither task has improved for
    ``patience`` epochs. Without, the whole network is kept from the epoch with the best mean
    of the two tasks' scores. Prints one line per epoch so a long training run shows
    progress."""

    def __init__(
        self, predict: Callable[[], Proba], holdout: TaskSets, patience: int,
        verbose: bool = True, tag: str = "", branches: Branches | None = None,
    ) -> None:
        super().__init__()
        self._predict = predict
        self._labels = {task: holdout.task(task).labels for task in TASKS}
        self.patience = patience
        self.verbose = verbose
        self.tag = tag
        self.branches = branches
        keys = list(TASKS) if branches else ["both"]
        self.best_score = dict.fromkeys(keys, -np.inf)
        self.best_epoch = dict.fromkeys(keys, -1)
        self.history: list[dict[str, Any]] = []
        self._best: dict[str, Any] = {}
        self._started = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()
        if self.verbose:
            print(f"{self.tag}holdout after each epoch; * marks a best so far by (accuracy + "
                  f"macro-F1) / 2, and training stops after {self.patience} epochs without one",
                  file=sys.stderr, flush=True)

    def selected_epochs(self) -> dict[str, int]:
        """The chosen epoch count per task (``both`` without branches), 1-based."""
        return {key: epoch + 1 for key, epoch in self.best_epoch.items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        proba = self._predict()
        entry: dict[str, Any] = {"epoch": epoch + 1,
                                 "loss": float((logs or {}).get("loss", float("nan")))}
        scores = {}
        for task in TASKS:
            labels, predicted = self._labels[task], proba.task(task).argmax(axis=1)
            entry[task] = {"accuracy": accuracy(labels, predicted),
                           "macro_f1": macro_f1(labels, predicted)}
            scores[task] = selection_score(labels, predicted)
        if not self.branches:
            scores = {"both": float(np.mean(list(scores.values())))}
        self.history.append(entry)
        improved = []
        for key, value in scores.items():
            if value > self.best_score[key] + 1e-6:
                self.best_score[key], self.best_epoch[key] = value, epoch
                self._best[key] = (_branch_weights(self.model, self.branches[key])
                                   if self.branches else
                                   [w.copy() for w in self.model.get_weights()])
                improved.append(key)
        if self.verbose:
            figures = "  ".join(
                f"{task} acc {entry[task]['accuracy']:.4f} F1 {entry[task]['macro_f1']:.4f}"
                + ("*" if task in improved or "both" in improved else " ")
                for task in TASKS
            )
            total = (self.params or {}).get("epochs") or "?"
            print(f"{self.tag}epoch {epoch + 1:3d}/{total}  loss {entry['loss']:.4f}  holdout "
                  f"{figures} ({time.perf_counter() - self._started:.0f}s)",
                  file=sys.stderr, flush=True)
        if all(epoch - best >= self.patience for best in self.best_epoch.values()):
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.verbose and self.history:
            kept = ", ".join(f"{key} epoch {epoch}" if key != "both" else f"epoch {epoch}"
                             for key, epoch in self.selected_epochs().items())
            planned = (self.params or {}).get("epochs")
            stopped = (" (stopped early: no better holdout for "
                       f"{self.patience} epochs)" if planned and len(self.history) < planned
                       else "")
            print(f"{self.tag}keeping {kept}{stopped}", file=sys.stderr, flush=True)
        for key, weights in self._best.items():
            if self.branches:
                _set_branch_weights(self.model, self.branches[key], weights)
            else:
                self.model.set_weights(weights)


class BranchSnapshots(keras.callbacks.Callback):
    """The refit's counterpart of :class:`HoldoutSelection` with branches: train for the
    longest of the chosen epoch counts and keep each task's layers as they were after its own
    count."""

    def __init__(self, epochs: dict[str, int], branches: Branches) -> None:
        super().__init__()
        self.epochs = epochs
        self.branches = branches
        self._kept: dict[str, list[list[np.ndarray]]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for task, count in self.epochs.items():
            if epoch + 1 == count:
                self._kept[task] = _branch_weights(self.model, self.branches[task])

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for task, weights in self._kept.items():
            _set_branch_weights(self.model, self.branches[task], weights)
