"""The page in a real browser: Debian's chromium (scripts/install-chromium.sh, run by `make test`)
driven by playwright with ``executable_path`` (playwright's own browser download cannot work
here), against the real app on a loopback port and the real Redis.

The screenshot goes to the test's tmp dir; with ``FINTWEET_SCREENSHOT=1`` it is also copied to
docs/page.png (the README's picture), so a plain test run never dirties the tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import redis
from fastapi import FastAPI, Request, Response
from playwright.sync_api import Browser, Page, expect, sync_playwright

from fintweet.core.labels import TOPIC_NAMES
from fintweet.core.reader import ResultReader
from fintweet.core.store import ResultStore
from fintweet.devstack.stack import EmbeddedStack
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


def web_app(stack: EmbeddedStack) -> FastAPI:
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    return create_app(ResultReader(client), ResultStore(client), RuleModel())


def web_app_seeing(stack: EmbeddedStack, hook: Callable[[Request], Response | None]) -> FastAPI:
    """The app, with ``hook`` shown every request first: a response it returns is the answer
    (a failure staged for the page), None lets the app answer."""
    app = web_app(stack)

    @app.middleware("http")
    async def see(request: Request,
                  call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        answer = hook(request)
        return answer if answer is not None else await call_next(request)

    return app


def unavailable(detail: str) -> Response:
    return Response(status_code=503, media_type="application/json",
                    content=json.dumps({"detail": detail}).encode())


def redis_down_for(matches: Callable[[Request], bool]) -> Callable[[Request], Response | None]:
    """A hook for :func:`web_app_seeing`: the requests ``matches`` picks are answered as a
    Redis outage would answer them."""
    def hook(request: Request) -> Response | None:
        return unavailable("Redis is unavailable (ConnectionError)") if matches(request) else None

    return hook


def app_holding(stack: EmbeddedStack, name: str, value: str) -> tuple[FastAPI, threading.Event]:
    """The app, with every request whose query has ``name=value`` held until the event is set
    (30 s at most): an answer that comes late, after the page has moved on."""
    release = threading.Event()
    app = web_app(stack)

    @app.middleware("http")
    async def hold(request: Request,
                   call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.query_params.get(name) == value:
            await anyio.to_thread.run_sync(release.wait, 30)
        return await call_next(request)

    return app, release


def watched_page(browser: Browser, errors: list[str]) -> Page:
    """A new page whose uncaught script errors go to ``errors``."""
    page = browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


@contextlib.contextmanager
def page_on(app: FastAPI, browser: Browser) -> Iterator[Page]:
    """The page of ``app`` served on a loopback port, open in the browser; no script error
    may have happened by the time the block ends."""
    errors: list[str] = []
    with ServerThread(app) as server:
        page = watched_page(browser, errors)
        try:
            page.goto(server.url + "/")
            yield page
        finally:
            page.close()
    assert errors == []


def feed_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#feed li", "items => items.map(li => li.dataset.id)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install-chromium.sh` "
                    "(make test does) or set CHROMIUM_BIN to a Chromium binary")
    # expect's 5 s default is tight where chromium, the node driver, the broker, Redis and the
    # app share two busy cores; a page that is right answers at once anyway.
    expect.set_options(timeout=20_000)
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
            "arrived", "$TSLA surges 6% as Fed signals cuts https://t.co/late.",
            T("Stock Movement"), BULLISH, confidence=0.91)])
        first = page.locator("#feed li").first
        expect(first).to_have_attribute("data-id", "arrived", timeout=15_000)
        expect(first.locator(".badge.topic")).to_contain_text("Stock Movement")
        expect(first.locator(".badge.Bullish")).to_be_visible()
        expect(first.locator(".cashtag")).to_have_text("$TSLA")
        # the full stop ends the sentence, not the link (as the stored links say)
        expect(first.locator("a")).to_have_attribute("href", "https://t.co/late")
        expect(first.locator("a")).to_have_text("https://t.co/late")
        # A screen reader hears a count of new tweets, not the tweets: the list is not live.
        expect(page.locator("#feed-news")).to_have_text("1 new tweet")
        expect(page.locator("#feed")).not_to_have_attribute("aria-live", re.compile("."))
        # Charts: top tickers with a sentiment mix, the distribution, a per-minute series.
        expect(page.locator("#tickers tbody tr").first).to_contain_text("$TSLA")
        expect(page.locator("#topic-bars li")).to_have_count(13)  # every topic seeded
        # Each sentiment segment shows only a label that fits it ("earish 13" before), and
        # again once the window narrows.
        for width in (1400, 240):
            page.set_viewport_size({"width": width, "height": 1050})
            page.wait_for_timeout(100)  # the resize event
            cut = page.eval_on_selector_all(
                "#sentiment-bar span",
                "spans => spans.filter(s => s.scrollWidth > s.clientWidth).map(s => s.textContent)")
            assert cut == [], width
        page.set_viewport_size({"width": 1400, "height": 1050})
        expect(page.locator("#series-chart svg rect").first).to_be_visible()
        # The classify box: type a tweet, see its topic; emptied, it asks for a tweet instead
        # of leaving the last answer under the empty box.
        box = page.get_by_label("Tweet to classify")
        answer = page.locator("#classify-answer")
        for text in ("Oil prices plunge as OPEC+ talks collapse $XOM", "", "Oil prices plunge "
                     "as OPEC+ talks collapse $XOM"):
            box.fill(text)
            page.click("#classify-button")
            if text:
                expect(answer).to_contain_text("Energy | Oil")
                expect(answer).to_contain_text("Bearish")
                # The button kept the focus (a disabled one dropped it to the page's start).
                assert page.evaluate("() => document.activeElement.id") == "classify-button"
            else:
                expect(page.locator("#classify-result")).to_have_text(
                    "Type or paste a tweet to classify.")
                expect(answer).to_have_count(0)
        # The keyboard opens a ticker's series too: a cashtag in a tweet, a row of the table
        # (press() focuses the element first, as Tab would).
        page.locator("#feed .cashtag", has_text="$MSFT").first.press("Enter")
        expect(page.locator("#series-value")).to_have_value("MSFT")
        expect(page.locator("#series-chart")).to_contain_text("$MSFT ·")
        top_row = page.locator("#tickers tbody tr").first
        top_ticker = top_row.locator(".cashtag").inner_text().removeprefix("$")
        top_row.locator(".cashtag").press(" ")
        expect(page.locator("#series-value")).to_have_value(top_ticker)
        # The series of the top ticker agrees with its count in the tickers table.
        # (Polled: the two refresh on their own timers, so one may already count the tweet
        # that arrived and the other not yet.)
        def agree() -> bool:
            top = page.locator("#tickers tbody tr").first.locator("td.num").inner_text()
            caption = re.search(r"([\d,]+) tweets? in the last hour",
                                page.locator("#series-chart").inner_text())
            return caption is not None and caption[1].replace(",", "") == top.replace(",", "")

        wait_for(agree, 15, "the top ticker's count in the table and in its series")
        page.wait_for_timeout(300)  # let the highlight of the new tweet fade a little
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    assert shot.stat().st_size > 20_000
    assert errors == []
    if os.environ.get("FINTWEET_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "page.png")


def seed_hour_and_day(redis_client: redis.Redis) -> None:
    """Three $AMD tweets three hours ago (the last day only), one $TSLA ten minutes ago."""
    now = time.time()
    for k, sentiment in enumerate((BEARISH, BEARISH, BULLISH)):
        seed(redis_client, [make_result(f"amd{k}", f"$AMD falls on guidance, take {k}",
                                        T("Stock Movement"), sentiment)], at=now - 3 * 3600)
    seed(redis_client, [make_result("tsla", "$TSLA rises", T("Stock Movement"), BULLISH)],
         at=now - 600)


def app_keeping_buckets(stack: EmbeddedStack, seconds: int) -> FastAPI:
    """The page's app over the test Redis, its per-minute buckets kept ``seconds``."""
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    return create_app(ResultReader(client), ResultStore(client, bucket_retention_s=seconds),
                      RuleModel())


