"""The accuracy-first model: a weighted average of its members' probabilities, per head.

Why: the members make different mistakes (character n-grams in a linear model, a sparse MLP, a
convolution over word order, a fine-tuned transformer), so their average beats the best of them
on both tasks (docs/models.md). The fast ensemble (linear, ann, cnn, the default) weighs its
members equally: with so few tweets per class, fitting three weights on the holdout would fit its
noise. With a ``transformer`` member, which is far better than the rest, equal weights would drown
it, so one number per task is chosen on the holdout (:func:`choose_weights`): the transformer's
share on a 0.1 grid, the rest split evenly among the other members (docs/transformer.md has
what the transformer's share gave on the holdout).

The price is the sum of the members' serving cost, so the worker's default stays ``ann``; serve
this one with ``--model ensemble`` where accuracy matters more than throughput. A batch is
tokenized once for the word-token members; the transformer reads the model texts themselves.

An artifact holds each member's files in a sub-dir named after the member and
``ensemble.json`` with the weights; the trainer assembles it from members trained in the same
run, or reused from their artifacts, rather than training them twice.

Members are named by kind, and the transformer may come more than once: ``transformer-2``,
``transformer-3``... are further fine-tunes with the seed moved on by 1, 2... Why: one
fine-tune's holdout figure moves by up to a point with its seed, and averaging three gained
about half a point on both tasks (docs/transformer.md, "six seeds"); each costs one more
fine-tune and one more transformer to serve. Their share is the transformer's, split evenly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from fintweet.core.artifacts import ArtifactError
from fintweet.core.labels import TASKS
from fintweet.models.base import (
    LabelledTexts,
    Proba,
    TaskSets,
    TwoHeadModel,
    config_from_dict,
    tokenize_all,
)
from fintweet.models.features import Tokens
from fintweet.models.scoring import selection_score

MEMBER_KINDS = ("linear", "ann", "cnn")  # the default, fast ensemble
ALLOWED_MEMBERS = (*MEMBER_KINDS, "transformer")
TEXT_MEMBERS = ("transformer",)  # read model texts (WordPiece), not the project's word tokens
WEIGHTED_MEMBER = "transformer"  # the kind whose share is chosen on the holdout
REPEATABLE = "transformer"  # the kind that may come again as transformer-2, transformer-3, ...
# Up to transformer-99: its seed offset (98) is core.config.MAX_SEED_OFFSET, which --seed leaves
# room for. fullmatch: no trailing newline.
_REPEAT = re.compile(rf"{REPEATABLE}-([2-9]|[1-9][0-9])")
SHARE_GRID = tuple(round(0.1 * i, 1) for i in range(11))
WEIGHTS_FILE = "ensemble.json"
Weights = dict[str, tuple[float, ...]]  # per task, one weight per member (members' order)


@dataclass(frozen=True)
class EnsembleConfig:
    """``weights`` None: equal, or chosen on the holdout when a transformer is a member; a
    mapping task → one weight per member fixes them."""

    members: tuple[str, ...] = MEMBER_KINDS
    member_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        unknown = [k for k in self.members if member_kind(k) not in ALLOWED_MEMBERS]
        if unknown or not self.members or len(set(self.members)) != len(self.members):
            raise ValueError(f"ensemble members must be distinct, among "
                             f"{', '.join(ALLOWED_MEMBERS)} and {REPEATABLE}-2, "
                             f"{REPEATABLE}-3, ...; got {list(self.members)}")
        extra = set(self.member_configs) - set(self.members)
        if extra:
            raise ValueError(f"member_configs for kinds not in the ensemble: {sorted(extra)}")
        configs = {name: dict(c) for name, c in self.member_configs.items()}
        for name in self.members:  # a repeat without a seed of its own: the first's, moved on
            if member_seed_offset(name) and "seed" not in configs.get(name, {}):
                configs[name] = with_member_seed(
                    name, {**configs.get(REPEATABLE, {}), **configs.get(name, {})})
        object.__setattr__(self, "member_configs", configs)
        if self.weights is not None:
            object.__setattr__(self, "weights", check_weights(self.weights, self.members))


def member_kind(name: str) -> str:
    """The kind of the member called ``name``: ``transformer-2`` is a transformer."""
    return REPEATABLE if _REPEAT.fullmatch(name) else name


def member_seed_offset(name: str) -> int:
    """How far the member's seed is moved from the run's: 0, or k - 1 for ``transformer-k``."""
    match = _REPEAT.fullmatch(name)
    return int(match.group(1)) - 1 if match else 0


def with_member_seed(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` (the hyper-parameters given for the member's kind) with a repeated
    member's seed moved on, so that ``transformer-2`` is a second fine-tune, not the same one.
    Applied once, where a member's config is made (the trainer's options, or a config that
    names a repeat without a seed); the config then holds the seed the member trains with."""
    offset = member_seed_offset(name)
    if not offset:
        return dict(overrides)
    from fintweet.models import model_class

    default_seed = model_class(member_kind(name)).config_class().seed
    return {**overrides, "seed": int(overrides.get("seed", default_seed)) + offset}


