"""Ad-hoc classification of texts with a local model: the one code path behind both
``POST /v1/classify`` and ``fintweet classify``, so the page and the CLI give the same answer for
the same text (and, through :func:`fintweet.core.text.prepare`, :mod:`fintweet.core.answer` and
the model loader, the fields the worker stores).

Imports nothing of the web framework: the CLI uses it without loading FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.answer import answers, rank
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS
from fintweet.core.text import prepare
from fintweet.models.base import Classifier, Proba

MAX_TEXTS = 256
MAX_CHARS = 10_000


def classify_texts(model: Classifier, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Prepare each raw text once, classify them all in one batched ``predict_proba`` call and
    build one answer per text, in order."""
    if not texts:
        return []
    prepared = [prepare(t) for t in texts]
    proba: Proba = model.predict_proba([p.model_text for p in prepared])
    topic = np.asarray(proba.topic, dtype=np.float32)
    sentiment = np.asarray(proba.sentiment, dtype=np.float32)
    if topic.shape != (len(texts), NUM_TOPICS) or sentiment.shape != (len(texts), NUM_SENTIMENTS):
        raise ValueError(f"model {model.name} returned topic {topic.shape} and sentiment "
                         f"{sentiment.shape} probabilities for {len(texts)} texts")
    return answers(prepared, rank(topic, sentiment))


def model_tag(model: Classifier) -> str:
    return f"{model.name}@{model.version}"


def load_classifier(models_dir: str | os.PathLike[str], kind: str,
                    transformer_runtime: str = "") -> Classifier:
    """The ``current`` version of ``kind`` under ``models_dir``, through the worker's loader
    (``fintweet.models.load``), so the page classifies with exactly the worker's model."""
    from fintweet.models import load

    return load(Path(models_dir) / kind, transformer_runtime=transformer_runtime or None)
