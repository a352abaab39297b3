"""The page in a real browser: Debian's chromium (scripts/install-chromium.sh, run by `make test`)
driven by playwright with ``executable_path`` (playwright's own browser download cannot work
here), against the real app on a loopback port and the real Redis.

The screenshot goes to the test's tmp dir; with ``FINTWEET_SCREENSHOT=1`` it is also copied to
docs/page.png (the README's picture), so a plain test run never dirties the tree.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, expect, sync_playwright

from fintweet.core.labels import TOPIC_NAMES
from fintweet.core.reader import ResultReader
from fintweet.core.store import ResultStore
from fintweet.web.app import create_app
from fintweet.web.server import ServerThread
from tests.helpers import wait_for
from tests.rule_model import RuleModel
from tests.seed import make_result, seed

# Debian's chromium, or another build named by CHROMIUM_BIN (as PROMETHEUS_BIN for Prometheus).
CHROMIUM = Path(os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]

BEARISH, BULLISH, NEUTRAL = range(3)
T = TOPIC_NAMES.index
# (text, topic, sentiment, minutes ago): a plausible hour of the stream for the screenshot.
HOUR = [
    ("$NVDA beats Q3 estimates, data-center revenue up 41% https://t.co/nv1",
     T("Earnings"), BULLISH, 52),
    ("Fed's Waller: more rate cuts likely if inflation keeps cooling",
     T("Fed | Central Banks"), BULLISH, 47),
    ("$TSLA slides 4% after delivery miss; analysts trim targets",
     T("Stock Movement"), BEARISH, 44),
    ("Oil jumps as OPEC+ extends output cuts into Q2 $XOM $CVX", T("Energy | Oil"), BULLISH, 39),
    ("$AAPL to buy back $110B of stock, raises dividend 4%", T("Dividend"), BULLISH, 35),
    ("Treasury yields climb ahead of the jobs report",
     T("Treasuries | Corporate Debt"), NEUTRAL, 31),
    ("$TSLA recall: 120,000 vehicles over a seat-belt warning @NHTSAgov",
     T("Legal | Regulation"), BEARISH, 27),
    ("Goldman upgrades $NVDA to conviction buy, PT $1,100 #AI", T("Analyst Update"), BULLISH, 23),
    ("Gold hits a record as the dollar weakens", T("Gold | Metals | Materials"), BULLISH, 19),
    ("$TSLA China sales fall 18% y/y in April", T("Stock Movement"), BEARISH, 15),
    ("Reddit prices IPO at top of range, valuing it at $6.4B $RDDT", T("IPO"), BULLISH, 12),
    ("$NVDA and $AMD lead chip stocks lower in late trading", T("Stock Movement"), BEARISH, 9),
    ("ECB holds rates, signals a June cut is on the table", T("Fed | Central Banks"), NEUTRAL, 6),
    ("$MSFT to acquire a minority stake in Mistral for $2B", T("M&A | Investments"), NEUTRAL, 4),
    ("$TSLA bulls return: Musk says robotaxi reveal set for August",
     T("Company | Product News"), BULLISH, 2),
    ("S&P 500 closes at a record; Nasdaq up 1.1% $SPY", T("Markets"), BULLISH, 1),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install-chromium.sh` "
                    "(make test does) or set CHROMIUM_BIN to a Chromium binary")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_page_shows_live_tweets_charts_and_classifies(
        stack, redis_client: redis.Redis, browser: Browser, tmp_path: Path) -> None:
    now = time.time()
    # Background volume: each minute of the hour repeats a few of the tweets above (a fixed
    # pattern, so the screenshot is the same every run), then the hour itself, in time order.
    background = []
    for minute in range(60, 0, -1):
        for k in range((minute * 7) % 4):
            text, topic, sentiment, _ = HOUR[(minute + k * 5) % len(HOUR)]
            background.append((f"b{minute}-{k}", text, topic, sentiment, minute))
    timeline = background + [(f"h{i}", *row) for i, row in enumerate(HOUR)]
    for tweet_id, text, topic, sentiment, ago in sorted(timeline, key=lambda row: -row[4]):
        stamp = datetime.fromtimestamp(now - ago * 60, UTC).isoformat()
        seed(redis_client, [make_result(tweet_id, text, topic, sentiment, confidence=0.86,
                                        created_at=stamp)], at=now - ago * 60)
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    app = create_app(ResultReader(client), ResultStore(client), RuleModel())
    with ServerThread(app) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        expect(page.locator("#feed li")).to_have_count(30)  # the page loads the latest 30
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        # A tweet that arrives after the page loaded appears at the top, without a reload.
        seed(redis_client, [make_result(
            "arrived", "$TSLA surges 6% as Fed signals cuts https://t.co/late", T("Stock Movement"),
            BULLISH, confidence=0.91)])
        first = page.locator("#feed li").first
        expect(first).to_have_attribute("data-id", "arrived", timeout=15_000)
        expect(first.locator(".badge.topic")).to_contain_text("Stock Movement")
        expect(first.locator(".badge.Bullish")).to_be_visible()
        expect(first.locator(".cashtag")).to_have_text("$TSLA")
        expect(first.locator("a")).to_have_attribute("href", "https://t.co/late")
        # Charts: top tickers with a sentiment mix, the distribution, a per-minute series.
        expect(page.locator("#tickers tbody tr").first).to_contain_text("$TSLA")
        expect(page.locator("#topic-bars li")).to_have_count(12)
        expect(page.locator("#series-chart svg rect").first).to_be_visible()
        # The classify box: type a tweet, see its topic.
        page.fill("#classify-text", "Oil prices plunge as OPEC+ talks collapse $XOM")
        page.click("#classify-button")
        answer = page.locator("#classify-answer")
        expect(answer).to_contain_text("Energy | Oil")
        expect(answer).to_contain_text("Bearish")
        # The series of the top ticker agrees with its count in the tickers table.
        # (Polled: the two refresh on their own timers, so one may already count the tweet
        # that arrived and the other not yet.)
        def agree() -> bool:
            top = page.locator("#tickers tbody tr").first.locator("td.num").inner_text()
            return f"{top} tweets" in page.locator("#series-chart").inner_text()

        wait_for(agree, 15, "the top ticker's count in the table and in its series")
        page.wait_for_timeout(300)  # let the highlight of the new tweet fade a little
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    assert shot.stat().st_size > 20_000
    assert errors == []
    if os.environ.get("FINTWEET_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "page.png")


def test_the_page_reconnects_a_stream_the_server_refused(
        stack, redis_client: redis.Redis, browser: Browser, monkeypatch) -> None:
    """A browser gives up for good on a stream answered 503 (the server's streams all taken,
    or Redis down); the page retries it itself and goes live once the server lets it in."""
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    app = create_app(ResultReader(client), ResultStore(client), RuleModel())
    monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 0)  # every stream refused
    with ServerThread(app) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        expect(page.locator("#status-text")).to_have_text("reconnecting…")
        monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 64)
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=15_000)
        seed(redis_client, [make_result("after", "$AMD jumps after the reconnect",
                                        T("Stock Movement"), BULLISH)])
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "after",
                                                                  timeout=15_000)
        page.close()
    assert errors == []
