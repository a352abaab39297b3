"""The three topic models, their ensemble, and the one way to load a trained one.

``load(path)`` is what the worker calls: give it ``<models>/<kind>``, ``<models>/<kind>/current``
or a version dir and get back an estimator with ``predict_proba(list[str])``, ``predict``,
``name``, ``version`` and ``metadata``. Model modules import TensorFlow, so they are imported
only when a model of that kind is built or loaded.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from fintweet.core.artifacts import (
    ArtifactError,
    read_artifact,
    read_json,
)
from fintweet.core.artifacts import (
    available as _available,
)
from fintweet.models.base import TopicModel

# kind -> (module, estimator class)
KINDS: dict[str, tuple[str, str]] = {
    "linear": ("fintweet.models.linear", "LinearTopicModel"),
    "ann": ("fintweet.models.ann", "AnnTopicModel"),
    "cnn": ("fintweet.models.cnn", "CnnTopicModel"),
    "ensemble": ("fintweet.models.ensemble", "EnsembleTopicModel"),
}

__all__ = ["KINDS", "ArtifactError", "TopicModel", "available", "create", "load", "model_class"]


def model_class(kind: str) -> type[TopicModel]:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind]
    return getattr(importlib.import_module(module_name), class_name)


def create(kind: str, **overrides: Any) -> TopicModel:
    """A fresh, unfitted estimator of ``kind`` with its default config and ``overrides``."""
    cls = model_class(kind)
    return cls(cls.config_class(**overrides))  # type: ignore[call-arg]


def load(path: str | os.PathLike[str]) -> TopicModel:
    """Verify and load one artifact. Raises :class:`ArtifactError` naming the path and the
    problem for anything missing, incomplete, tampered with or of an unknown kind."""
    info = read_artifact(path)
    if info.kind not in KINDS:
        raise ArtifactError(f"{info.path}: unknown model kind {info.kind!r} in artifact.json")
    config = read_json(info.file("config.json"))
    metrics = read_json(info.file("metrics.json"))
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise ArtifactError(f"{info.path}: config.json and metrics.json must be JSON objects")
    try:
        model = model_class(info.kind).load(info.path, config)
    except ArtifactError:
        raise
    except (TypeError, ValueError, KeyError) as exc:  # e.g. a config from another version
        raise ArtifactError(f"{info.path}: cannot rebuild the {info.kind} model ({exc})") from None
    model.version = info.version
    summary = {k: metrics.get(k) for k in ("accuracy", "macro_f1", "weighted_f1", "n")}
    model.metadata = {
        **{k: v for k, v in info.manifest.items() if k != "files"},
        "path": str(info.path),
        "holdout": summary,
    }
    return model


def available(models_dir: str | os.PathLike[str]) -> list[str]:
    """Kinds under ``models_dir`` that have a ``current`` version."""
    return [kind for kind in _available(models_dir) if kind in KINDS]
