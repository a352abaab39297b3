"""The accuracy-first model: the average of the linear, ANN and CNN models' probabilities, per
head.

Why: the three make different mistakes (character n-grams in a linear model, a sparse MLP, a
convolution over word order), so their average beats the best of them on both tasks
(docs/models.md); weighting the members on the holdout was not tried, to keep the holdout honest
with so few tweets per class. The price is the sum of the members' serving cost, so the worker's
default stays ``ann``; serve this one with ``--model ensemble`` where accuracy matters more than
throughput. The batch is tokenized once and the same token lists go to every member.

An artifact holds each member's files in a sub-dir named after its kind; the trainer assembles
it from members trained in the same run (:meth:`EnsembleModel.from_members`) rather than
training them twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from fintweet.core.labels import TASKS
from fintweet.models.base import Proba, TaskSets, TwoHeadModel, config_from_dict
from fintweet.models.features import Tokens

MEMBER_KINDS = ("linear", "ann", "cnn")


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[str, ...] = MEMBER_KINDS
    member_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        unknown = [k for k in self.members if k not in MEMBER_KINDS]
        if unknown or not self.members:
            raise ValueError(f"ensemble members must be some of {', '.join(MEMBER_KINDS)}; "
                             f"got {list(self.members)}")
        extra = set(self.member_configs) - set(self.members)
        if extra:
            raise ValueError(f"member_configs for kinds not in the ensemble: {sorted(extra)}")


class EnsembleModel(TwoHeadModel):
    name = "ensemble"
    config_class = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        super().__init__(config)
        self.members_: list[TwoHeadModel] = []

    @classmethod
    def from_members(cls, members: Sequence[TwoHeadModel]) -> Self:
        """An ensemble of already fitted models (one per kind)."""
        instance = cls(EnsembleConfig(
            members=tuple(m.name for m in members),
            member_configs={m.name: _without_kind(m.get_config()) for m in members},
        ))
        instance.members_ = list(members)
        return instance

    def fit_tokens(self, train: TaskSets, validation: TaskSets | None = None) -> Self:
        from fintweet.models import create

        self.members_ = []
        selected: dict[str, dict[str, Any]] = {}
        for kind in self.config.members:
            settings = self.config.member_configs.get(kind, {})
            member = create(kind, **settings).fit_tokens(train, validation)
            self.members_.append(member)
            selected[kind] = {**settings, **member.selected_}
        self.selected_ = {"member_configs": selected} if validation is not None else {}
        return self

    def predict_tokens(self, token_lists: Sequence[Tokens]) -> Proba:
        if not self.members_:
            raise RuntimeError("the ensemble is not fitted")
        each = [member.predict_tokens(token_lists) for member in self.members_]
        scale = np.float32(len(each))
        return Proba(*(sum(p.task(task) for p in each) / scale for task in TASKS))

    def save(self, directory: Path) -> None:
        if not self.members_:
            raise RuntimeError("the ensemble is not fitted")
        for member in self.members_:
            (directory / member.name).mkdir()
            member.save(directory / member.name)

    @classmethod
    def load_files(cls, directory: Path, config: EnsembleConfig) -> Self:
        from fintweet.models import model_class

        instance = cls(config)
        for kind in config.members:
            member_class = model_class(kind)
            member_config = config_from_dict(member_class.config_class,
                                             config.member_configs.get(kind, {}))
            instance.members_.append(member_class.load_files(directory / kind, member_config))
        return instance


def _without_kind(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "kind"}
