"""The Twitter Financial News topic label map: one source of truth for ids, ``LABEL_n`` names and
the readable names shown to people."""

from __future__ import annotations

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


def label_key(topic_id: int) -> str:
    """The dataset's own name for a class, as the hub's model cards print it."""
    check_topic_id(topic_id)
    return f"LABEL_{topic_id}"


def topic_name(topic_id: int) -> str:
    check_topic_id(topic_id)
    return TOPIC_NAMES[topic_id]


def topic_id(name_or_key: str) -> int:
    """Accept a readable name or a ``LABEL_n`` key, so configs and dashboards can use either."""
    if name_or_key.startswith("LABEL_") and name_or_key[6:].isdigit():
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


def label_map() -> dict[str, object]:
    """The serialisable form stored next to every model artifact."""
    return {
        "ids": list(range(NUM_TOPICS)),
        "keys": [f"LABEL_{i}" for i in range(NUM_TOPICS)],
        "names": list(TOPIC_NAMES),
    }
