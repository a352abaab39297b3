"""The worker's default model: a two-tower MLP over sparse bags per task, trained in Keras.

- word tower: binary bag of word uni+bigrams (cashtags, handles, ``xxurl`` kept) → Dense
- subword tower: per-token character n-grams (:class:`SubwordVectorizer`) → Dense
- concatenate → dropout → softmax: 256 + 128 units for the 20 topics, 128 + 64 for the 3
  sentiments.

The two heads share the vectorizers (one tokenization, one word bag, one token table per batch)
but no layer. Why not one trunk under both heads: trained on both sets with each head's loss
masked on the other task's rows, the shared trunk cost the topic head about a point of holdout
accuracy for about a point of sentiment (docs/models.md, 2026-11-26); topic is the pipeline's
main output, so it keeps its accuracy. Separate branches also let each head keep the weights of
its own best epoch.

Both inputs are ``keras.Input(sparse=True)``, so training costs per feature present, not per
vocabulary entry. Serving goes one step further: the subword towers' first layer is linear in
the tokens, so each token's contribution ``c(t) @ kernel`` is computed once and cached, and a
tweet costs one row lookup per word n-gram and per token; both branches' first layers sit side
by side in one product. On a CPU that forward pass runs in SciPy/NumPy on the weights of the
loaded ``model.keras`` (TF's per-op dispatch cost more than the arithmetic); a test checks the
two paths agree to 1e-5.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Self

import keras
import numpy as np
import scipy.sparse as sp

from fintweet.core.artifacts import ArtifactError, load_arrays, save_arrays
from fintweet.core.labels import TASKS, num_classes
from fintweet.models.base import Proba, TaskSets, TwoHeadModel, softmax
from fintweet.models.features import (
    NgramConfig,
    NgramVectorizer,
    SubwordConfig,
    SubwordVectorizer,
    Tokens,
)
from fintweet.models.keras_support import (
    BranchSnapshots,
    HoldoutSelection,
    StopWhenInterrupted,
    csr_to_sparse_tensor,
    gpu_visible,
    load_keras_model,
    seed_everything,
    union_set,
)

MODEL_FILE = "model.keras"
WORDS_FILE = "words.json"
SUBWORDS_FILE = "subwords.json"
ARRAYS_FILE = "vectorizers.npz"


@dataclass(frozen=True)
class AnnConfig:
    max_n: int = 2
    min_df: int = 2
    subwords: bool = True
    char_min_n: int = 2
    char_max_n: int = 5
    char_min_df: int = 2
    word_units: int = 256  # topic branch
    subword_units: int = 128
    sentiment_word_units: int = 128
    sentiment_subword_units: int = 64
    dropout: float = 0.5
    learning_rate: float = 2e-3
    batch_size: int = 256
    epochs: int = 20  # at most, with a holdout choosing each branch's epoch
    # Without a holdout (the refit): epochs per branch, as the holdout chose them (None: epochs).
    topic_epochs: int | None = None
    sentiment_epochs: int | None = None
    patience: int = 3
    class_weight_power: float = 0.5
    # The teacher's share of each training target when the training sets carry a teacher's
    # probabilities (``fintweet train --teacher``; keras_support.union_set says how).
    distill: float = 0.5
    # The heads that learn from the teacher. Only sentiment: the branches share no weights, and a
    # distilled topic branch lost 0.7 points of holdout accuracy (0.8608 -> 0.8541) where the
    # sentiment branch gained 1.8 (docs/models.md).
    distill_tasks: tuple[str, ...] = ("sentiment",)
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    def units(self, task: str) -> tuple[int, int]:
        """(word, subword) tower units of ``task``'s branch."""
        if task == "topic":
            return self.word_units, self.subword_units
        return self.sentiment_word_units, self.sentiment_subword_units


def branch_layers(task: str, subwords: bool) -> list[str]:
    """The layers with weights that only ``task``'s head depends on."""
    return [f"{task}_word_tower", *([f"{task}_subword_tower"] if subwords else []), task]


