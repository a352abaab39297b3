"""The worker's default model: a two-tower MLP over sparse bags, trained in Keras.

- word tower: binary bag of word uni+bigrams (cashtags, handles, ``xxurl`` kept) → Dense(256)
- subword tower: per-token character n-grams (:class:`SubwordVectorizer`) → Dense(128)
- concatenate → dropout → softmax over the 20 topics. ``heads > 1`` trains that many such
  networks side by side, each with its own loss, averaged at inference (see :func:`build_ann`).

Both inputs are ``keras.Input(sparse=True)``, so training costs per feature present, not per
vocabulary entry. Serving goes one step further: the subword tower's first layer is linear in
the tokens, so each token's contribution ``c(t) @ kernel`` is computed once and cached, and a
tweet costs one row lookup per word n-gram and per token. Serving runs that forward pass with
SciPy/NumPy on the weights of the loaded ``model.keras`` — at batch 512 TF's per-op dispatch
cost more than the arithmetic (µs/tweet in the module's closing notes); a test checks the two
paths agree to 1e-5.

What the holdout (2,550 tweets, stratified 15%) said, linear model unless noted (acc / macro-F1):
- URLs as an ``xxurl`` token vs dropped: 0.8576 / 0.8443 vs 0.8537 / 0.8367 (word+char);
  0.8455 / 0.8349 vs 0.8424 / 0.8280 (word only). Kept.
- cashtags/handles with sigils vs sigils stripped vs removed: 0.8455 / 0.8349 vs
  0.8435 / 0.8321 vs 0.8443 / 0.8342 (word only), 0.8576 / 0.8443 vs 0.8541 / 0.8424 (word+char).
  Kept with sigils. Digits → 0: no gain (0.8573 / 0.8379). Not done.
- character n-grams: +1.2 points accuracy for the linear model (0.8455 → 0.8576); for this MLP,
  word-only ≈ 0.85 / 0.83 (hidden 256–1024, dropout 0.5–0.7, label smoothing, class-weight
  power 0.25–1, trigrams, min_df 1: all within ±0.5 points), word + subword tower ≈ 0.86 / 0.84.
  A 4-seed ensemble of word-only MLPs gained only +0.3 accuracy, so width went to subwords.
- binary word bag vs TF-IDF: 0.851 / 0.831 vs 0.842 / 0.822 at the same settings. Binary.
- two towers, one head, seeds 0/1/2: 0.8612 / 0.8424, 0.8545 / 0.8361, 0.8573 / 0.8365;
  three heads (seed 0): 0.8604 / 0.8430, but a 260 MB ``model.keras`` (one head: 87 MB),
  2.5x the training time and 34 µs/tweet at batch 512 instead of ~20, so one head is the
  default; three narrow heads (96+48 units) 0.8573 / 0.8397. Wider towers (512 word or 256
  subword units), dropout 0.65, char 3–6, lr 1e-3, class-weight power 0.75: all within the
  seed spread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Self

import keras
import numpy as np
import scipy.sparse as sp

from fintweet.core.artifacts import ArtifactError, load_arrays, save_arrays
from fintweet.core.labels import NUM_TOPICS
from fintweet.models.base import TopicModel, Validation, check_fit_input, class_weights
from fintweet.models.features import (
    NgramConfig,
    NgramVectorizer,
    SubwordConfig,
    SubwordVectorizer,
    Tokens,
    assemble_csr,
    tokens_of,
)
from fintweet.models.keras_support import (
    HoldoutSelection,
    csr_to_sparse_tensor,
    gpu_visible,
    load_keras_model,
    seed_everything,
)

MODEL_FILE = "model.keras"
WORDS_FILE = "words.json"
SUBWORDS_FILE = "subwords.json"
ARRAYS_FILE = "vectorizers.npz"


@dataclass
class AnnConfig:
    max_n: int = 2
    min_df: int = 2
    subwords: bool = True
    char_min_n: int = 2
    char_max_n: int = 5
    char_min_df: int = 2
    word_units: int = 256
    subword_units: int = 128
    dropout: float = 0.5
    heads: int = 1
    learning_rate: float = 2e-3
    batch_size: int = 256
    epochs: int = 20
    patience: int = 3
    class_weight_power: float = 0.5
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnnConfig:
        data = dict(data)
        data.pop("kind", None)
        return cls(**data)


def build_ann(n_words: int, n_subwords: int, config: AnnConfig) -> tuple[keras.Model, keras.Model]:
    """(training model with one softmax output per head, inference model averaging them).

    Why heads: with early stopping after 2–4 epochs the MLP's holdout score moves ±0.5 points
    from seed to seed; ``heads`` independently initialised towers, each with its own loss,
    averaged at inference, take some of that variance out, at ``heads`` times the size and
    first-layer cost (see the module notes for why the default is 1). Plain Keras layers only,
    so ``model.keras`` loads with ``safe_mode``."""
    if config.heads < 1:
        raise ValueError(f"heads must be at least 1, got {config.heads}")
    words = keras.Input(shape=(n_words,), sparse=True, name="words")
    inputs = [words]
    subwords = None
    if n_subwords:
        subwords = keras.Input(shape=(n_subwords,), sparse=True, name="subwords")
        inputs.append(subwords)
    outputs = []
    for head in range(config.heads):
        towers = [keras.layers.Dense(config.word_units, activation="relu",
                                     name=f"word_tower_{head}")(words)]
        if subwords is not None:
            towers.append(keras.layers.Dense(config.subword_units, activation="relu",
                                             name=f"subword_tower_{head}")(subwords))
        x = (keras.layers.Concatenate(name=f"towers_{head}")(towers) if len(towers) > 1
             else towers[0])
        x = keras.layers.Dropout(config.dropout, seed=config.seed + head,
                                 name=f"dropout_{head}")(x)
        outputs.append(
            keras.layers.Dense(NUM_TOPICS, activation="softmax", name=f"topic_{head}")(x)
        )
    training = keras.Model(inputs, outputs, name="fintweet_ann_heads")
    averaged = keras.layers.Average(name="topic")(outputs) if len(outputs) > 1 else outputs[0]
    return training, keras.Model(inputs, averaged, name="fintweet_ann")


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


class FoldedForward:
    """Inference with the subword towers folded per token. Holds the Keras model's weights as
    NumPy arrays (every head's first layers side by side, so one product serves all heads) and a
    growing table of ``c(t) @ subword_kernels`` rows, one per token seen; the table is dropped
    and rebuilt lazily when it would pass ``max_tokens`` rows, so memory stays bounded in a
    worker that runs for weeks."""

    def __init__(self, model: keras.Model, subwords: SubwordVectorizer | None, heads: int,
                 max_tokens: int = 200_000) -> None:
        def weights(name: str) -> tuple[np.ndarray, np.ndarray]:
            kernels, biases = zip(*(model.get_layer(f"{name}_{h}").get_weights()
                                    for h in range(heads)), strict=True)
            return (np.concatenate(kernels, axis=1).astype(np.float32),
                    np.concatenate(biases).astype(np.float32))

        self.heads = heads
        self.word_kernel, self.word_bias = weights("word_tower")
        self.out = [tuple(w.astype(np.float32) for w in model.get_layer(f"topic_{h}").get_weights())
                    for h in range(heads)]
        self.subwords = subwords
        self.max_tokens = max_tokens
        if subwords is not None:
            self.subword_kernel, self.subword_bias = weights("subword_tower")
            self._reset_table()

    def _reset_table(self) -> None:
        self.token_rows: dict[str, int] = {}
        self.table = np.zeros((4096, self.subword_kernel.shape[1]), dtype=np.float32)

    def _token_row(self, token: str) -> int:
        assert self.subwords is not None
        ids, values = self.subwords.token_vector(token)
        row = len(self.token_rows)
        if row == len(self.table):
            self.table = np.concatenate([self.table, np.zeros_like(self.table)])
        self.table[row] = values @ self.subword_kernel[ids] if len(ids) else 0.0
        self.token_rows[token] = row
        return row

    def subword_hidden(self, token_lists: Sequence[Tokens]) -> np.ndarray:
        """Pre-activation of every head's subword tower: ``bag @ table`` where the bag holds
        ``1/sqrt(n_tokens)`` per token occurrence (repeats add up, as in training)."""
        assert self.subwords is not None
        flat = list(chain.from_iterable(token_lists))
        if len(self.token_rows) + len(flat) > self.max_tokens:
            self._reset_table()
        rows_get = self.token_rows.get
        columns = np.fromiter(map(rows_get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
        for position in np.flatnonzero(columns < 0):  # first sight of a token (or a repeat)
            token = flat[position]
            row = rows_get(token)
            columns[position] = self._token_row(token) if row is None else row
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        weights = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths).astype(np.float32)
        rows = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        bag = assemble_csr(rows, columns, weights, len(token_lists), len(self.token_rows))
        return bag @ self.table[: len(self.token_rows)]

    def __call__(self, word_bag: sp.csr_matrix, token_lists: Sequence[Tokens]) -> np.ndarray:
        word_hidden = np.split(
            np.maximum(word_bag @ self.word_kernel + self.word_bias, 0.0), self.heads, axis=1
        )
        if self.subwords is not None:
            sub_hidden = np.split(
                np.maximum(self.subword_hidden(token_lists) + self.subword_bias, 0.0),
                self.heads, axis=1,
            )
        proba = np.zeros((word_bag.shape[0], NUM_TOPICS), dtype=np.float32)
        for head, (kernel, bias) in enumerate(self.out):
            hidden = (np.concatenate([word_hidden[head], sub_hidden[head]], axis=1)
                      if self.subwords is not None else word_hidden[head])
            proba += softmax_rows(hidden @ kernel + bias)
        return proba / np.float32(self.heads)


class AnnTopicModel(TopicModel):
    name = "ann"
    config_class = AnnConfig

    def __init__(self, config: AnnConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AnnConfig()
        self.words = NgramVectorizer(NgramConfig(
            "word", 1, cfg.max_n, min_df=cfg.min_df, binary=True, use_idf=False, norm=False
        ))
        self.subwords = SubwordVectorizer(
            SubwordConfig(cfg.char_min_n, cfg.char_max_n, cfg.char_min_df)
        ) if cfg.subwords else None
        self.model: keras.Model | None = None
        self._folded: FoldedForward | None = None

    def get_config(self) -> dict[str, Any]:
        config = asdict(self.config)
        config.pop("verbose")
        return {"kind": self.name, **config}

    def _inputs(self, token_lists: Sequence[Tokens]) -> list[sp.csr_matrix]:
        inputs = [self.words.transform_tokens(token_lists)]
        if self.subwords is not None:
            inputs.append(self.subwords.transform_tokens(token_lists))
        return inputs

    def fit(
        self, texts: Sequence[str], labels: np.ndarray, validation: Validation | None = None
    ) -> Self:
        labels = check_fit_input(texts, labels)
        cfg = self.config
        seed_everything(cfg.seed)
        token_lists = [tokens_of(t) for t in texts]
        self.words.fit_tokens(token_lists)
        if self.subwords is not None:
            self.subwords.fit_tokens(token_lists)
        inputs = self._inputs(token_lists)
        training, self.model = build_ann(
            self.words.n_features, self.subwords.n_features if self.subwords else 0, cfg
        )
        training.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss=["sparse_categorical_crossentropy"] * cfg.heads,
        )
        self._folded = None
        weights = class_weights(labels, cfg.class_weight_power)[labels]
        callbacks: list[keras.callbacks.Callback] = []
        selection = None
        if validation is not None:
            val_inputs = [csr_to_sparse_tensor(m)
                          for m in self._inputs([tokens_of(t) for t in validation[0]])]
            model = self.model
            selection = HoldoutSelection(
                lambda: np.asarray(model(val_inputs, training=False)), np.asarray(validation[1]),
                patience=cfg.patience, verbose=cfg.verbose, tag="ann ",
            )
            callbacks.append(selection)
        training.fit(
            inputs, [labels] * cfg.heads, sample_weight=[weights] * cfg.heads,
            batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0,
            callbacks=callbacks,
        )
        self.history = selection.history if selection else []
        self.selected = {"epochs": selection.best_epoch + 1} if selection else {}
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """On a GPU the Keras graph runs there; on a CPU the folded NumPy forward is ~4x
        cheaper than TF's per-op dispatch, so it serves instead (same weights, same numbers)."""
        if self.model is None:
            raise RuntimeError("the ann model is not fitted")
        if gpu_visible():
            return self.predict_proba_keras(texts)
        if self._folded is None:
            self._folded = FoldedForward(self.model, self.subwords, self.config.heads)
        if len(texts) == 0:
            return np.zeros((0, NUM_TOPICS), dtype=np.float32)
        token_lists = [tokens_of(t) for t in texts]
        return self._folded(self.words.transform_tokens(token_lists), token_lists)

    def predict_proba_keras(self, texts: Sequence[str]) -> np.ndarray:
        """The same probabilities through the Keras graph itself (what training evaluated): the
        GPU path, and the reference the folded CPU path is tested against."""
        if self.model is None:
            raise RuntimeError("the ann model is not fitted")
        inputs = [csr_to_sparse_tensor(m) for m in self._inputs([tokens_of(t) for t in texts])]
        return np.asarray(self.model(inputs, training=False), dtype=np.float32)

    def save(self, directory: Path) -> None:
        if self.model is None:
            raise RuntimeError("the ann model is not fitted")
        # A fresh, uncompiled copy: the training model would also store Adam's two moment
        # tensors per weight, tripling the file for nothing the worker uses.
        _, inference = build_ann(
            self.words.n_features, self.subwords.n_features if self.subwords else 0, self.config
        )
        inference.set_weights(self.model.get_weights())
        inference.save(directory / MODEL_FILE)
        word_meta, word_arrays = self.words.state()
        (directory / WORDS_FILE).write_text(json.dumps(word_meta, ensure_ascii=False))
        arrays = {"word_idf": word_arrays["idf"]}
        if self.subwords is not None:
            sub_meta, sub_arrays = self.subwords.state()
            (directory / SUBWORDS_FILE).write_text(json.dumps(sub_meta, ensure_ascii=False))
            arrays["subword_idf"] = sub_arrays["idf"]
        save_arrays(directory / ARRAYS_FILE, arrays)

    @classmethod
    def load(cls, directory: Path, config: dict[str, Any]) -> Self:
        instance = cls(AnnConfig.from_dict(config))
        arrays = load_arrays(directory / ARRAYS_FILE)
        try:
            words = json.loads((directory / WORDS_FILE).read_text())
            instance.words = NgramVectorizer.from_state(words, {"idf": arrays["word_idf"]})
            if instance.subwords is not None:
                subwords = json.loads((directory / SUBWORDS_FILE).read_text())
                instance.subwords = SubwordVectorizer.from_state(
                    subwords, {"idf": arrays["subword_idf"]}
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unusable ann vectorizers ({exc})") from None
        instance.model = load_keras_model(directory / MODEL_FILE)
        expected = [instance.words.n_features]
        if instance.subwords is not None:
            expected.append(instance.subwords.n_features)
        got = [int(t.shape[-1]) for t in instance.model.inputs]
        if got != expected:
            raise ArtifactError(
                f"{directory / MODEL_FILE}: model inputs {got} do not match the vectorizers "
                f"{expected}"
            )
        return instance

