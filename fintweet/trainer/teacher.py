"""Distillation's teacher: a trained model whose probabilities on the training tweets become
soft targets for a student that reads them (the ANN and the CNN, their ``distill`` setting).

Why a module of its own: the teacher's probabilities are data the trainer computes once per
run (a transformer scores ~70 tweets/s on a CPU, so the 22 k training tweets cost minutes), and
whether a teacher may be used at all is a question of leaks: the holdouts choose the student's
epochs and report its figures, so a teacher that has trained on them would carry their labels
into the student. A saved teacher is accepted only if trained on the same CSVs without the
refit; a model this run has just fitted on the train splits (:meth:`Teacher.of_this_run`, the
linear model when no transformer is at hand) has seen no holdout row by construction.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from fintweet.core.labels import TASKS
from fintweet.models.base import LabelledTexts, Proba, TwoHeadModel

CHUNK = 2048  # tweets per progress-bar step


class TeacherError(ValueError):
    """A teacher that cannot be used (the message says why and what to run)."""


class Teacher:
    """Use :meth:`of_artifact` / :meth:`load` for a saved model, :meth:`of_this_run` for one the
    running trainer has just fitted; ``described`` is what the student's metrics.json records."""

    def __init__(self, model: TwoHeadModel, described: dict[str, str],
                 verbose: bool = True) -> None:
        self.model = model
        self.described = described
        self.verbose = verbose
        self._proba: dict[tuple[str, int, int], Proba] = {}

    @classmethod
    def of_artifact(cls, model: TwoHeadModel, data_fingerprint: str,
                    verbose: bool = True) -> Teacher:
        info = model.info
        if info is None:
            raise TeacherError("the teacher must be a trained artifact (fintweet train)")
        if info.manifest.get("data_fingerprint") != data_fingerprint or info.refit_on_holdout:
            raise TeacherError(
                f"teacher {info.path}: trained on other CSVs or refit on their holdouts, so it "
                f"may have seen the tweets that choose and score the student; train it on these "
                f"CSVs with --no-refit (the transformer never refits)")
        return cls(model, {"kind": info.kind, "version": info.version, "path": str(info.path)},
                   verbose)

    @classmethod
    def load(cls, path: Path, data_fingerprint: str) -> Teacher:
        from fintweet.models import load

        return cls.of_artifact(load(path), data_fingerprint)

    @classmethod
    def of_this_run(cls, model: TwoHeadModel, kind: str, verbose: bool = True) -> Teacher:
        """``model``, of ``kind``, as the running trainer fitted it on the train splits: its
        selection model, never its refit (which has trained on the holdouts)."""
        return cls(model, {"kind": kind, "version": "this run's, fitted on the train splits"},
                   verbose)

    def describe(self) -> dict[str, str]:
        return dict(self.described)

    def teach(self, sets: tuple[LabelledTexts, LabelledTexts],
              parts: Mapping[str, Sequence[Sequence[str]]],
              ) -> tuple[LabelledTexts, LabelledTexts]:
        """The (topic, sentiment) ``sets`` with the teacher's probabilities attached. ``parts``:
        per task, the texts of each set in order as the pieces they were joined from (train,
        or train then holdout for the refit); each piece is scored once per run."""
        taught = []
        for task, data in zip(TASKS, sets, strict=True):
            pieces = [self._score(task, texts) for texts in parts[task]]
            proba = Proba(*(np.concatenate([p.task(t) for p in pieces]) for t in TASKS))
            taught.append(replace(data, teacher=proba))
        topic, sentiment = taught
        return topic, sentiment

    def _score(self, task: str, texts: Sequence[str]) -> Proba:
        key = (task, len(texts), hash(tuple(texts)))
        if key not in self._proba:
            from tqdm import tqdm

            pieces = []
            with tqdm(total=len(texts), unit="tweet", file=sys.stderr, disable=not self.verbose,
                      desc=f"teacher on the {task} tweets") as bar:
                for start in range(0, len(texts), CHUNK):
                    chunk = list(texts[start:start + CHUNK])
                    pieces.append(self.model.predict_proba(chunk))
                    bar.update(len(chunk))
            self._proba[key] = Proba(*(np.concatenate([p.task(t) for p in pieces])
                                       .astype(np.float32) for t in TASKS))
        return self._proba[key]
