"""Token embeddings → parallel Conv1D of several widths → global max pool → softmax (Kim-style
text CNN). Word order inside a window is what it adds over the bag-of-words ANN."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import tensorflow as tf

from fintweet.core.artifacts import ArtifactError
from fintweet.core.labels import NUM_TOPICS
from fintweet.models.ann import load_keras_model
from fintweet.models.base import TopicModel, Validation, check_fit_input, class_weights
from fintweet.models.features import TokenIndexer
from fintweet.models.keras_support import (
    HoldoutSelection,
    compiled_forward,
    predict_in_chunks,
    seed_everything,
)

MODEL_FILE = "model.keras"
VOCAB_FILE = "tokens.json"


@dataclass
class CnnConfig:
    min_df: int = 2
    max_len: int = 64
    embedding_dim: int = 128
    widths: tuple[int, ...] = (2, 3, 4, 5)
    filters: int = 128
    embedding_dropout: float = 0.2
    dropout: float = 0.5
    mean_pool: bool = False  # also global average pooling beside the max pool
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 30
    patience: int = 4
    class_weight_power: float = 0.5
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CnnConfig:
        data = dict(data)
        data.pop("kind", None)
        if "widths" in data:
            data["widths"] = tuple(data["widths"])
        return cls(**data)


def build_cnn(vocab_size: int, config: CnnConfig) -> keras.Model:
    inputs = keras.Input(shape=(config.max_len,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding")(inputs)
    x = keras.layers.SpatialDropout1D(
        config.embedding_dropout, seed=config.seed, name="embedding_dropout"
    )(x)
    pooled = []
    for width in config.widths:
        conv = keras.layers.Conv1D(
            config.filters, width, activation="relu", name=f"conv_{width}"
        )(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_pool_{width}")(conv))
        if config.mean_pool:
            pooled.append(keras.layers.GlobalAveragePooling1D(name=f"mean_pool_{width}")(conv))
    x = keras.layers.Concatenate(name="pooled")(pooled) if len(pooled) > 1 else pooled[0]
    x = keras.layers.Dropout(config.dropout, seed=config.seed + 1, name="dropout")(x)
    outputs = keras.layers.Dense(NUM_TOPICS, activation="softmax", name="topic")(x)
    return keras.Model(inputs, outputs, name="fintweet_cnn")


class CnnTopicModel(TopicModel):
    name = "cnn"
    config_class = CnnConfig

    def __init__(self, config: CnnConfig | None = None) -> None:
        super().__init__()
        self.config = config or CnnConfig()
        self.indexer = TokenIndexer(min_df=self.config.min_df, max_len=self.config.max_len)
        self.model: keras.Model | None = None
        self._forward: Any = None

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
        ids = self.indexer.fit(texts).transform(texts)
        self.model = build_cnn(self.indexer.vocab_size, cfg)
        self.model.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss="sparse_categorical_crossentropy",
        )
        self._forward = None
        weights = class_weights(labels, cfg.class_weight_power)[labels]
        callbacks: list[keras.callbacks.Callback] = []
        selection = None
        if validation is not None:
            val_ids = self.indexer.transform(validation[0])
            selection = HoldoutSelection(
                lambda: self._predict_ids(val_ids), np.asarray(validation[1]),
                patience=cfg.patience, verbose=cfg.verbose, tag="cnn ",
            )
            callbacks.append(selection)
        self.model.fit(
            ids, labels, sample_weight=weights, batch_size=cfg.batch_size, epochs=cfg.epochs,
            shuffle=True, verbose=0, callbacks=callbacks,
        )
        self.history = selection.history if selection else []
        return self

    def _predict_ids(self, ids: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("the cnn model is not fitted")
        if self._forward is None:
            spec = tf.TensorSpec(shape=[None, self.config.max_len], dtype=tf.int32)
            self._forward = compiled_forward(self.model, spec)
        return predict_in_chunks(self._forward, ids, len(ids), NUM_TOPICS)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self._predict_ids(self.indexer.transform(texts))

    def save(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError("the cnn model is not fitted")
        inference = build_cnn(self.indexer.vocab_size, self.config)  # without optimizer state
        inference.set_weights(self.model.get_weights())
        inference.save(directory / MODEL_FILE)
        (directory / VOCAB_FILE).write_text(json.dumps(self.indexer.state(), ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Self:
        instance = cls(CnnConfig.from_dict(config))
        try:
            instance.indexer = TokenIndexer.from_state(
                json.loads((directory / VOCAB_FILE).read_text())
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory / VOCAB_FILE}: unusable token vocabulary ({exc})"
                                ) from None
        instance.model = load_keras_model(directory / MODEL_FILE)
        if instance.indexer.max_len != instance.config.max_len:
            raise ArtifactError(f"{directory}: tokens.json max_len differs from config.json")
        return instance
