"""A small deterministic two-head model implementing the ``Classifier`` protocol, for the web and
CLI tests: keywords decide topic and sentiment, so a test knows the answer for its own texts
without training anything. Model texts arrive prepared (lower case, URLs as ``xxurl``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TOPIC_NAMES
from fintweet.models.base import Proba

TOPIC_WORDS: dict[str, int] = {
    "fed": TOPIC_NAMES.index("Fed | Central Banks"),
    "rates": TOPIC_NAMES.index("Fed | Central Banks"),
    "earnings": TOPIC_NAMES.index("Earnings"),
    "eps": TOPIC_NAMES.index("Earnings"),
    "oil": TOPIC_NAMES.index("Energy | Oil"),
    "opec": TOPIC_NAMES.index("Energy | Oil"),
    "dividend": TOPIC_NAMES.index("Dividend"),
    "acquire": TOPIC_NAMES.index("M&A | Investments"),
    "ipo": TOPIC_NAMES.index("IPO"),
    "gold": TOPIC_NAMES.index("Gold | Metals | Materials"),
}
DEFAULT_TOPIC = TOPIC_NAMES.index("Markets")
BULLISH = ("beats", "jump", "rally", "surge", "higher", "up")
BEARISH = ("miss", "misses", "falls", "plunge", "cut", "lower", "down")


class KeywordModel:
    name = "keyword"
    version = "test"

    def __init__(self) -> None:
        self.calls: list[int] = []  # batch sizes, to check batching

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        self.calls.append(len(texts))
        topic = np.full((len(texts), NUM_TOPICS), 0.1 / (NUM_TOPICS - 1), dtype=np.float32)
        sentiment = np.full((len(texts), NUM_SENTIMENTS), 0.1, dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z]+", text)
            chosen = next((TOPIC_WORDS[w] for w in words if w in TOPIC_WORDS), DEFAULT_TOPIC)
            topic[i, :] = 0.1 / (NUM_TOPICS - 1)
            topic[i, chosen] = 0.9
            up = sum(w in BULLISH for w in words)
            down = sum(w in BEARISH for w in words)
            label = 1 if up > down else 0 if down > up else 2
            sentiment[i, label] = 0.8
        return Proba(topic=topic, sentiment=sentiment)