def build_ann(n_words: int, n_subwords: int, config: AnnConfig) -> keras.Model:
    """Outputs ``[topic, sentiment]`` probabilities. Plain Keras layers only, so
    ``model.keras`` loads with ``safe_mode``."""
    words = keras.Input(shape=(n_words,), sparse=True, name="words")
    inputs = [words]
    subwords = None
    if n_subwords:
        subwords = keras.Input(shape=(n_subwords,), sparse=True, name="subwords")
        inputs.append(subwords)
    outputs = []
    for index, task in enumerate(TASKS):
        word_units, subword_units = config.units(task)
        towers = [keras.layers.Dense(word_units, activation="relu",
                                     name=f"{task}_word_tower")(words)]
        if subwords is not None:
            towers.append(keras.layers.Dense(subword_units, activation="relu",
                                             name=f"{task}_subword_tower")(subwords))
        x = (keras.layers.Concatenate(name=f"{task}_towers")(towers) if len(towers) > 1
             else towers[0])
        x = keras.layers.Dropout(config.dropout, seed=config.seed + index,
                                 name=f"{task}_dropout")(x)
        outputs.append(keras.layers.Dense(num_classes(task), activation="softmax",
                                          name=task)(x))
    return keras.Model(inputs, outputs, name="fintweet_ann")


