"""Ad-hoc classification of texts with a local model: the one code path behind both
``POST /v1/classify`` and ``fintweet classify``, so the page and the CLI give the same answer for
the same text (and, through :func:`fintweet.core.text.prepare`, :mod:`fintweet.core.answer` and
the model loader, the fields the worker stores).

Imports nothing of the web framework: the CLI uses it without loading FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fintweet.core.answer import answers, rank
from fintweet.core.text import MAX_TEXT_CHARS, prepare
from fintweet.models.base import Classifier, checked_proba

MAX_TEXTS = 256
MAX_CHARS = MAX_TEXT_CHARS  # what a tweet on Kafka may carry


def classify_texts(model: Classifier, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Prepare each raw text once, classify them all in one batched ``predict_proba`` call and
    build one answer per text, in order."""
    if not texts:
        return []
    prepared = [prepare(t) for t in texts]
    proba = checked_proba(model, [p.model_text for p in prepared])
    return answers(prepared, rank(proba.topic, proba.sentiment))


def load_classifier(models_dir: str | os.PathLike[str], kind: str,
                    transformer_runtime: str = "") -> Classifier:
    """The ``current`` version of ``kind`` under ``models_dir``, through the worker's loader
    (``fintweet.models.load``), so the page classifies with exactly the worker's model."""
    from fintweet.core.config import model_path
    from fintweet.models import load

    return load(model_path(models_dir, kind), transformer_runtime=transformer_runtime or None)
