"""Ad-hoc classification of texts with a local model: the one code path behind both
``POST /v1/classify`` and ``fintweet classify``, so the page and the CLI give the same answer for
the same text (and, through :func:`fintweet.core.text.prepare` and the model loader, the same
answer the worker stores).

Imports nothing of the web framework: the CLI uses it without loading FastAPI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.labels import SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.text import PreparedText, prepare
from fintweet.models.base import Classifier, Proba

MAX_TEXTS = 256
MAX_CHARS = 10_000


def answer(prepared: PreparedText, topic_row: np.ndarray, sentiment_row: np.ndarray,
           ) -> dict[str, Any]:
    """One text's answer from its prepared text and its two probability rows: the same fields,
    names and rounding as the stored result's (topic, confidence, top3, sentiment, links)."""
    top = np.argsort(-topic_row, kind="stable")[:3].tolist()
    best_sentiment = int(np.argmax(sentiment_row))
    return {
        "text": prepared.text,
        "topic_id": top[0],
        "topic": TOPIC_NAMES[top[0]],
        "confidence": round(float(topic_row[top[0]]), 4),
        "top3": [{"topic_id": k, "topic": TOPIC_NAMES[k], "p": round(float(topic_row[k]), 4)}
                 for k in top],
        "sentiment": {"id": best_sentiment, "label": SENTIMENT_NAMES[best_sentiment],
                      "confidence": round(float(sentiment_row[best_sentiment]), 4)},
        "links": prepared.links.as_dict(),
    }


def classify_texts(model: Classifier, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Prepare each raw text once, classify them all in one batched ``predict_proba`` call and
    build one answer per text, in order."""
    if not texts:
        return []
    prepared = [prepare(t) for t in texts]
    proba: Proba = model.predict_proba([p.model_text for p in prepared])
    topic = np.asarray(proba.topic, dtype=np.float32)
    sentiment = np.asarray(proba.sentiment, dtype=np.float32)
    if topic.shape != (len(texts), len(TOPIC_NAMES)) or sentiment.shape != (
            len(texts), len(SENTIMENT_NAMES)):
        raise ValueError(f"model {model.name} returned topic {topic.shape} and sentiment "
                         f"{sentiment.shape} probabilities for {len(texts)} texts")
    return [answer(p, topic[i], sentiment[i]) for i, p in enumerate(prepared)]


def model_tag(model: Classifier) -> str:
    return f"{model.name}@{model.version}"


def load_classifier(models_dir: str | os.PathLike[str], kind: str,
                    transformer_runtime: str = "") -> Classifier:
    """The ``current`` version of ``kind`` under ``models_dir``, through the worker's loader
    (``fintweet.models.load``), so the page classifies with exactly the worker's model."""
    from fintweet.models import load

    return load(Path(models_dir) / kind, transformer_runtime=transformer_runtime or None)
