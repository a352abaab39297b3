"""Sentiment end to end: tweets through the real broker and a real worker (the two-head rule model
standing in for a trained one) into the real Redis. The stored results, the counters, the
per-ticker figures, live accuracy per task and the worker's metrics all carry sentiment, and the
same tweets delivered again change no counter."""

from __future__ import annotations

import json

from fintweet.core.config import Settings
from fintweet.core.keys import Keys
from fintweet.core.schema import Tweet, utcnow
from fintweet.core.store import ResultStore
from fintweet.monitoring.worker import WorkerMetrics
from fintweet.worker.app import Worker
from fintweet.worker.consumer import FAST_GROUP_SETTINGS
from tests.helpers import publish
from tests.rule_model import RuleModel
from tests.test_store import snapshot

# (text, true topic id or None, true sentiment id or None); the rule model predicts
# Earnings/Bullish, Energy/Bearish, Fed/Bearish, Markets/Bullish, Markets/Neutral.
SAMPLES = [
    ("$AAPL beats earnings estimates, $aapl up 8% https://t.co/x1", 5, None),
    ("Oil falls as OPEC+ cuts output; $XOM and $CVX lower", 6, None),
    ("The Fed hikes rates by 25 basis points", None, 0),
    ("Stocks rally into the close, $SPY at a record, $SPY!", None, 1),
    ("Quiet session for $TSLA", None, 1),
]


def tweets(n: int) -> list[Tweet]:
    out = []
    for i in range(n):
        text, label, sentiment = SAMPLES[i % len(SAMPLES)]
        now = utcnow()
        out.append(Tweet(id=f"s{i}", text=f"{text} #{i}", created_at=now, source="replay",
                         label=label, sentiment_label=sentiment, ingested_at=now))
    return out


def run_worker(stack, topic: str, expected: int, metrics: WorkerMetrics | None = None):
    settings = Settings().override(kafka_bootstrap=stack.kafka_bootstrap,
                                   redis_url=stack.redis_url, topic=topic, group=f"{topic}-g")
    model = RuleModel()

    def done(stats) -> None:
        if stats.consumed >= expected:
            worker.stopping.set()

    worker = Worker(settings, model, consumer_options=FAST_GROUP_SETTINGS, on_batch=done,
                    until_idle=30, metrics=metrics)
    return worker.run(), model


def test_sentiment_flows_from_kafka_to_results_counters_and_metrics(stack, topic, redis_client):
    total = 250  # 50 of each sample
    publish(stack.kafka_bootstrap, topic, tweets(total))
    metrics = WorkerMetrics()
    stats, model = run_worker(stack, topic, total, metrics)
    assert stats.classified == total
    assert sum(model.calls) == total  # one model call per batch, each tweet once

    store = ResultStore.from_url(stack.redis_url)
    first = store.result("s0")
    assert first["sentiment"] == {"id": 1, "label": "Bullish", "confidence": 0.8}
    assert first["topic"] == "Earnings" and first["label"] == "Earnings"
    assert first["links"]["cashtags"] == ["AAPL"]
    third = store.result("s2")
    assert third["sentiment"]["label"] == "Bearish"
    assert third["true_sentiment"] == {"id": 0, "label": "Bearish"}
    assert "label" not in third

    summary = store.stats()
    assert summary["processed"] == total
    assert summary["sentiments"] == {"Bearish": 100, "Bullish": 100, "Neutral": 50}
    assert summary["topic_sentiment"]["Energy | Oil"] == {"Bearish": 50, "Bullish": 0,
                                                          "Neutral": 0}
    tickers = {t["ticker"]: t for t in summary["tickers"]}
    # $SPY twice in one tweet and $AAPL/$aapl count once per tweet.
    assert tickers["SPY"]["count"] == 50 and tickers["AAPL"]["count"] == 50
    assert tickers["SPY"]["sentiments"] == {"Bearish": 0, "Bullish": 50, "Neutral": 0}
    assert tickers["TSLA"]["sentiments"] == {"Bearish": 0, "Bullish": 0, "Neutral": 50}
    assert {"XOM", "CVX"} <= set(tickers)
    topic_acc = summary["live_accuracy"]["topic"]
    sentiment_acc = summary["live_accuracy"]["sentiment"]
    assert (topic_acc["labelled"], topic_acc["correct"]) == (100, 100)
    # True sentiments: Fed tweet Bearish (predicted Bearish), SPY Bullish (Bullish), TSLA Bullish
    # (predicted Neutral): 100 of 150 right.
    assert (sentiment_acc["labelled"], sentiment_acc["correct"]) == (150, 100)
    assert sentiment_acc["per_class"]["Bullish"] == {"labelled": 100, "correct": 50,
                                                     "accuracy": 0.5}

    keys = Keys()
    assert redis_client.llen(keys.index("ticker", "SPY")) == 50
    assert redis_client.llen(keys.index("sentiment", "Bearish")) == 100
    streamed = [i for _, f in redis_client.xrange(keys.events) for i in json.loads(f[b"ids"])]
    assert sorted(streamed) == sorted(f"s{i}" for i in range(total))

    sample = metrics.registry.get_sample_value
    assert sample("fintweet_tweets_classified_total",
                  {"topic": "Energy | Oil", "sentiment": "Bearish"}) == 50
    assert sample("fintweet_replay_labelled_total",
                  {"task": "sentiment", "true_class": "Bullish"}) == 100
    assert sample("fintweet_replay_correct_total",
                  {"task": "sentiment", "true_class": "Bullish"}) == 50
    assert sample("fintweet_replay_correct_total",
                  {"task": "topic", "true_class": "Earnings"}) == 50
    assert sample("fintweet_top_ticker_tweets", {"ticker": "SPY", "sentiment": "Bullish"}) == 50

    # The same tweets delivered again (a second replay): nothing changes but `duplicates`.
    before = snapshot(redis_client)
    publish(stack.kafka_bootstrap, topic, tweets(total))
    again, _ = run_worker(stack, topic, total)
    assert again.classified == 0 and again.duplicates == total
    after = snapshot(redis_client)
    assert after.pop(keys.duplicates)[1] == str(total).encode()
    assert after == before
