"""The fields every answer about a text carries (fintweet.core.answer): the worker's stored result
and the page/CLI answer are built from them, so their order, ties and rounding are checked here
once."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from fintweet.core.answer import TOP_TOPICS, answer_fields, answers, rank
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TOPIC_NAMES
from fintweet.core.text import prepare


def test_top_topics_are_best_first_and_ties_go_to_the_lower_id() -> None:
    topic = np.zeros((2, NUM_TOPICS), dtype=np.float32)
    topic[0, [4, 9, 2]] = [0.5, 0.3, 0.2]
    topic[1] = 1 / NUM_TOPICS  # all tied
    sentiment = np.array([[0.2, 0.7, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=np.float32)
    ranked = rank(topic, sentiment)
    assert ranked.topic_ids == [[4, 9, 2], [0, 1, 2]]
    assert ranked.topic_ps[0] == [0.5, 0.3, 0.2]
    assert ranked.sentiment_ids == [1, 0]
    assert ranked.sentiment_ps == [0.7, 0.3333]


def test_probabilities_are_plain_floats_rounded_so_the_json_is_short() -> None:
    topic = np.full((1, NUM_TOPICS), 0.01, dtype=np.float32)
    topic[0, 3] = 0.7  # float32: 0.699999988...
    ranked = rank(topic, np.array([[0.1, 0.2, 0.7]], dtype=np.float32))
    assert type(ranked.topic_ps[0][0]) is float and type(ranked.sentiment_ids[0]) is int
    fields = answer_fields(prepare("$tsla up https://t.co/x"), ranked.topic_ids[0],
                           ranked.topic_ps[0], ranked.sentiment_ids[0], ranked.sentiment_ps[0])
    encoded = orjson.dumps(fields)
    assert b'"confidence":0.7,' in encoded and b"0.69999" not in encoded
    assert list(fields) == ["text", "topic_id", "topic", "confidence", "top3", "sentiment",
                            "links"]
    assert fields["topic"] == TOPIC_NAMES[3] and len(fields["top3"]) == TOP_TOPICS
    assert fields["sentiment"] == {"id": 2, "label": "Neutral", "confidence": 0.7}
    assert fields["links"]["cashtags"] == ["TSLA"]


@pytest.mark.parametrize("shapes", [((2, NUM_TOPICS), (3, NUM_SENTIMENTS)),
                                    ((2, NUM_TOPICS - 1), (2, NUM_SENTIMENTS)),
                                    ((2, NUM_TOPICS), (2, 2))])
def test_mismatched_heads_are_refused(shapes) -> None:
    with pytest.raises(ValueError, match="expected"):
        rank(np.ones(shapes[0]), np.ones(shapes[1]))


def test_an_empty_batch_gives_no_answers() -> None:
    ranked = rank(np.zeros((0, NUM_TOPICS)), np.zeros((0, NUM_SENTIMENTS)))
    assert answers([], ranked) == []
