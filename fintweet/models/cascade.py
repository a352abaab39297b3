"""The ``cascade`` kind: the ANN answers the tweets it is sure of, the transformer the rest.

Why: the transformer is the accurate model and the ANN the cheap one, and where the ANN's top
topic probability is high it is almost always right, so sending only the rest (about a third
of the tweets) to the transformer keeps its accuracy at a fraction of its cost (measured in
docs/transformer.md, "Cascade and ensemble").

Routing: a tweet goes to the transformer when the ANN's top *topic* probability is below
``threshold_``; its sentiment follows the same route (one decision per tweet, so a routed tweet
costs one transformer call that answers both heads). All routed tweets of a batch go to the
transformer in one ``predict_proba`` call. :meth:`CascadeModel.route` is the decision alone
(the bench measures the routed share with it); serving keeps no counters, so concurrent calls
(the web app's) share nothing mutable.

The threshold is chosen on the topic holdout: the lowest on a 0.01 grid whose cascade accuracy is
within ``tolerance`` (0.003 = 0.3 points) of the transformer's own (:func:`choose_threshold`).
Above every grid point lies "route everything", which always qualifies.

An artifact holds the two members' files in sub-dirs ``ann/`` and ``transformer/`` (as the
ensemble does) and ``cascade.json`` with the chosen threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

CHEAP, ACCURATE = "ann", "transformer"
MEMBER_KINDS = (CHEAP, ACCURATE)
THRESHOLD_FILE = "cascade.json"
ROUTE_ALL = 1.01  # above any probability: every tweet goes to the transformer
GRID = tuple(round(0.01 * i, 2) for i in range(101))


@dataclass(frozen=True)
class CascadeConfig:
    """``threshold`` None: chosen on the holdout; a number fixes it (a refit reuses the
    holdout's choice this way). ``member_configs``: overrides of the two members' settings."""

    threshold: float | None = None
    tolerance: float = 0.003
    member_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = set(self.member_configs) - set(MEMBER_KINDS)
        if extra:
            raise ValueError(f"cascade member_configs for kinds not in it: {sorted(extra)}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be at least 0, got {self.tolerance}")


def cascade_proba(cheap: Proba, accurate: Proba, routed: np.ndarray) -> Proba:
    """Per row, the accurate model's probabilities where ``routed``, else the cheap one's."""
    mask = routed[:, None]
    return Proba(*(np.where(mask, accurate.task(t), cheap.task(t)).astype(np.float32)
                   for t in TASKS))


def choose_threshold(labels: np.ndarray, cheap_topic: np.ndarray, accurate_topic: np.ndarray,
                     tolerance: float) -> tuple[float, list[dict[str, float]]]:
    """The lowest grid threshold whose topic accuracy on the holdout is within ``tolerance`` of
    the accurate model's, and the accuracy and routed share at every grid point."""
    labels = np.asarray(labels)
    confidence = cheap_topic.max(axis=1)
    cheap_right = cheap_topic.argmax(axis=1) == labels
    accurate_right = accurate_topic.argmax(axis=1) == labels
    target = float(accurate_right.mean()) - tolerance
    history = []
    chosen = ROUTE_ALL
    for threshold in GRID:
        routed = confidence < threshold
        acc = float(np.where(routed, accurate_right, cheap_right).mean())
        history.append({"threshold": threshold, "accuracy": acc, "routed": float(routed.mean())})
        if chosen == ROUTE_ALL and acc >= target - 1e-12:
            chosen = threshold
    return chosen, history


class CascadeModel(TwoHeadModel):
    name = "cascade"
    config_class = CascadeConfig
    config: CascadeConfig

    def __init__(self, config: CascadeConfig | None = None) -> None:
        super().__init__(config)
        self.cheap_: TwoHeadModel | None = None
        self.accurate_: TwoHeadModel | None = None
        self.threshold_: float | None = None

    @classmethod
    def from_members(cls, cheap: TwoHeadModel, accurate: TwoHeadModel, threshold: float,
                     tolerance: float | None = None) -> Self:
        """A cascade of already fitted members with a threshold chosen by the caller (the
        trainer chooses it from the members' holdout probabilities of the same run);
        ``tolerance`` (None: the config's default) is recorded as what chose it."""
        if tolerance is None:
            tolerance = CascadeConfig.tolerance
        if cheap.name != CHEAP or accurate.name != ACCURATE:
            raise ValueError(f"a cascade is {CHEAP} then {ACCURATE}, got {cheap.name}, "
                             f"{accurate.name}")
        instance = cls(CascadeConfig(tolerance=tolerance, member_configs={
            m.name: {k: v for k, v in m.get_config().items() if k != "kind"}
            for m in (cheap, accurate)}))
        instance.cheap_, instance.accurate_, instance.threshold_ = cheap, accurate, threshold
        return instance

    # --- training ---------------------------------------------------------------------------

    def _members(self) -> tuple[TwoHeadModel, TwoHeadModel]:
        from fintweet.models import create

        return tuple(create(kind, **self.config.member_configs.get(kind, {}))  # type: ignore[return-value]
                     for kind in MEMBER_KINDS)

    def fit(self, topic: LabelledTexts, sentiment: LabelledTexts,
            validation: tuple[LabelledTexts, LabelledTexts] | None = None) -> Self:
        """Fit both members (the transformer on texts, not word tokens), then choose the
        threshold on the topic holdout unless the config fixes it."""
        cheap, accurate = self._members()
        cheap.fit(topic, sentiment, validation)
        accurate.fit(topic, sentiment, validation)
        held = None
        if validation is not None:
            held = (validation[0].labels, cheap.predict_proba(validation[0].texts).topic,
                    accurate.predict_proba(validation[0].texts).topic)
        return self._finish(cheap, accurate, held)

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        """Refused: the transformer would fine-tune on the word tokens joined by spaces while
        :meth:`predict_proba` serves it the model texts, a train/serve mismatch."""
        raise ValueError(f"the cascade's {ACCURATE} reads model texts, not word tokens: train "
                         "the cascade with fit(texts), not fit_tokens")

    def _finish(self, cheap: TwoHeadModel, accurate: TwoHeadModel,
                held: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> Self:
        self.cheap_, self.accurate_ = cheap, accurate
        member_selected = {m.name: {**self.config.member_configs.get(m.name, {}), **m.selected_}
                           for m in (cheap, accurate)}
        if self.config.threshold is not None:
            self.threshold_ = self.config.threshold
        elif held is not None:
            self.threshold_, self.history_ = choose_threshold(*held, self.config.tolerance)
        else:
            raise ValueError("a cascade needs a holdout to choose its threshold, or a fixed "
                             "threshold in its config")
        self.selected_ = ({"threshold": self.threshold_, "member_configs": member_selected}
                          if held is not None else {})
        return self

    # --- inference --------------------------------------------------------------------------

    def route(self, cheap: Proba) -> np.ndarray:
        """Which rows go to the transformer, from the ANN's probabilities of the batch."""
        if self.threshold_ is None:
            raise RuntimeError("the cascade is not fitted")
        return cheap.topic.max(axis=1) < self.threshold_

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        """The ANN on the whole batch, then the transformer once on the routed rows' texts."""
        if len(texts) == 0:
            return Proba.empty()
        return self._predict(tokenize_all(texts), texts)

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        """Refused, as :meth:`fit_tokens` is: its routed rows would reach the transformer as
        word tokens joined by spaces, not the model texts it was trained on."""
        raise ValueError(f"the cascade's {ACCURATE} reads model texts, not word tokens: serve "
                         "the cascade with predict_proba(texts), not predict_tokens")

    def _predict(self, token_lists: Sequence[Tokens], texts: Sequence[str]) -> Proba:
        if self.cheap_ is None or self.accurate_ is None:
            raise RuntimeError("the cascade is not fitted")
        cheap = self.cheap_.predict_tokens(token_lists)
        routed = self.route(cheap)
        rows = np.flatnonzero(routed)
        if len(rows) == 0:
            return cheap
        answer = self.accurate_.predict_proba([texts[i] for i in rows.tolist()])
        topic, sentiment = cheap.topic.copy(), cheap.sentiment.copy()
        topic[rows], sentiment[rows] = answer.topic, answer.sentiment
        return Proba(topic, sentiment)

    def members(self) -> list[TwoHeadModel]:
        return [m for m in (self.cheap_, self.accurate_) if m is not None]

    # --- artifact ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if self.cheap_ is None or self.accurate_ is None or self.threshold_ is None:
            raise RuntimeError("the cascade is not fitted")
        for member in (self.cheap_, self.accurate_):
            (directory / member.name).mkdir()
            member.save(directory / member.name)
        (directory / THRESHOLD_FILE).write_text(
            json.dumps({"threshold": self.threshold_}) + "\n")

    @classmethod
    def load_files(cls, directory: Path, config: CascadeConfig) -> Self:
        from fintweet.models import model_class

        instance = cls(config)
        members = []
        for kind in MEMBER_KINDS:
            member_class = model_class(kind)
            member_config = config_from_dict(member_class.config_class,
                                             config.member_configs.get(kind, {}))
            members.append(member_class.load_files(directory / kind, member_config))
        instance.cheap_, instance.accurate_ = members
        try:
            threshold = json.loads((directory / THRESHOLD_FILE).read_text())["threshold"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{directory / THRESHOLD_FILE}: unusable ({exc})") from None
        instance.threshold_ = float(threshold)
        return instance
