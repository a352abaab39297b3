"""The model kinds, each with a topic and a sentiment head, and the one way to load a trained
one.

``load(path)`` is what the worker calls: give it ``<models>/<kind>``, ``<models>/<kind>/current``
or a version dir and get back a :class:`~fintweet.models.base.TwoHeadModel` (a
:class:`~fintweet.models.base.Classifier`: ``predict_proba(model_texts) -> Proba``, ``name``,
``version``) whose ``info`` says which artifact it came from. Model modules import TensorFlow,
so they are imported only when a model of that kind is built or loaded.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any

# TensorFlow reads these when it is first imported, and every model module imports it (through
# keras) only after this package's __init__ has run, so they are set here: level 3 hides the C++
# INFO/WARNING/ERROR lines (oneDNN and CPU-feature notices, "E0000 … node_def_util.cc") that are
# noise to a user. ``fintweet -v`` configures DEBUG logging before any command imports a model,
# and keeps them.
_TF_LOG_LEVEL = "0" if logging.getLogger().isEnabledFor(logging.DEBUG) else "3"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_LOG_LEVEL)
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", _TF_LOG_LEVEL)

from fintweet.core.artifacts import ArtifactError, read_artifact  # noqa: E402
from fintweet.core.artifacts import available as _available  # noqa: E402
from fintweet.models.base import Classifier, Proba, TwoHeadModel  # noqa: E402

if TYPE_CHECKING:
    from fintweet.models.transformer import TransformerModel

# kind -> (module, estimator class); the kinds are core.artifacts.MODEL_KINDS, in that order
KINDS: dict[str, tuple[str, str]] = {
    "linear": ("fintweet.models.linear", "LinearModel"),
    "ann": ("fintweet.models.ann", "AnnModel"),
    "cnn": ("fintweet.models.cnn", "CnnModel"),
    "ensemble": ("fintweet.models.ensemble", "EnsembleModel"),
    "transformer": ("fintweet.models.transformer", "TransformerModel"),
    "cascade": ("fintweet.models.cascade", "CascadeModel"),
}

__all__ = ["KINDS", "ArtifactError", "Classifier", "Proba", "TwoHeadModel", "available",
           "create", "load", "model_class"]


def model_class(kind: str) -> type[TwoHeadModel]:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind]
    return getattr(importlib.import_module(module_name), class_name)


def create(kind: str, **overrides: Any) -> TwoHeadModel:
    """A fresh, unfitted estimator of ``kind`` with its default config and ``overrides``."""
    from fintweet.models.base import config_from_dict

    cls = model_class(kind)
    return cls(config_from_dict(cls.config_class, overrides))


def load(path: str | os.PathLike[str], transformer_runtime: str | None = None) -> TwoHeadModel:
    """Verify and load one artifact. Raises :class:`ArtifactError` naming the path and the
    problem for anything missing, incomplete, tampered with, of an unknown kind, or in the
    topic-only format of earlier versions. Every transformer in it (a member of an ensemble or
    cascade included) is made ready to serve with ``transformer_runtime`` (``keras``, ``onnx``,
    ``onnx-int8``, ``auto``), or when None the runtime its config names."""
    info = read_artifact(path)
    if info.kind not in KINDS:
        raise ArtifactError(f"{info.path}: unknown model kind {info.kind!r} in artifact.json")
    model = model_class(info.kind).from_artifact(info)
    for transformer in transformers_in(model):
        runtime = transformer_runtime or transformer.config.runtime
        try:
            transformer.use_runtime(runtime)
        except Exception as exc:
            # Any failure to build the serving runtime (an ONNX graph ORT refuses, a missing
            # onnxruntime, a backend that cannot build the Keras model) ends a worker at start:
            # one line naming the artifact and the other runtime, not a traceback. ``-v`` still
            # shows the cause.
            raise ArtifactError(_runtime_failure(info.path, runtime, exc)) from exc
    return model


def _runtime_failure(path: os.PathLike[str], runtime: str, exc: BaseException) -> str:
    from fintweet.models.transformer import resolve_runtime

    try:
        resolved = resolve_runtime(runtime)
    except Exception:  # an unknown name: check_runtime's own message says which are valid
        resolved = runtime
    other = "onnx" if resolved == "keras" else "keras"
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return (f"{path}: cannot serve its transformer with runtime {resolved} ({reason}); try "
            f"--transformer-runtime {other} (or FINTWEET_TRANSFORMER_RUNTIME={other})")


def transformers_in(model: TwoHeadModel) -> list[TransformerModel]:
    """``model`` itself if it is a transformer, else the transformers among its members."""
    from fintweet.models.transformer import TransformerModel

    found, pending = [], [model]
    while pending:
        current = pending.pop()
        if isinstance(current, TransformerModel):
            found.append(current)
        pending.extend(current.members())
    return found


def available(models_dir: str | os.PathLike[str]) -> list[str]:
    """Kinds under ``models_dir`` that have a ``current`` version."""
    return [kind for kind in _available(models_dir) if kind in KINDS]
