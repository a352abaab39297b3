"""The tests' one stand-in for a trained model: a deterministic two-head :class:`Classifier`
whose keyword rules decide topic and sentiment, so a test knows each text's answer without
training anything. Used by the worker, store, web and CLI tests; the real models are tested by
their own tests, and this double stands in only for the model, never for Kafka or Redis.

Model texts arrive prepared (lower case, URLs as ``xxurl``), so the rules read whole
lower-case words: the first topic word in the text decides the topic (else ``DEFAULT_TOPIC``);
more bullish than bearish words make it Bullish, fewer Bearish, a tie Neutral."""

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
BULLISH = ("beats", "jump", "jumps", "rally", "surge", "higher", "up")
BEARISH = ("miss", "misses", "falls", "plunge", "cut", "cuts", "hikes", "lower", "down")
TOPIC_P = 0.9  # the chosen topic's probability; the rest share 0.1
SENTIMENT_P = 0.8  # the chosen sentiment's; the other two get 0.1 each


class RuleModel:
    name = "rules"
    version = "test"

    def __init__(self) -> None:
        self.calls: list[int] = []  # batch sizes seen: one call per batch

    def predict_proba(self, texts: Sequence[str]) -> Proba:
        self.calls.append(len(texts))
        topic = np.full((len(texts), NUM_TOPICS), (1 - TOPIC_P) / (NUM_TOPICS - 1),
                        dtype=np.float32)
        sentiment = np.full((len(texts), NUM_SENTIMENTS), (1 - SENTIMENT_P) / 2,
                            dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z]+", text)
            topic[i, next((TOPIC_WORDS[w] for w in words if w in TOPIC_WORDS),
                          DEFAULT_TOPIC)] = TOPIC_P
            up = sum(w in BULLISH for w in words)
            down = sum(w in BEARISH for w in words)
            sentiment[i, 1 if up > down else 0 if down > up else 2] = SENTIMENT_P
        return Proba(topic=topic, sentiment=sentiment)
