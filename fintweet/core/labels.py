"""The Twitter Financial News label maps, topic (20 classes) and sentiment (3): one source of
truth for ids, ``LABEL_n`` names and the readable names shown to people."""

from __future__ import annotations

from collections.abc import Iterable

TOPIC_NAMES: tuple[str, ...] = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

NUM_TOPICS = len(TOPIC_NAMES)

# The sentiment dataset's ids: 0 Bearish, 1 Bullish, 2 Neutral.
SENTIMENT_NAMES: tuple[str, ...] = ("Bearish", "Bullish", "Neutral")
NUM_SENTIMENTS = len(SENTIMENT_NAMES)

# The two tasks every model answers; the order is the order of the heads everywhere.
TASKS: tuple[str, ...] = ("topic", "sentiment")


# A topic-labelled file whose labels are the three sentiment ids, each of them and nothing else,
# on this many rows or more, is taken for the sentiment CSV given as a topic one (topic is every
# command's default task): a real topic sample that lacks 17 of the 20 topics is implausible.
TASK_MIXUP_MIN_ROWS = 50


def looks_like_sentiment(labels: Iterable[int]) -> bool:
    """Whether topic labels read as the sentiment CSV's: see ``TASK_MIXUP_MIN_ROWS``. Unlabelled
    rows (-1) do not count."""
    known = [int(label) for label in labels if label >= 0]
    return len(known) >= TASK_MIXUP_MIN_ROWS and set(known) == set(range(NUM_SENTIMENTS))


def sentiment_mixup(source: str) -> str:
    """The words for a file :func:`looks_like_sentiment` caught; the caller adds the remedy."""
    return (f"{source}: its labels are 0, 1 and 2 and no other, as in the sentiment CSV, but they "
            "are read as topics")


def class_names(task: str) -> tuple[str, ...]:
    """Readable class names of ``task`` ("topic" or "sentiment"), in id order."""
    if task == "topic":
        return TOPIC_NAMES
    if task == "sentiment":
        return SENTIMENT_NAMES
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def num_classes(task: str) -> int:
    return len(class_names(task))


def is_class_index(text: str) -> bool:
    """Whether ``text`` spells a class index: ASCII digits only (``str.isdigit`` also accepts
    ``²``, which ``int`` refuses) and few of them (``int`` refuses thousands)."""
    return text.isascii() and text.isdigit() and len(text) <= 6


def sentiment_id(name: str) -> int:
    """Accept a readable sentiment name (any case) or its ``LABEL_n`` key."""
    if name.startswith("LABEL_") and is_class_index(name[6:]) and int(name[6:]) < NUM_SENTIMENTS:
        return int(name[6:])
    for index, known in enumerate(SENTIMENT_NAMES):
        if known.lower() == name.lower():
            return index
    raise ValueError(f"unknown sentiment {name!r}; expected one of {', '.join(SENTIMENT_NAMES)}")


def topic_id(name_or_key: str) -> int:
    """Accept a readable name or a ``LABEL_n`` key, so configs and dashboards can use either."""
    if name_or_key.startswith("LABEL_") and is_class_index(name_or_key[6:]):
        value = int(name_or_key[6:])
        check_topic_id(value)
        return value
    try:
        return TOPIC_NAMES.index(name_or_key)
    except ValueError:
        raise ValueError(f"unknown topic {name_or_key!r}") from None


def check_topic_id(value: int) -> None:
    if not 0 <= value < NUM_TOPICS:
        raise ValueError(f"topic id {value} is outside 0..{NUM_TOPICS - 1}")


def label_map(task: str = "topic") -> dict[str, object]:
    """The serialisable form stored next to every model artifact."""
    names = class_names(task)
    return {
        "ids": list(range(len(names))),
        "keys": [f"LABEL_{i}" for i in range(len(names))],
        "names": list(names),
    }
