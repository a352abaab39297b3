"""A small deterministic two-head model for tests of the result path (worker, store, stats,
metrics): it implements :class:`fintweet.models.base.Classifier` with keyword rules, so a test
knows which topic and sentiment each tweet gets without training anything. The real models are
tested by their own tests; this double stands in only for the model, never for Kafka or Redis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, sentiment_id, topic_id
from fintweet.models.base import Proba

# First keyword found in the model text decides; else the fallback.
TOPIC_RULES: tuple[tuple[str, str], ...] = (
    ("fed ", "Fed | Central Banks"),
    ("earnings", "Earnings"),
    ("oil", "Energy | Oil"),
    ("acquire", "M&A | Investments"),
    ("stocks", "Markets"),
)
SENTIMENT_RULES: tuple[tuple[str, str], ...] = (
    ("beats", "Bullish"),
    ("jump", "Bullish"),
    ("rall", "Bullish"),
    ("falls", "Bearish"),
    ("cuts", "Bearish"),
    ("hikes", "Bearish"),
)
FALLBACK_TOPIC = "Stock Commentary"
FALLBACK_SENTIMENT = "Neutral"


def expected_topic(model_text: str) -> str:
    return next((t for k, t in TOPIC_RULES if k in model_text), FALLBACK_TOPIC)


def expected_sentiment(model_text: str) -> str:
    return next((s for k, s in SENTIMENT_RULES if k in model_text), FALLBACK_SENTIMENT)


class TwoHeadRuleModel:
    """Probability 0.7 on the rule's class, the rest spread evenly, for each head."""

    name = "rules"
    version = "test-1"

    def __init__(self) -> None:
        self.calls: list[int] = []  # batch sizes seen: one call per batch

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        self.calls.append(len(texts))
        topic = np.full((len(texts), NUM_TOPICS), 0.3 / (NUM_TOPICS - 1), dtype=np.float32)
        sentiment = np.full((len(texts), NUM_SENTIMENTS), 0.15, dtype=np.float32)
        for row, text in enumerate(texts):
            topic[row, topic_id(expected_topic(text))] = 0.7
            sentiment[row, sentiment_id(expected_sentiment(text))] = 0.7
        return Proba(topic=topic, sentiment=sentiment)

