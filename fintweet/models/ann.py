"""The worker's default model: a bag of word uni+bigrams (TF-IDF, L2) fed to a Keras MLP as a
sparse tensor, so the first layer costs per token present rather than per vocabulary entry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import tensorflow as tf

from fintweet.core.artifacts import ArtifactError, load_arrays, save_arrays
from fintweet.core.labels import NUM_TOPICS
from fintweet.models.base import TopicModel, Validation, check_fit_input, class_weights
from fintweet.models.features import NgramConfig, NgramVectorizer
from fintweet.models.keras_support import (
    HoldoutSelection,
    compiled_forward,
    csr_to_sparse_tensor,
    predict_in_chunks,
    seed_everything,
)

MODEL_FILE = "model.keras"
VOCAB_FILE = "vectorizer.json"
IDF_FILE = "vectorizer.npz"


@dataclass
class AnnConfig:
    max_n: int = 2
    min_df: int = 2
    max_features: int | None = None
    hidden: tuple[int, ...] = (512,)
    dropout: float = 0.5
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    patience: int = 4
    class_weight_power: float = 0.5
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnConfig:
        data = dict(data)
        data.pop("kind", None)
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


def build_ann(n_features: int, config: AnnConfig) -> keras.Model:
    inputs = keras.Input(shape=(n_features,), sparse=True, name="bag_of_ngrams")
    x = inputs
    for i, units in enumerate(config.hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        x = keras.layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(NUM_TOPICS, activation="softmax", name="topic")(x)
    return keras.Model(inputs, outputs, name="fintweet_ann")


class AnnTopicModel(TopicModel):
    name = "ann"
    config_class = AnnConfig

    def __init__(self, config: AnnConfig | None = None) -> None:
        super().__init__()
        self.config = config or AnnConfig()
        self.vectorizer = NgramVectorizer(self._ngram_config())
        self.model: keras.Model | None = None
        self._forward: Any = None

    def _ngram_config(self) -> NgramConfig:
        return NgramConfig(
            analyzer="word", max_n=self.config.max_n, min_df=self.config.min_df,
            max_features=self.config.max_features,
        )

    def get_config(self) -> dict[str, Any]:
        config = asdict(self.config)
        config.pop("verbose")
        return {"kind": self.name, **config}

    def fit(
        self, texts: Sequence[str], labels: np.ndarray, validation: Validation | None = None
    ) -> Self:
        labels = check_fit_input(texts, labels)
        cfg = self.config
        seed_everything(cfg.seed)
        features = self.vectorizer.fit_transform(texts)
        self.model = build_ann(self.vectorizer.n_features, cfg)
        self.model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
        self._forward = None
        weights = class_weights(labels, cfg.class_weight_power)[labels]
        callbacks: list[keras.callbacks.Callback] = []
        selection = None
        if validation is not None:
            val_features = self.vectorizer.transform(validation[0])
            selection = HoldoutSelection(
                lambda: self._predict_features(val_features), np.asarray(validation[1]),
                patience=cfg.patience, verbose=cfg.verbose, tag="ann ",
            )
            callbacks.append(selection)
        self.model.fit(
            features, labels, sample_weight=weights, batch_size=cfg.batch_size,
            epochs=cfg.epochs, shuffle=True, verbose=0, callbacks=callbacks,
        )
        self.history = selection.history if selection else []
        return self

    def _predict_features(self, features: Any) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the ann model is not fitted")
        if self._forward is None:
            spec = tf.SparseTensorSpec(shape=[None, self.vectorizer.n_features], dtype=tf.float32)
            self._forward = compiled_forward(self.model, spec)
        return predict_in_chunks(
            self._forward, features, features.shape[0], NUM_TOPICS, csr_to_sparse_tensor
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._predict_features(self.vectorizer.transform(texts))

    def save(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError("the ann model is not fitted")
        # A fresh, uncompiled copy: the training model would also store Adam's two moment
        # tensors per weight, tripling the file for nothing the worker uses.
        inference = build_ann(self.vectorizer.n_features, self.config)
        inference.set_weights(self.model.get_weights())
        inference.save(directory / MODEL_FILE)
        meta, arrays = self.vectorizer.state()
        (directory / VOCAB_FILE).write_text(json.dumps(meta, ensure_ascii=False))
        save_arrays(directory / IDF_FILE, arrays)

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Self:
        instance = cls(AnnConfig.from_dict(config))
        try:
            meta = json.loads((directory / VOCAB_FILE).read_text())
            arrays = load_arrays(directory / IDF_FILE)
            instance.vectorizer = NgramVectorizer.from_state(meta, arrays)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory / VOCAB_FILE}: unusable vectorizer ({exc})") from None
        instance.model = load_keras_model(directory / MODEL_FILE)
        return instance


def load_keras_model(path: Path) -> keras.Model:
    """``safe_mode`` stays on: a ``.keras`` file with a Lambda layer (stored code) is refused."""
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ArtifactError(f"{path}: cannot load the Keras model ({exc})") from None