def test_a_range_past_the_buckets_retention_is_not_offered(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """With the per-minute buckets kept an hour, the API refuses a day's window: the page
    offered "Last day" anyway, and choosing it showed an error instead of figures."""
    seed_hour_and_day(redis_client)
    with ServerThread(app_keeping_buckets(stack, seconds=3600)) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        expect(page.locator("#window option[value='1d']")).to_be_disabled()
        expect(page.locator("#window option[value='1h']")).to_be_enabled()
        expect(page.locator("#window")).to_have_value("1h")
        expect(page.locator("#tickers tbody tr")).to_have_count(1)
        page.close()


def test_with_an_api_key_the_page_asks_for_it_then_shows_the_stream(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    seed_hour_and_day(redis_client)
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    app = create_app(ResultReader(client), ResultStore(client, bucket_retention_s=3600),
                     RuleModel(), api_key="sesame")
    with ServerThread(app) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#keybar")).to_be_visible()
        expect(page.locator("#feed li")).to_have_count(0)
        page.fill("#key-input", "sesame")
        page.press("#key-input", "Enter")
        expect(page.locator("#keybar")).to_be_hidden()
        expect(page.locator("#feed li")).to_have_count(4)  # what was seeded
        expect(page.locator("#window option[value='1d']")).to_be_disabled()  # limits read
        expect(page.locator("#tickers tbody tr")).to_have_count(1)
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        page.close()
    assert errors == []


def test_buckets_kept_under_an_hour_make_the_shortest_range_what_they_hold(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Buckets kept half an hour: the API refuses even an hour's window, and the page showed
    the refusal in both cards for good. Its shortest range is now the half hour they hold."""
    seed_hour_and_day(redis_client)  # $TSLA ten minutes ago; $AMD three hours ago
    with ServerThread(app_keeping_buckets(stack, seconds=1800)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#window option[value='1h']")).to_have_text("Last 30 minutes")
        expect(page.locator("#window option[value='1d']")).to_be_disabled()
        expect(page.locator("#tickers-title")).to_have_text("Top tickers · last 30 minutes")
        rows = page.locator("#tickers tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("$TSLA")
        expect(page.locator("#series-chart")).to_contain_text(
            "$TSLA · 1 tweet in the last 30 minutes")
        page.close()
    assert errors == []


def test_the_time_range_switches_the_top_tickers_and_the_series_to_the_last_day(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Tweets of three hours ago are outside the last hour and inside the last day: the range
    picker must move the tickers table, its titles and the series with it, and back."""
    seed_hour_and_day(redis_client)
    day_reads: list[float] = []  # when the page asked for a day's top tickers

    def count_day_reads(request: Request) -> None:
        if request.url.path == "/v1/tickers" and request.query_params.get("window") == "1d":
            day_reads.append(time.monotonic())

    with ServerThread(web_app_seeing(stack, count_day_reads)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        rows = page.locator("#tickers tbody tr")
        chart = page.locator("#series-chart")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("$TSLA")
        expect(chart).to_contain_text("$TSLA · 1 tweet in the last hour")

        page.select_option("#window", "1d")
        expect(page.locator("#tickers-title")).to_have_text("Top tickers · last day")
        expect(page.locator("#series-title")).to_have_text("Last day, per 15 minutes")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("$AMD")
        expect(rows.first.locator("td.num")).to_have_text("3")
        # The day counts as read once its series showed too (a series answer dropped because
        # the choice changed meanwhile leaves it to be read again): wait for that first.
        expect(chart).to_contain_text("$TSLA · 1 tweet in the last day")
        read = time.monotonic()
        rows.first.locator(".cashtag").press("Enter")
        expect(chart).to_contain_text("$AMD · 3 tweets in the last day")
        expect(chart.locator("svg")).to_have_attribute("aria-label", "AMD: tweets per 15 min")
        # 96 steps of 15 minutes; the three tweets share one of them, stacked by sentiment.
        expect(chart.locator("rect.bar-bear")).to_have_count(1)
        expect(chart.locator("rect.bar-bull")).to_have_count(1)
        # A new batch: the totals follow it; a day's tickers and series are read again only
        # after 30 s (a day is thousands of Redis reads), or when the range changes.
        seed(redis_client, [make_result("amd-now", "$AMD rebounds", T("Stock Movement"), BULLISH)])
        expect(page.locator("#tile-processed")).to_have_text("5", timeout=15_000)
        assert day_reads and day_reads[0] < read
        assert all(at - read >= 30 for at in day_reads if at > read), "read again within 30 s"

        page.select_option("#window", "1h")
        expect(page.locator("#tickers-title")).to_have_text("Top tickers · last hour")
        expect(rows).to_have_count(2)
        expect(chart).to_contain_text("$AMD · 1 tweet in the last hour")
        page.select_option("#window", "1d")
        expect(rows.first.locator("td.num")).to_have_text("4")
        expect(chart).to_contain_text("$AMD · 4 tweets in the last day")
        page.close()
    assert errors == []


def test_a_day_answer_that_comes_after_the_range_went_back_is_dropped(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Last day, then at once last hour: the day's tickers, held back here until the hour is
    shown, must not replace the hour's table when they come."""
    seed_hour_and_day(redis_client)
    app, release = app_holding(stack, "window", "1d")
    with ServerThread(app) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        rows = page.locator("#tickers tbody tr")
        expect(rows).to_have_count(1)
        with page.expect_request_finished(lambda r: "window=1d" in r.url) as held:
            page.select_option("#window", "1d")
            page.select_option("#window", "1h")
            expect(page.locator("#tickers-title")).to_have_text("Top tickers · last hour")
            release.set()
        assert "/v1/tickers" in held.value.url
        # Nothing refreshes the table again on its own for 30 s, so a day's table drawn from
        # the held answer would still be there now.
        page.wait_for_timeout(500)
        assert rows.count() == 1
        expect(rows.first).to_contain_text("$TSLA")
        expect(page.locator("#series-chart")).to_contain_text(
            re.compile(r"tweets? in the last hour"))
        page.close()
    assert errors == []


def test_a_day_series_that_failed_is_read_again_by_the_next_refresh(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """A day is read at most every 30 s, but only once it showed: a series answer that failed
    leaves the range to be read again at the next batch, not the last hour's bars under the
    day's title for 30 s."""
    seed_hour_and_day(redis_client)
    failures = [1]

    def fail_one_day_series(request: Request) -> Response | None:
        if (request.url.path == "/v1/series" and request.query_params.get("window") == "1d"
                and failures):
            failures.pop()
            return unavailable("held")
        return None

    with ServerThread(web_app_seeing(stack, fail_one_day_series)) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        chart = page.locator("#series-chart")
        expect(chart).to_contain_text("$TSLA · 1 tweet in the last hour")
        page.select_option("#window", "1d")
        expect(page.locator("#tickers tbody tr")).to_have_count(2)
        wait_for(lambda: not failures, 15, "the day's series to be asked for, and fail")
        expect(chart).to_contain_text("in the last hour")
        seed(redis_client, [make_result("tsla2", "$TSLA again", T("Stock Movement"), BULLISH)])
        expect(chart).to_contain_text("$TSLA · 2 tweets in the last day", timeout=15_000)
        page.close()


def test_a_series_the_user_picked_that_fails_says_so_in_the_chart(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """A cashtag clicked while its series cannot be read (Redis down, say): the failure went
    uncaught, and the chart kept the previous ticker's bars under the new choice."""
    seed_hour_and_day(redis_client)

    amd_series_unavailable = redis_down_for(lambda request: request.url.path == "/v1/series"
                                            and request.query_params.get("ticker") == "AMD")
    with ServerThread(web_app_seeing(stack, amd_series_unavailable)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        chart = page.locator("#series-chart")
        expect(chart).to_contain_text("$TSLA · 1 tweet in the last hour")
        page.locator("#feed .cashtag", has_text="$AMD").first.click()
        expect(chart).to_contain_text("Could not load the series: Redis is unavailable")
        expect(chart).not_to_contain_text("$TSLA")
        page.close()
    assert errors == []


def test_the_page_reconnects_a_stream_the_server_refused(
        stack, redis_client: redis.Redis, browser: Browser, monkeypatch) -> None:
    """A browser gives up for good on a stream answered 503 (the server's streams all taken,
    or Redis down); the page retries it itself, goes live once the server lets it in, and
    shows what was written while it was refused (the new stream starts at the newest batch)."""
    seed(redis_client, [make_result("old", "$AMD before the page", T("Markets"), NEUTRAL)])
    app = web_app(stack)  # before the patch: its streams' thread limiter is sized from it
    monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 0)  # every stream refused
    with ServerThread(app) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#status-text")).to_have_text("reconnecting…")
        expect(page.locator("#feed li")).to_have_count(1)  # the feed loaded, the stream not
        seed(redis_client, [make_result("gap", "$AMD while the stream was refused",
                                        T("Markets"), BEARISH)])
        monkeypatch.setattr("fintweet.web.app.MAX_STREAMS", 64)
        # the page's retries back off (2, 4, 8, 16 s …): on a slow machine the next may be far
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=40_000)
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "gap")
        seed(redis_client, [make_result("after", "$AMD jumps after the reconnect",
                                        T("Stock Movement"), BULLISH)])
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "after",
                                                                  timeout=15_000)
        page.close()
    assert errors == []


def test_a_stream_dropped_before_its_first_batch_resumes_where_it_started(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """The browser reconnects a dropped stream itself, from the last event id it saw: the
    stream's first message carries the id it starts after, so a drop before any batch (here
    the server stops and comes back on the same port) still misses nothing."""
    seed(redis_client, [make_result("old", "$AMD before the page", T("Markets"), NEUTRAL)])
    errors: list[str] = []
    page = watched_page(browser, errors)
    with ServerThread(web_app(stack)) as server:
        port = server.port
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#feed li")).to_have_count(1)
    # The server is gone, and the stream with it, before it sent any batch.
    expect(page.locator("#status")).to_have_attribute("data-state", "error")
    seed(redis_client, [make_result("gap", "$AMD while the server was away", T("Markets"),
                                    BEARISH)])
    with ServerThread(web_app(stack), port=port):
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=40_000)
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "gap",
                                                                  timeout=15_000)
        page.close()
    assert errors == []


def test_the_feed_loads_once_redis_is_back(
        stack: EmbeddedStack, redis_client: redis.Redis, browser: Browser) -> None:
    """Redis down when the page opens: the feed, the stream and the charts all fail; once
    Redis is back the feed loads by itself, not only when a new tweet arrives."""
    seed(redis_client, [make_result("kept", "$AMD before Redis stopped", T("Markets"),
                                    NEUTRAL)])
    stack.stop_redis()  # its append-only file keeps the tweet
    try:
        with ServerThread(web_app(stack)) as server:
            errors: list[str] = []
            page = watched_page(browser, errors)
            page.goto(server.url + "/")
            expect(page.locator("#status-text")).to_have_text("reconnecting…")
            expect(page.locator("#feed-empty")).to_be_visible()
            stack.start_redis()
            # the feed's retry or its 30-s refresh, whichever comes first
            expect(page.locator("#feed li").first).to_have_attribute("data-id", "kept",
                                                                      timeout=45_000)
            expect(page.locator("#status")).to_have_attribute("data-state", "live")
            page.close()
    finally:
        stack.start_redis()  # a no-op when it runs
    assert errors == []


def test_a_slow_answer_to_an_earlier_filter_never_replaces_the_feed(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Filters changed quickly: the answer for the earlier one, held back here until the later
    one is shown, is dropped when it comes."""
    for i in range(5):
        seed(redis_client, [make_result(f"e{i}", f"$AAA earnings {i}", T("Earnings"), BULLISH)])
        seed(redis_client, [make_result(f"m{i}", f"$BBB markets {i}", T("Markets"), BEARISH)])
    app, release = app_holding(stack, "topic", "Earnings")
    with ServerThread(app) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#feed li")).to_have_count(10)
        expect(page.locator("#feed-topic option", has_text="Earnings")).to_have_count(1)
        with page.expect_request_finished(lambda r: "topic=Earnings" in r.url) as held:
            page.select_option("#feed-topic", "Earnings")
            page.select_option("#feed-topic", "Markets")
            expect(page.locator("#feed li")).to_have_count(5)
            release.set()
        assert "topic=Earnings" in held.value.url
        # A tweet that comes after the held answer (a page's tasks run in order, and it went
        # through Redis and the stream): once it shows, the held answer has been dealt with.
        seed(redis_client, [make_result("m5", "$BBB markets 5", T("Markets"), BEARISH)])
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "m5")
        assert feed_ids(page) == [f"m{i}" for i in range(5, -1, -1)]
        page.close()
    assert errors == []


def test_a_tweet_cannot_inject_markup_or_script_links(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Tweet text is text: markup in it shows as written, and only http(s) URLs become links
    (a quote ends the URL, so it cannot add an attribute). Loaded and streamed alike."""
    text = ("Bad <img src=x onerror=window.pwned=1> javascript:alert(1) "
            'https://x.y/"onmouseover=window.pwned=2 $AAA')
    seed(redis_client, [make_result("loaded", text, T("Markets"), BEARISH)])
    with ServerThread(web_app(stack)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        seed(redis_client, [make_result("streamed", text, T("Markets"), BEARISH)])
        expect(page.locator("#feed li")).to_have_count(2)
        for item in page.locator("#feed li").all():
            expect(item.locator(".tweet-text")).to_contain_text("<img src=x onerror=")
            expect(item.locator("a")).to_have_count(1)
            expect(item.locator("a")).to_have_attribute("href", "https://x.y/")
            item.locator("a").hover()
        assert page.locator("#feed img").count() == 0
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        assert hrefs and all(re.match(r"https?://", href) for href in hrefs), hrefs
        handlers = page.evaluate("""() => [...document.querySelectorAll("#feed *")]
            .flatMap(node => [...node.attributes].map(a => a.name))
            .filter(name => name.startsWith("on"))""")
        assert handlers == []
        assert page.evaluate("() => window.pwned") is None
        page.close()
    assert errors == []


def test_a_filtered_feed_shows_a_match_the_stream_event_left_out(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """An event carries a batch's newest 50 results: a match among the older ones of a bigger
    batch reached a filtered page only on the next reload."""
    seed(redis_client, [make_result("m0", "$BBB markets", T("Markets"), BEARISH),
                        make_result("e0", "$AAA earnings", T("Earnings"), NEUTRAL)])
    with ServerThread(web_app(stack)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#feed-topic option", has_text="Earnings")).to_have_count(1)
        page.select_option("#feed-topic", "Earnings")
        expect(page.locator("#feed li")).to_have_count(1)
        # one batch of 60: the Earnings tweet first, so not among the 50 the event carries
        seed(redis_client, [make_result("hidden", "$AAA earnings beat", T("Earnings"), BULLISH),
                            *(make_result(f"x{i}", "$BBB markets", T("Markets"), BEARISH)
                              for i in range(59))])
        expect(page.locator("#feed li")).to_have_count(2)
        expect(page.locator("#feed li").first).to_have_attribute("data-id", "hidden")
        page.close()
    assert errors == []


def test_a_page_told_to_reset_reads_its_feed_again(
        stack, redis_client: redis.Redis, browser: Browser, monkeypatch) -> None:
    """Back from sleep further behind than the server replays: the stream starts at the newest
    batch with a reset event, and what was written meanwhile comes with the feed."""
    monkeypatch.setattr("fintweet.web.app.MAX_RESUME_BATCHES", 0)  # any catch-up is too far
    seed(redis_client, [make_result("first", "$AMD before", T("Markets"), NEUTRAL)])
    with ServerThread(web_app(stack)) as server:
        port = server.port
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#feed li")).to_have_count(1)
    expect(page.locator("#status")).to_have_attribute("data-state", "error")
    for i in range(2):  # two batches behind: the browser's resume gets a reset
        seed(redis_client, [make_result(f"away{i}", "$AMD while away", T("Markets"), BEARISH)])
    with ServerThread(web_app(stack), port=port):
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=40_000)
        expect(page.locator("#feed li")).to_have_count(3, timeout=15_000)
        assert feed_ids(page) == ["away1", "away0", "first"]
        page.close()
    assert errors == []


def test_the_accuracy_tile_shows_each_task_a_replay_labelled(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """A sentiment replay labels sentiment only: the tile read the topic figure and showed –."""
    seed(redis_client, [make_result("a", "$AMD", T("Markets"), NEUTRAL)])
    redis_client.hset("fintweet:accuracy:sentiment", mapping={"labelled": 10, "correct": 8})
    with ServerThread(web_app(stack)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#tile-accuracy")).to_have_text("sentiment 80.0%")
        redis_client.hset("fintweet:accuracy:topic", mapping={"labelled": 4, "correct": 3})
        seed(redis_client, [make_result("b", "$AMD", T("Markets"), NEUTRAL)])  # a refresh
        expect(page.locator("#tile-accuracy")).to_have_text("topic 75.0% · sentiment 80.0%")
        page.close()
    assert errors == []


def test_page_messages_say_why_nothing_shows_and_control_characters_are_shown_not_obeyed(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Walkthrough findings: a filter nothing matches read "Waiting for tweets…" as if the
    system were empty; a right-to-left override in a tweet reversed the text after it; an
    answer without links showed a line "null"; a refused key changed nothing on screen; the
    form cut long texts silently where the API names the limit."""
    seed(redis_client, [make_result("lines", "two\nlines", T("Markets"), NEUTRAL),
                        make_result("rtl", "RTL \u202eevil\u202c text $AMD \u061c "
                                    "https://x.y/\u202efdp.exe", T("Markets"), NEUTRAL)])
    with ServerThread(web_app(stack)) as server:
        errors: list[str] = []
        page = watched_page(browser, errors)
        page.goto(server.url + "/")
        expect(page.locator("#feed li")).to_have_count(2)
        expect(page.locator("#feed li[data-id=lines] .ctl")).to_have_count(0)  # white space
        text = page.locator("#feed li[data-id=rtl] .tweet-text")
        expect(text).to_have_text(
            "RTL \\u202eevil\\u202c text $AMD \\u061c https://x.y/\\u202efdp.exe")
        expect(text.locator(".ctl")).to_have_count(4)  # in a link's text too
        page.select_option("#feed-sentiment", "Bearish")
        expect(page.locator("#feed li")).to_have_count(0)
        expect(page.locator("#feed-empty")).to_have_text("No tweets match these filters yet.")
        page.select_option("#feed-sentiment", "")
        expect(page.locator("#feed li")).to_have_count(2)
        expect(page.locator("#feed-empty")).to_be_hidden()

        box = page.get_by_label("Tweet to classify")
        box.fill("Fed raises rates by 75bp, signals more hikes")  # no cashtag, link or tag
        page.click("#classify-button")
        expect(page.locator("#classify-answer")).to_be_visible()
        assert "null" not in page.locator("#classify-result").inner_text()
        box.fill("x" * 10_001)  # kept whole: the API's limit is what answers
        assert len(box.input_value()) == 10_001
        page.click("#classify-button")
        expect(page.locator("#classify-result .error")).to_contain_text("10,000")
        page.close()
    assert errors == []

    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    keyed = create_app(ResultReader(client), ResultStore(client), RuleModel(), api_key="sesame")
    with page_on(keyed, browser) as page:
        expect(page.locator("#keybar")).to_be_visible()
        expect(page.locator("#status-text")).to_have_text("API key needed")  # not "connecting…"
        page.fill("#key-input", "wrong")
        page.press("#key-input", "Enter")
        expect(page.locator("#key-error")).to_contain_text("That key was refused")
        assert page.evaluate("() => document.activeElement.id") == "key-input"
        page.fill("#key-input", "sesame")
        page.press("#key-input", "Enter")
        expect(page.locator("#keybar")).to_be_hidden()
        expect(page.locator("#feed li")).to_have_count(2)

    nothing = redis_down_for(lambda request: request.url.path.startswith("/v1/")
                             and request.url.path != "/v1/limits")
    with page_on(web_app_seeing(stack, nothing), browser) as page:  # Redis down at load
        expect(page.locator("#notice")).to_contain_text("Could not read the counts")
        expect(page.locator("#tickers-empty")).to_have_text("Could not read the tickers.")

    no_feed = redis_down_for(lambda request: request.url.path == "/v1/tweets")
    with page_on(web_app_seeing(stack, no_feed), browser) as page:  # read "Waiting for tweets"
        expect(page.locator("#feed-empty")).to_have_text(
            "Could not load the feed: Redis is unavailable (ConnectionError)")
        expect(page.locator("#feed-empty")).to_have_class(re.compile(r"\bfailed\b"))


def test_counts_that_cannot_be_read_are_said_to_be_out_of_date(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """Redis down after the page loaded: the tiles kept their figures with nothing saying they
    had stopped; a notice says so until a read succeeds again."""
    seed(redis_client, [make_result("a", "$AMD up", T("Markets"), BULLISH)])
    failing = threading.Event()

    hook = redis_down_for(lambda request: failing.is_set() and request.url.path == "/v1/stats")
    with page_on(web_app_seeing(stack, hook), browser) as page:
        expect(page.locator("#tile-processed")).to_have_text("1")
        expect(page.locator("#notice")).to_be_hidden()
        # the batch below refreshes through the stream: open before it is written
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        failing.set()
        seed(redis_client, [make_result("b", "$AMD down", T("Markets"), BEARISH)])  # a refresh
        expect(page.locator("#notice")).to_contain_text("Could not read the counts")
        expect(page.locator("#notice")).to_contain_text("Redis is unavailable")
        failing.clear()
        seed(redis_client, [make_result("c", "$AMD flat", T("Markets"), NEUTRAL)])
        expect(page.locator("#notice")).to_be_hidden()
        expect(page.locator("#tile-processed")).to_have_text("3")


def test_any_ticker_typed_in_opens_its_series(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """The series offered only the ten most named tickers of the range: any other one was
    reachable only through a cashtag in the feed."""
    seed(redis_client, [make_result(f"{ticker}{i}", f"${ticker} up", T("Markets"), BULLISH)
                        for ticker in ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH",
                                       "III", "JJJ") for i in range(2)])
    seed(redis_client, [make_result("z", "$ZZZ rare", T("Markets"), BEARISH)])
    with page_on(web_app(stack), browser) as page:
        chart = page.locator("#series-chart")
        expect(chart).to_contain_text("tweets in the last hour")
        expect(page.locator("#series-value option")).to_have_count(10)
        assert "ZZZ" not in page.locator("#series-value").inner_text()  # the 11th named
        box = page.get_by_label("Show any ticker (then Enter)")
        box.fill("$zzz")
        box.press("Enter")
        expect(page.locator("#series-value")).to_have_value("ZZZ")
        expect(chart).to_contain_text("$ZZZ · 1 tweet in the last hour")
        box.fill("NOPE")  # named by no tweet: an empty series, not an error
        box.press("Enter")
        expect(chart).to_contain_text("$NOPE · 0 tweets in the last hour")
        box.fill("bad ticker!")  # checked as the API checks it; kept in the box to be fixed
        box.press("Enter")
        assert box.input_value() == "bad ticker!"
        assert page.evaluate("() => document.getElementById('ticker-input').validationMessage")
        expect(chart).to_contain_text("$NOPE ·")  # nothing asked for
        # From a topic series: its name was kept in the ticker list ("$Markets")
        page.select_option("#series-field", "topic")
        expect(chart).to_contain_text("Markets ·")
        box.fill("AAA")
        box.press("Enter")
        expect(chart).to_contain_text("$AAA · 2 tweets")
        assert "Markets" not in page.locator("#series-value").inner_text()


def test_a_row_clicked_while_its_series_cannot_be_read_says_so_in_the_chart(
        stack, redis_client: redis.Redis, browser: Browser) -> None:
    """A top-tickers row's click went round pickSeries: a failure was an uncaught error, and
    the chart kept the previous series."""
    seed_hour_and_day(redis_client)
    hook = redis_down_for(lambda request: request.url.path == "/v1/series"
                          and request.query_params.get("ticker") == "AMD")
    with page_on(web_app_seeing(stack, hook), browser) as page:
        chart = page.locator("#series-chart")
        expect(chart).to_contain_text("$TSLA ·")
        page.select_option("#window", "1d")  # $AMD's tweets are three hours old
        expect(chart).to_contain_text("$TSLA · 1 tweet in the last day")
        page.locator("#tickers tbody tr", has_text="$AMD").click()
        expect(chart).to_contain_text("Could not load the series: Redis is unavailable")
