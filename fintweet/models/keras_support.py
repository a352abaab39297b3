"""What the two Keras models share: seeding, holdout-driven epoch selection, sparse conversion
and a compiled inference function (``model.predict`` costs milliseconds of per-call set-up,
which at a 512-tweet batch would be most of the worker's budget)."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from fintweet.core.artifacts import ArtifactError
from fintweet.models.metrics import accuracy, holdout_score, macro_f1

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


def csr_to_sparse_tensor(matrix: sp.csr_matrix) -> tf.SparseTensor:
    """CSR with sorted column indices per row is already in the canonical order TF expects."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    indices = np.column_stack((rows, matrix.indices.astype(np.int64)))
    return tf.SparseTensor(indices, matrix.data.astype(np.float32, copy=False), matrix.shape)


def compiled_forward(model: keras.Model, input_spec: Any) -> Callable[[Any], tf.Tensor]:
    """``model(x, training=False)`` traced once for ``input_spec`` (batch dimension None)."""

    @tf.function(input_signature=[input_spec], reduce_retracing=True)
    def forward(batch: Any) -> tf.Tensor:
        return model(batch, training=False)

    return forward


def load_keras_model(path: Path) -> keras.Model:
    """``safe_mode`` stays on: a ``.keras`` file with a Lambda layer (stored code) is refused."""
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ArtifactError(f"{path}: cannot load the Keras model ({exc})") from None


class HoldoutSelection(keras.callbacks.Callback):
    """Early stopping and best-epoch selection on the holdout's accuracy + macro-F1 (see
    :func:`fintweet.models.metrics.holdout_score`), restoring the best epoch's weights at the end.
    Prints one line per epoch so a long training run shows progress."""

    def __init__(
        self, predict: Callable[[], np.ndarray], labels: np.ndarray, patience: int,
        verbose: bool = True, tag: str = "",
    ) -> None:
        super().__init__()
        self._predict = predict
        self._labels = labels
        self.patience = patience
        self.verbose = verbose
        self.tag = tag
        self.best_score = -np.inf
        self.best_epoch = -1
        self.history: list[dict[str, float]] = []
        self._best_weights: list[np.ndarray] | None = None
        self._started = time.perf_counter()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        predicted = self._predict().argmax(axis=1)
        acc = accuracy(self._labels, predicted)
        f1 = macro_f1(self._labels, predicted)
        score = holdout_score(self._labels, predicted)
        loss = float((logs or {}).get("loss", float("nan")))
        self.history.append(
            {"epoch": epoch + 1, "loss": loss, "accuracy": acc, "macro_f1": f1}
        )
        improved = score > self.best_score + 1e-6
        if improved:
            self.best_score, self.best_epoch = score, epoch
            self._best_weights = [w.copy() for w in self.model.get_weights()]
        if self.verbose:
            mark = "*" if improved else " "
            print(
                f"{self.tag}epoch {epoch + 1:3d}  loss {loss:.4f}  holdout acc {acc:.4f}  "
                f"macro-F1 {f1:.4f} {mark} ({time.perf_counter() - self._started:.0f}s)",
                file=sys.stderr, flush=True,
            )
        if epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
