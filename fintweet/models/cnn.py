"""Token embeddings → parallel Conv1D of widths 2–5 → global max pool → dropout (Kim-style text
CNN), plus, by default, a *wide* linear path over the binary word uni+bigram bag whose logits
are added to the CNN's before each head's softmax (wide & deep).

Why the wide path: the pure CNN plateaued well below the other models on topic whatever was
tried (docs/models.md); rare words and exact bigrams are what the embeddings cannot learn from
a few thousand tweets per task, and the wide path memorises them. ``wide=False`` gives the pure
CNN back. Both heads share the embeddings and convolutions; each has its own deep and wide
logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import tensorflow as tf

from fintweet.core.artifacts import ArtifactError, load_arrays, save_arrays
from fintweet.core.labels import TASKS, num_classes
from fintweet.models.base import Proba, TaskSets, TwoHeadModel
from fintweet.models.features import (
    NgramConfig,
    NgramVectorizer,
    SequenceConfig,
    TokenIndexer,
    Tokens,
)
from fintweet.models.keras_support import (
    PREDICT_CHUNK,
    HoldoutSelection,
    StopWhenInterrupted,
    compiled_forward,
    csr_to_sparse_tensor,
    load_keras_model,
    seed_everything,
    union_set,
)

MODEL_FILE = "model.keras"
VOCAB_FILE = "tokens.json"
WORDS_FILE = "words.json"
WORD_ARRAYS_FILE = "words.npz"


@dataclass(frozen=True)
class CnnConfig:
    min_df: int = 2
    max_len: int = 64
    embedding_dim: int = 128
    widths: tuple[int, ...] = (2, 3, 4, 5)
    filters: int = 128
    embedding_dropout: float = 0.2  # whole embedding channels (SpatialDropout1D)
    dropout: float = 0.5
    wide: bool = True  # add a linear path over the binary word uni+bigram bag (wide & deep)
    learning_rate: float = 2e-3
    batch_size: int = 128
    epochs: int = 20
    patience: int = 3
    class_weight_power: float = 0.5
    sentiment_loss_weight: float = 1.0
    # The teacher's share of each training target when the training sets carry a teacher's
    # probabilities (``fintweet train --teacher``; keras_support.union_set says how).
    distill: float = 0.5
    # The heads that learn from the teacher: both, since the shared trunk gained on both
    # (docs/models.md: topic +0.6, sentiment +1.1 points).
    distill_tasks: tuple[str, ...] = ("topic", "sentiment")
    seed: int = 0
    verbose: bool = field(default=True, compare=False)


def build_cnn(vocab_size: int, config: CnnConfig, n_wide: int = 0) -> keras.Model:
    """Outputs ``[topic, sentiment]`` probabilities."""
    token_ids = keras.Input(shape=(config.max_len,), dtype="int32", name="token_ids")
    inputs: list[Any] = [token_ids]
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding")(token_ids)
    if config.embedding_dropout:
        x = keras.layers.SpatialDropout1D(
            config.embedding_dropout, seed=config.seed, name="embedding_dropout"
        )(x)
    pooled = []
    for width in config.widths:
        conv = keras.layers.Conv1D(
            config.filters, width, activation="relu", name=f"conv_{width}"
        )(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_pool_{width}")(conv))
    x = keras.layers.Concatenate(name="pooled")(pooled) if len(pooled) > 1 else pooled[0]
    x = keras.layers.Dropout(config.dropout, seed=config.seed + 1, name="dropout")(x)
    bag = None
    if n_wide:
        bag = keras.Input(shape=(n_wide,), sparse=True, name="word_bag")
        inputs.append(bag)
    outputs = []
    for task in TASKS:
        if bag is None:
            outputs.append(keras.layers.Dense(num_classes(task), activation="softmax",
                                              name=task)(x))
            continue
        logits = keras.layers.Add(name=f"{task}_logits")([
            keras.layers.Dense(num_classes(task), name=f"{task}_deep_logits")(x),
            keras.layers.Dense(num_classes(task), name=f"{task}_wide_logits")(bag),
        ])
        outputs.append(keras.layers.Activation("softmax", name=task)(logits))
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name="fintweet_cnn")


class CnnModel(TwoHeadModel):
    name = "cnn"
    config_class = CnnConfig
    config: CnnConfig

    def __init__(self, config: CnnConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.indexer_ = TokenIndexer(SequenceConfig(min_df=cfg.min_df, max_len=cfg.max_len))
        self.words_ = NgramVectorizer(NgramConfig(
            "word", 1, 2, min_df=cfg.min_df, binary=True, use_idf=False, norm=False
        )) if cfg.wide else None
        self.model_: keras.Model | None = None
        self._forward: Any = None

    def _inputs(self, token_lists: Sequence[Tokens]) -> list[Any]:
        inputs: list[Any] = [self.indexer_.transform(token_lists)]
        if self.words_ is not None:
            inputs.append(self.words_.transform(token_lists))
        return inputs

    def _n_wide(self) -> int:
        return self.words_.n_features if self.words_ is not None else 0

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        cfg = self.config
        seed_everything(cfg.seed)
        rows = union_set(train, cfg.class_weight_power,
                         {"sentiment": cfg.sentiment_loss_weight}, distill=cfg.distill,
                         distill_tasks=cfg.distill_tasks)
        self.indexer_.fit(rows.tokens)
        if self.words_ is not None:
            self.words_.fit(rows.tokens)
        inputs = self._inputs(rows.tokens)
        self.model_ = build_cnn(self.indexer_.vocab_size, cfg, self._n_wide())
        self.model_.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                            loss=[rows.loss] * len(TASKS))
        self._forward = None
        callbacks: list[keras.callbacks.Callback] = [StopWhenInterrupted()]
        selection = None
        if validation is not None:
            held_inputs = self._inputs(validation.topic.tokens + validation.sentiment.tokens)
            n_topic = len(validation.topic)

            def predict() -> Proba:
                proba = self._predict_inputs(held_inputs)
                return Proba(proba.topic[:n_topic], proba.sentiment[n_topic:])

            selection = HoldoutSelection(predict, validation, patience=cfg.patience,
                                         verbose=cfg.verbose, tag="cnn ")
            callbacks.append(selection)
        self.model_.fit(
            inputs if len(inputs) > 1 else inputs[0], [rows.targets[t] for t in TASKS],
            sample_weight=[rows.weights[t] for t in TASKS],
            batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0,
            callbacks=callbacks,
        )
        self.history_ = selection.history if selection else []
        self.selected_ = {"epochs": selection.selected_epochs()["both"]} if selection else {}
        return self

    def _predict_inputs(self, inputs: list[Any]) -> Proba:
        if self.model_ is None:
            raise RuntimeError("the cnn model is not fitted")
        if self._forward is None:
            specs: list[Any] = [tf.TensorSpec(shape=[None, self.config.max_len], dtype=tf.int32)]
            if self.words_ is not None:
                specs.append(tf.SparseTensorSpec(shape=[None, self._n_wide()], dtype=tf.float32))
            self._forward = compiled_forward(self.model_, specs if len(specs) > 1 else specs[0])
        parts: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
        for start in range(0, inputs[0].shape[0], PREDICT_CHUNK):
            chunk = [array[start : start + PREDICT_CHUNK] for array in inputs]
            if len(chunk) > 1:
                chunk[1] = csr_to_sparse_tensor(chunk[1])
            for task, out in zip(TASKS, self._forward(chunk if len(chunk) > 1 else chunk[0]),
                                 strict=True):
                parts[task].append(np.asarray(out, dtype=np.float32))
        return Proba(*(np.concatenate(parts[task]) for task in TASKS))

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        return self._predict_inputs(self._inputs(token_lists))

    def save(self, directory: Path) -> None:
        if self.model_ is None:
            raise RuntimeError("the cnn model is not fitted")
        inference = build_cnn(self.indexer_.vocab_size, self.config, self._n_wide())
        inference.set_weights(self.model_.get_weights())  # without the optimizer state
        inference.save(directory / MODEL_FILE)
        meta, arrays = self.indexer_.state()
        (directory / VOCAB_FILE).write_text(json.dumps(meta, ensure_ascii=False))
        if self.words_ is not None:
            meta, arrays = self.words_.state()
            (directory / WORDS_FILE).write_text(json.dumps(meta, ensure_ascii=False))
            save_arrays(directory / WORD_ARRAYS_FILE, arrays)

    @classmethod
    def load_files(cls, directory: Path, config: CnnConfig) -> Self:
        instance = cls(config)
        try:
            # the indexer's idf is unused (ids, not weights), so it is not stored
            meta = json.loads((directory / VOCAB_FILE).read_text())
            instance.indexer_ = TokenIndexer.from_state(
                meta, {"idf": np.ones(len(meta["terms"]), dtype=np.float32)}
            )
            if instance.words_ is not None:
                instance.words_ = NgramVectorizer.from_state(
                    json.loads((directory / WORDS_FILE).read_text()),
                    load_arrays(directory / WORD_ARRAYS_FILE),
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unusable cnn vocabulary ({exc})") from None
        instance.model_ = load_keras_model(directory / MODEL_FILE)
        if instance.indexer_.config.max_len != instance.config.max_len:
            raise ArtifactError(f"{directory}: tokens.json max_len differs from config.json")
        # A vocabulary larger than the embedding table fails only on a tweet holding one of the
        # extra ids (TensorFlow's gather raises; on a GPU it reads zeros): checked here instead.
        # A ValueError: the loader names the version and says to retrain it.
        model = instance.model_
        rows = int(model.get_layer("embedding").input_dim)
        if rows != instance.indexer_.vocab_size:
            raise ValueError(f"{VOCAB_FILE} gives {instance.indexer_.vocab_size} token ids, "
                             f"{MODEL_FILE}'s embedding has {rows} rows: files of two runs")
        width = next((int(t.shape[-1]) for t in model.inputs if t.name == "word_bag"), 0)
        if width != instance._n_wide():
            raise ValueError(f"{WORDS_FILE} gives {instance._n_wide()} word-bag features, "
                             f"{MODEL_FILE} takes {width}: files of two runs")
        return instance