class FoldedForward:
    """Inference with the subword towers folded per token. Holds the Keras model's weights as
    NumPy arrays (both branches' first layers side by side, so one product serves both heads)
    and a growing table of ``c(t) @ subword_kernels`` rows, one per token seen; the table is
    dropped and rebuilt lazily when it would pass ``max_tokens`` rows, so memory stays bounded
    in a worker that runs for weeks. The table is shared state: the web app classifies from
    several threads at once, so reading and growing it happen under one lock."""

    def __init__(self, model: keras.Model, subwords: SubwordVectorizer | None,
                 max_tokens: int = 200_000) -> None:
        def weights(name: str) -> tuple[np.ndarray, np.ndarray]:
            kernel, bias = model.get_layer(name).get_weights()
            return kernel.astype(np.float32), bias.astype(np.float32)

        def side_by_side(kind: str) -> tuple[np.ndarray, np.ndarray, int]:
            parts = [weights(f"{task}_{kind}") for task in TASKS]
            return (np.concatenate([k for k, _ in parts], axis=1),
                    np.concatenate([b for _, b in parts]), parts[0][0].shape[1])

        self.word_kernel, self.word_bias, self.word_split = side_by_side("word_tower")
        self.heads = [weights(task) for task in TASKS]
        self.subwords = subwords
        self.max_tokens = max_tokens
        self._table_lock = threading.Lock()
        if subwords is not None:
            self.subword_kernel, self.subword_bias, self.subword_split = side_by_side(
                "subword_tower")
            self._reset_table()

    def _reset_table(self) -> None:
        self.token_rows: dict[str, int] = {}
        self.table = np.zeros((4096, self.subword_kernel.shape[1]), dtype=np.float32)

    def _add_tokens(self, tokens: list[str]) -> None:
        """Table rows for first-seen tokens, all in one sparse product."""
        assert self.subwords is not None
        start = len(self.token_rows)
        end = start + len(tokens)
        if end > len(self.table):
            grown = np.zeros((max(2 * len(self.table), end), self.table.shape[1]),
                             dtype=np.float32)
            grown[:start] = self.table[:start]
            self.table = grown
        self.table[start:end] = self.subwords.token_matrix(tokens) @ self.subword_kernel
        self.token_rows.update(zip(tokens, range(start, end), strict=True))

    def subword_hidden(self, token_lists: Sequence[Tokens]) -> np.ndarray:
        """Pre-activation of both subword towers: ``bag @ table`` where the bag holds
        ``1/sqrt(n_tokens)`` per token occurrence (repeats add up, as in training)."""
        assert self.subwords is not None
        with self._table_lock:
            return self._subword_hidden(token_lists)

    def _subword_hidden(self, token_lists: Sequence[Tokens]) -> np.ndarray:
        flat = list(chain.from_iterable(token_lists))
        if len(self.token_rows) + len(flat) > self.max_tokens:
            self._reset_table()
        rows_get = self.token_rows.get
        columns = np.fromiter(map(rows_get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
        unseen = np.flatnonzero(columns < 0)
        if len(unseen):
            self._add_tokens(list(dict.fromkeys(flat[i] for i in unseen.tolist())))
            columns[unseen] = [self.token_rows[flat[i]] for i in unseen.tolist()]
        bag = SubwordVectorizer.token_bag(token_lists, columns, len(self.token_rows))
        return bag @ self.table[: len(self.token_rows)]

    def __call__(self, word_bag: sp.csr_matrix, token_lists: Sequence[Tokens]) -> Proba:
        words = np.maximum(word_bag @ self.word_kernel + self.word_bias, 0.0)
        hidden = {"topic": [words[:, : self.word_split]],
                  "sentiment": [words[:, self.word_split :]]}
        if self.subwords is not None:
            sub = np.maximum(self.subword_hidden(token_lists) + self.subword_bias, 0.0)
            hidden["topic"].append(sub[:, : self.subword_split])
            hidden["sentiment"].append(sub[:, self.subword_split :])
        heads = []
        for task, (kernel, bias) in zip(TASKS, self.heads, strict=True):
            # the head's kernel rows in tower order: no concatenated copy of the hidden layer
            logits = bias.copy()
            start = 0
            for part in hidden[task]:
                logits = logits + part @ kernel[start : start + part.shape[1]]
                start += part.shape[1]
            heads.append(softmax(logits))
        return Proba(*heads)


class AnnModel(TwoHeadModel):
    name = "ann"
    config_class = AnnConfig
    config: AnnConfig

    def __init__(self, config: AnnConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.words_ = NgramVectorizer(NgramConfig(
            "word", 1, cfg.max_n, min_df=cfg.min_df, binary=True, use_idf=False, norm=False
        ))
        self.subwords_ = SubwordVectorizer(
            SubwordConfig(cfg.char_min_n, cfg.char_max_n, cfg.char_min_df)
        ) if cfg.subwords else None
        self.model_: keras.Model | None = None
        self._folded: FoldedForward | None = None

    def _inputs(self, token_lists: Sequence[Tokens]) -> list[sp.csr_matrix]:
        inputs = [self.words_.transform(token_lists)]
        if self.subwords_ is not None:
            inputs.append(self.subwords_.transform(token_lists))
        return inputs

    def _build(self) -> keras.Model:
        n_subwords = self.subwords_.n_features if self.subwords_ is not None else 0
        return build_ann(self.words_.n_features, n_subwords, self.config)

    def _branches(self) -> dict[str, list[str]]:
        return {task: branch_layers(task, self.subwords_ is not None) for task in TASKS}

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        cfg = self.config
        seed_everything(cfg.seed)
        rows = union_set(train, cfg.class_weight_power, {}, distill=cfg.distill,
                         distill_tasks=cfg.distill_tasks)
        self.words_.fit(rows.tokens)
        if self.subwords_ is not None:
            self.subwords_.fit(rows.tokens)
        self.model_ = model = self._build()
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                      loss=[rows.loss] * len(TASKS))
        self._folded = None
        callbacks: list[keras.callbacks.Callback] = [StopWhenInterrupted()]
        selection = None
        epochs = cfg.epochs
        if validation is not None:
            held = validation.topic.tokens + validation.sentiment.tokens
            held_inputs = [csr_to_sparse_tensor(m) for m in self._inputs(held)]
            n_topic = len(validation.topic)

            def predict() -> Proba:
                topic, sentiment = (np.asarray(p) for p in model(held_inputs, training=False))
                return Proba(topic[:n_topic], sentiment[n_topic:])

            selection = HoldoutSelection(predict, validation, patience=cfg.patience,
                                         verbose=cfg.verbose, tag="ann ",
                                         branches=self._branches())
            callbacks.append(selection)
        else:
            chosen = {"topic": cfg.topic_epochs or cfg.epochs,
                      "sentiment": cfg.sentiment_epochs or cfg.epochs}
            epochs = max(chosen.values())
            callbacks.append(BranchSnapshots(chosen, self._branches()))
        model.fit(
            self._inputs(rows.tokens), [rows.targets[t] for t in TASKS],
            sample_weight=[rows.weights[t] for t in TASKS],
            batch_size=cfg.batch_size, epochs=epochs, shuffle=True, verbose=0,
            callbacks=callbacks,
        )
        self.history_ = selection.history if selection else []
        self.selected_ = {}
        if selection is not None:
            chosen = selection.selected_epochs()
            self.selected_ = {"topic_epochs": chosen["topic"],
                              "sentiment_epochs": chosen["sentiment"]}
        return self

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        """On a GPU the Keras graph runs there; on a CPU the folded NumPy forward is ~4x
        cheaper than TF's per-op dispatch, so it serves instead (same weights, same numbers)."""
        if self.model_ is None:
            raise RuntimeError("the ann model is not fitted")
        if gpu_visible():
            return self.predict_keras(token_lists)
        if self._folded is None:
            self._folded = FoldedForward(self.model_, self.subwords_)
        return self._folded(self.words_.transform(token_lists), token_lists)

    def predict_keras(self, token_lists: Sequence[Tokens]) -> Proba:
        """The same probabilities through the Keras graph itself (what training evaluated): the
        GPU path, and the reference the folded CPU path is tested against."""
        if self.model_ is None:
            raise RuntimeError("the ann model is not fitted")
        inputs = [csr_to_sparse_tensor(m) for m in self._inputs(token_lists)]
        topic, sentiment = self.model_(inputs, training=False)
        return Proba(np.asarray(topic, dtype=np.float32), np.asarray(sentiment, dtype=np.float32))

    def save(self, directory: Path) -> None:
        if self.model_ is None:
            raise RuntimeError("the ann model is not fitted")
        # A fresh, uncompiled copy: the training model would also store Adam's two moment
        # tensors per weight, tripling the file for nothing the worker uses.
        inference = self._build()
        inference.set_weights(self.model_.get_weights())
        inference.save(directory / MODEL_FILE)
        word_meta, word_arrays = self.words_.state()
        (directory / WORDS_FILE).write_text(json.dumps(word_meta, ensure_ascii=False))
        arrays = {"word_idf": word_arrays["idf"]}
        if self.subwords_ is not None:
            sub_meta, sub_arrays = self.subwords_.state()
            (directory / SUBWORDS_FILE).write_text(json.dumps(sub_meta, ensure_ascii=False))
            arrays["subword_idf"] = sub_arrays["idf"]
        save_arrays(directory / ARRAYS_FILE, arrays)

    @classmethod
    def load_files(cls, directory: Path, config: AnnConfig) -> Self:
        instance = cls(config)
        arrays = load_arrays(directory / ARRAYS_FILE)
        try:
            words = json.loads((directory / WORDS_FILE).read_text())
            instance.words_ = NgramVectorizer.from_state(words, {"idf": arrays["word_idf"]})
            if instance.subwords_ is not None:
                subwords = json.loads((directory / SUBWORDS_FILE).read_text())
                instance.subwords_ = SubwordVectorizer.from_state(
                    subwords, {"idf": arrays["subword_idf"]}
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unusable ann vectorizers ({exc})") from None
        instance.model_ = load_keras_model(directory / MODEL_FILE)
        expected = [instance.words_.n_features]
        if instance.subwords_ is not None:
            expected.append(instance.subwords_.n_features)
        got = [int(t.shape[-1]) for t in instance.model_.inputs]
        if got != expected:
            raise ArtifactError(
                f"{directory / MODEL_FILE}: model inputs {got} do not match the vectorizers "
                f"{expected}"
            )
        return instance
