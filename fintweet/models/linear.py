"""TF-IDF word and character n-grams + multinomial logistic regression, one per task: the
strong, cheap baseline every neural model here has to beat. scikit-learn fits it; prediction is
one sparse matrix product in NumPy, so a stored model is just coefficients, idf and term lists.

The two heads share the vectorizers (fitted on both tasks' training tweets) and so one feature
matrix per batch: serving both heads costs one extra (features × 3) product. Each head has its
own regularisation strength, chosen on its own holdout.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from fintweet.core.artifacts import ArtifactError, load_arrays, save_arrays
from fintweet.core.labels import TASKS, num_classes
from fintweet.models.base import Proba, TaskSets, TokenizedSet, TwoHeadModel, class_weights, softmax
from fintweet.models.features import NgramConfig, NgramVectorizer, Tokens
from fintweet.models.scoring import selection_score

WORDS_FILE = "word_vectorizer.json"
CHARS_FILE = "char_vectorizer.json"
CHOSEN_FILE = "chosen.json"
ARRAYS_FILE = "linear.npz"


@dataclass(frozen=True)
class LinearConfig:
    word_max_n: int = 2
    char_ngrams: bool = True
    char_min_n: int = 2
    char_max_n: int = 5
    min_df: int = 2
    # Candidate inverse regularisation strengths per head; with a holdout the best is kept
    # (selection on the holdout only), without one the first is used.
    topic_c_values: tuple[float, ...] = (5.0, 10.0, 20.0)
    sentiment_c_values: tuple[float, ...] = (5.0, 10.0, 20.0)
    # Full inverse-frequency weights suit this model (docs/models.md; the MLPs prefer 0.5).
    class_weight_power: float = 1.0
    max_iter: int = 300
    seed: int = 0
    verbose: bool = field(default=True, compare=False)

    def c_values(self, task: str) -> tuple[float, ...]:
        return self.topic_c_values if task == "topic" else self.sentiment_c_values


class LinearModel(TwoHeadModel):
    name = "linear"
    config_class = LinearConfig
    config: LinearConfig

    def __init__(self, config: LinearConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.words_ = NgramVectorizer(NgramConfig("word", 1, cfg.word_max_n, min_df=cfg.min_df))
        self.chars_: NgramVectorizer | None = (
            NgramVectorizer(NgramConfig("char", cfg.char_min_n, cfg.char_max_n, min_df=cfg.min_df))
            if cfg.char_ngrams else None
        )
        # per task: (n_features, n_classes) coefficients, intercepts and the C chosen
        self.coef_: dict[str, np.ndarray] = {}
        self.intercept_: dict[str, np.ndarray] = {}
        self.chosen_c_: dict[str, float] = {}

    def _features(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        blocks = [self.words_.transform(token_lists)]
        if self.chars_ is not None:
            blocks.append(self.chars_.transform(token_lists))
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        every = train.topic.tokens + train.sentiment.tokens
        self.words_.fit(every)
        if self.chars_ is not None:
            self.chars_.fit(every)
        self.history_ = []
        for task in TASKS:
            held = validation.task(task) if validation is not None else None
            self._fit_head(task, train.task(task), held)
        self.selected_ = ({f"{task}_c_values": (self.chosen_c_[task],) for task in TASKS}
                          if validation is not None else {})
        return self

    def _fit_head(self, task: str, train: TokenizedSet, held: TokenizedSet | None) -> None:
        from sklearn.linear_model import LogisticRegression

        cfg = self.config
        labels = train.labels
        if len(np.unique(labels)) < 2:  # scikit-learn's own refusal is a long ValueError
            raise ValueError(f"{task}: every training label is {labels[0]}; a head learns "
                             "nothing from one class")
        features = self._features(train.tokens)
        weights = class_weights(labels, num_classes(task), cfg.class_weight_power)[labels]
        held_features = self._features(held.tokens) if held is not None else None
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        candidates = cfg.c_values(task) if held is not None else cfg.c_values(task)[:1]
        for i, c in enumerate(candidates, 1):
            # One fit takes minutes on the full data with the cores shared: a line before and
            # after each, like the networks' line per epoch, so a long run shows it is moving.
            step = f"linear {task} head, C {c:g} ({i}/{len(candidates)})"
            self._say(f"{step}: fitting {features.shape[0]:,} tweets x "
                      f"{features.shape[1]:,} features")
            started = time.perf_counter()
            classifier = LogisticRegression(C=c, max_iter=cfg.max_iter, random_state=cfg.seed)
            classifier.fit(features, labels, sample_weight=weights)
            coef, intercept = self._full_coef(classifier, num_classes(task))
            score = -1.0
            if held is not None and held_features is not None:
                predicted = (held_features @ coef + intercept).argmax(axis=1)
                score = selection_score(held.labels, predicted)
                self.history_.append({"task": task, "C": c, "holdout_score": score})
            better = best is None or score > best[0]
            self._say(f"{step}: done in {time.perf_counter() - started:.0f}s"
                      + (f", holdout (acc + macro-F1) / 2 {score:.4f}{'*' if better else ''}"
                         if held is not None else ""))
            if better:
                best = (score, c, coef, intercept)
        assert best is not None
        _, self.chosen_c_[task], self.coef_[task], self.intercept_[task] = best

    def _say(self, line: str) -> None:
        if self.config.verbose:
            print(line, file=sys.stderr, flush=True)

    @staticmethod
    def _full_coef(classifier: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients for every class (a class missing from a small sample gets a -1e4
        intercept, so it is never predicted). With two classes scikit-learn fits one row, the
        log-odds of the second: it goes to the second class and zeros to the first, so the
        softmax of the two is the fitted sigmoid (copied to both, it gave 0.5 / 0.5 always)."""
        classes = classifier.classes_
        coef = np.zeros((classifier.coef_.shape[1], n_classes), dtype=np.float32)
        intercept = np.full(n_classes, -1e4, dtype=np.float32)
        if len(classes) == 2:
            coef[:, classes[1]] = classifier.coef_[0]
            intercept[classes] = (0.0, classifier.intercept_[0])
        else:
            coef[:, classes] = classifier.coef_.T
            intercept[classes] = classifier.intercept_
        return coef, intercept

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        if not self.coef_:
            raise RuntimeError("the linear model is not fitted")
        features = self._features(token_lists)
        heads = [
            softmax(np.asarray(features @ self.coef_[task], dtype=np.float32)
                    + self.intercept_[task])
            for task in TASKS
        ]
        return Proba(*heads)

    def save(self, directory: Path) -> None:
        word_meta, word_arrays = self.words_.state()
        (directory / WORDS_FILE).write_text(json.dumps(word_meta, ensure_ascii=False))
        (directory / CHOSEN_FILE).write_text(json.dumps({"c": self.chosen_c_}))
        arrays = {"word_idf": word_arrays["idf"]}
        for task in TASKS:
            arrays[f"{task}_coef"] = self.coef_[task]
            arrays[f"{task}_intercept"] = self.intercept_[task]
        if self.chars_ is not None:
            char_meta, char_arrays = self.chars_.state()
            (directory / CHARS_FILE).write_text(json.dumps(char_meta, ensure_ascii=False))
            arrays["char_idf"] = char_arrays["idf"]
        save_arrays(directory / ARRAYS_FILE, arrays)

    @classmethod
    def load_files(cls, directory: Path, config: LinearConfig) -> Self:
        instance = cls(config)
        arrays = load_arrays(directory / ARRAYS_FILE)
        try:
            words = json.loads((directory / WORDS_FILE).read_text())
            instance.words_ = NgramVectorizer.from_state(words, {"idf": arrays["word_idf"]})
            n_features = instance.words_.n_features
            if instance.chars_ is not None:
                chars = json.loads((directory / CHARS_FILE).read_text())
                instance.chars_ = NgramVectorizer.from_state(chars, {"idf": arrays["char_idf"]})
                n_features += instance.chars_.n_features
            instance.chosen_c_ = json.loads((directory / CHOSEN_FILE).read_text())["c"]
            for task in TASKS:
                instance.coef_[task] = arrays[f"{task}_coef"].astype(np.float32)
                instance.intercept_[task] = arrays[f"{task}_intercept"].astype(np.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory}: unusable linear model files ({exc})") from None
        for task in TASKS:
            if instance.coef_[task].shape != (n_features, num_classes(task)):
                raise ArtifactError(
                    f"{directory / ARRAYS_FILE}: {task} coef shape {instance.coef_[task].shape} "
                    f"does not match {n_features} features x {num_classes(task)} classes"
                )
        return instance