def check_weights(weights: Mapping[str, Sequence[float]], members: Sequence[str]) -> Weights:
    checked = {}
    for task in TASKS:
        row = tuple(float(w) for w in weights.get(task, ()))
        if len(row) != len(members) or min(row) < 0 or sum(row) <= 0:
            raise ValueError(f"ensemble weights for {task} must be {len(members)} non-negative "
                             f"numbers with a positive sum, got {list(row)}")
        checked[task] = tuple(w / sum(row) for w in row)
    return checked


def equal_weights(members: Sequence[str]) -> Weights:
    return {task: tuple(1.0 / len(members) for _ in members) for task in TASKS}


def weighted_sum(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    total = np.zeros_like(arrays[0], dtype=np.float32)
    for weight, array in zip(weights, arrays, strict=True):
        total += np.float32(weight) * array
    return total


def average(probas: Sequence[Proba], weights: Weights) -> Proba:
    return Proba(*(weighted_sum([p.task(task) for p in probas], weights[task]) for task in TASKS))


def choose_weights(members: Sequence[str], probas: Sequence[Proba],
                   labels: Mapping[str, np.ndarray]) -> tuple[Weights, list[dict[str, Any]]]:
    """Per task, the transformer's share (0.1 grid) that maximises the holdout's (accuracy +
    macro-F1) / 2, split evenly among the transformer members and the rest evenly among the
    others; equal weights without a transformer member, or with nothing else. ``probas``: each
    member's probabilities on the holdouts of both tasks, rows of task t's holdout in
    ``probas[i].task(t)``. Also returns the grid's scores."""
    special = [member_kind(m) == WEIGHTED_MEMBER for m in members]
    if not any(special) or all(special):
        return equal_weights(members), []
    n_special, n_others = sum(special), len(members) - sum(special)

    def row(share: float) -> tuple[float, ...]:
        return tuple(share / n_special if s else (1 - share) / n_others for s in special)

    weights: Weights = {}
    history: list[dict[str, Any]] = []
    for task in TASKS:
        truth = np.asarray(labels[task])
        best = (-1.0, SHARE_GRID[-1])
        for share in SHARE_GRID:
            mixed = weighted_sum([p.task(task) for p in probas], row(share))
            score = selection_score(truth, mixed.argmax(axis=1))
            history.append({"task": task, "share": share, "score": score})
            if score > best[0] + 1e-12:
                best = (score, share)
        weights[task] = row(best[1])
    return weights, history


class EnsembleModel(TwoHeadModel):
    name = "ensemble"
    config_class = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        super().__init__(config)
        self.members_: list[TwoHeadModel] = []
        self.weights_: Weights | None = None

    @classmethod
    def from_members(cls, members: Sequence[TwoHeadModel], weights: Weights | None = None,
                     names: Sequence[str] | None = None) -> Self:
        """An ensemble of already fitted models; ``names`` None: their kinds (then one per
        kind); ``weights`` None: equal."""
        names = tuple(names) if names is not None else tuple(m.name for m in members)
        instance = cls(EnsembleConfig(
            members=names,
            member_configs={n: _without_kind(m.get_config())
                            for n, m in zip(names, members, strict=True)},
        ))
        instance.members_ = list(members)
        instance.weights_ = check_weights(weights, names) if weights else equal_weights(names)
        return instance

    def _create(self, name: str) -> TwoHeadModel:
        from fintweet.models import create

        return create(member_kind(name), **self.config.member_configs.get(name, {}))

    # --- training ---------------------------------------------------------------------------

    def fit(self, topic: LabelledTexts, sentiment: LabelledTexts,
            validation: tuple[LabelledTexts, LabelledTexts] | None = None) -> Self:
        """Fit each member (the transformer on texts, the rest on one shared tokenization),
        then weigh them on the holdout (:func:`choose_weights`)."""
        train = TaskSets.from_texts(topic, sentiment)
        held = TaskSets.from_texts(*validation) if validation is not None else None
        self.members_ = []
        for name in self.config.members:
            member = self._create(name)
            if member.name in TEXT_MEMBERS:
                member.fit(topic, sentiment, validation)
            else:
                member.fit_tokens(train, held)
            self.members_.append(member)
        return self._finish(validation)

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        """Only for word-token members: a transformer member would fine-tune on the tokens
        joined by spaces while :meth:`predict_proba` serves it the model texts, a train/serve
        mismatch, so an ensemble with one is refused here (use :meth:`fit` with the texts)."""
        self._refuse_word_tokens("train this ensemble with fit(texts), not fit_tokens")
        self.members_ = [self._create(name).fit_tokens(train, validation)
                         for name in self.config.members]
        held = None
        if validation is not None:
            held = tuple(validation.task(t).joined() for t in TASKS)
        return self._finish(held)  # type: ignore[arg-type]

    def _finish(self, validation: tuple[LabelledTexts, LabelledTexts] | None) -> Self:
        members = self.config.members
        if self.config.weights is not None:
            self.weights_ = dict(self.config.weights)
        elif validation is not None:
            probas = [_on_holdouts(m, validation) for m in self.members_]
            labels = {t: np.asarray(v.labels) for t, v in zip(TASKS, validation, strict=True)}
            self.weights_, self.history_ = choose_weights(members, probas, labels)
        else:
            self.weights_ = equal_weights(members)
        selected = {name: {**self.config.member_configs.get(name, {}), **m.selected_}
                    for name, m in zip(members, self.members_, strict=True)}
        self.selected_ = ({"member_configs": selected, "weights": self.weights_}
                          if validation is not None else {})
        return self

    # --- inference --------------------------------------------------------------------------

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        if len(texts) == 0:
            return Proba.empty()
        return self._predict(tokenize_all(texts), texts)

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        """Only for word-token members, as :meth:`fit_tokens`."""
        self._refuse_word_tokens("serve this ensemble with predict_proba(texts)")
        return self._predict(token_lists, None)

    def _refuse_word_tokens(self, instead: str) -> None:
        text_members = [n for n in self.config.members if member_kind(n) in TEXT_MEMBERS]
        if text_members:
            raise ValueError(f"ensemble members {', '.join(text_members)} read model texts, not "
                             f"word tokens: {instead}")

    def _predict(self, token_lists: Sequence[Tokens], texts: Sequence[str] | None) -> Proba:
        if not self.members_ or self.weights_ is None:
            raise RuntimeError("the ensemble is not fitted")
        each = [member.predict_proba(texts) if texts is not None and member.name in TEXT_MEMBERS
                else member.predict_tokens(token_lists) for member in self.members_]
        return average(each, self.weights_)

    # --- artifact ---------------------------------------------------------------------------

    def members(self) -> list[TwoHeadModel]:
        return list(self.members_)

    def save(self, directory: Path) -> None:
        if not self.members_ or self.weights_ is None:
            raise RuntimeError("the ensemble is not fitted")
        for name, member in zip(self.config.members, self.members_, strict=True):
            (directory / name).mkdir()
            member.save(directory / name)
        (directory / WEIGHTS_FILE).write_text(json.dumps({"weights": self.weights_}) + "\n")

    @classmethod
    def load_files(cls, directory: Path, config: EnsembleConfig) -> Self:
        from fintweet.models import model_class

        instance = cls(config)
        for name in config.members:
            member_class = model_class(member_kind(name))
            member_config = config_from_dict(member_class.config_class,
                                             config.member_configs.get(name, {}))
            instance.members_.append(member_class.load_files(directory / name, member_config))
        path = directory / WEIGHTS_FILE
        if not path.exists():  # written before weights existed: those averaged equally
            instance.weights_ = equal_weights(config.members)
            return instance
        try:
            instance.weights_ = check_weights(json.loads(path.read_text())["weights"],
                                              config.members)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: unusable ({exc})") from None
        return instance


def _on_holdouts(member: TwoHeadModel, validation: tuple[LabelledTexts, LabelledTexts]) -> Proba:
    """The member's probabilities with task t's rows from task t's holdout (what
    :func:`choose_weights` reads)."""
    per_task = {t: member.predict_proba(v.texts).task(t)
                for t, v in zip(TASKS, validation, strict=True)}
    return Proba(per_task["topic"], per_task["sentiment"])


def _without_kind(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "kind"}
