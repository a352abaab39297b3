"""Cleaning and link extraction on the tweet shapes the dataset and the X API actually produce.

Each row of ``CASES`` is one raw tweet and everything ``clean`` should make of it; the worker
writes exactly these links to Redis, so a regression here is a wrong value on the dashboard.
"""

from __future__ import annotations

import pytest

from fintweet.core.text import decode, extract_links, prepare

# id, raw tweet, cleaned text, urls, cashtags, mentions, hashtags
CASES = [
    (
        "tco-link",
        "Here are Thursday's biggest analyst calls: Apple, Amazon  https://t.co/QPN8Gwl7Uh",
        "Here are Thursday's biggest analyst calls: Apple, Amazon https://t.co/QPN8Gwl7Uh",
        ["https://t.co/QPN8Gwl7Uh"], [], [], [],
    ),
    (
        "url-then-full-stop",
        "Read the note https://t.co/abc123.",
        "Read the note https://t.co/abc123.",
        ["https://t.co/abc123"], [], [], [],
    ),
    (
        "url-in-parentheses",
        "Results are out (https://t.co/abc123)",
        "Results are out (https://t.co/abc123)",
        ["https://t.co/abc123"], [], [], [],
    ),
    (
        "urls-with-comma-and-bang",
        "Two reads: https://t.co/a1B2, https://t.co/c3D4!",
        "Two reads: https://t.co/a1B2, https://t.co/c3D4!",
        ["https://t.co/a1B2", "https://t.co/c3D4"], [], [], [],
    ),
    (
        "url-with-encoded-query",
        "Filing https://www.sec.gov/cgi-bin/browse?action=getcompany&amp;CIK=0000320193 today",
        "Filing https://www.sec.gov/cgi-bin/browse?action=getcompany&CIK=0000320193 today",
        ["https://www.sec.gov/cgi-bin/browse?action=getcompany&CIK=0000320193"], [], [], [],
    ),
    (
        "bare-www",
        "More at www.reuters.com/markets; subscribe",
        "More at www.reuters.com/markets; subscribe",
        ["www.reuters.com/markets"], [], [], [],
    ),
    (
        "url-then-curly-possessive",
        "Disney https://t.co/KrYlMucS6R’s streaming numbers",
        "Disney https://t.co/KrYlMucS6R’s streaming numbers",
        ["https://t.co/KrYlMucS6R"], [], [], [],
    ),
    (
        "amp-entity",
        "AT&amp;T and Verizon &amp; T-Mobile",
        "AT&T and Verizon & T-Mobile",
        [], [], [], [],
    ),
    (
        "double-encoded-entities",
        "S&amp;amp;P 500 &amp;gt; 4,000 &amp;quot;finally&amp;quot;",
        'S&P 500 > 4,000 "finally"',
        [], [], [], [],
    ),
    (
        "numeric-entities",
        "Buffett&#39;s letter &#8212; read it",
        "Buffett's letter — read it",
        [], [], [], [],
    ),
    (
        "cashtags-with-class-and-case",
        "$TSLA up, $BRK.B flat, $aapl down",
        "$TSLA up, $BRK.B flat, $aapl down",
        [], ["TSLA", "BRK.B", "AAPL"], [], [],
    ),
    (
        "futures-and-crypto-tickers",
        "$ES_F and $BTC-USD overnight",
        "$ES_F and $BTC-USD overnight",
        [], ["ES_F", "BTC-USD"], [], [],
    ),
    (
        "cashtag-then-punctuation",
        "Long $NVDA. Short $AMD, $INTC's guidance?",
        "Long $NVDA. Short $AMD, $INTC's guidance?",
        [], ["NVDA", "AMD", "INTC"], [], [],
    ),
    (
        "money-is-not-a-cashtag",
        "Acme to buy Widget for $5.2B; $100 target, $1,000 by 2025, $3bn deal",
        "Acme to buy Widget for $5.2B; $100 target, $1,000 by 2025, $3bn deal",
        [], [], [], [],
    ),
    (
        "adjacent-cashtags",
        "$AAPL,$MSFT/$GOOGL",
        "$AAPL,$MSFT/$GOOGL",
        [], ["AAPL", "MSFT", "GOOGL"], [], [],
    ),
    (
        "mention",
        "Live now on @CNBCPro with @jimcramer:",
        "Live now on @CNBCPro with @jimcramer:",
        [], [], ["CNBCPro", "jimcramer"], [],
    ),
    (
        "retweet",
        "RT @Reuters: $XOM shares rise",
        "RT @Reuters: $XOM shares rise",
        [], ["XOM"], ["Reuters"], [],
    ),
    (
        "email-is-not-a-mention",
        "Questions to ir@acme.com or jane.doe@bank.co.uk",
        "Questions to ir@acme.com or jane.doe@bank.co.uk",
        [], [], [], [],
    ),
    (
        "hashtags",
        "#FOMC minutes out #Fed #stocks",
        "#FOMC minutes out #Fed #stocks",
        [], [], [], ["FOMC", "Fed", "stocks"],
    ),
    (
        "number-sign-is-not-a-hashtag",
        "Apple is #1 again, #2 is Microsoft; #5G rollout",
        "Apple is #1 again, #2 is Microsoft; #5G rollout",
        [], [], [], ["5G"],
    ),
    (
        "sigils-inside-urls-are-not-entities",
        "https://example.com/$TSLA/@user#section and https://t.co/x9",
        "https://example.com/$TSLA/@user#section and https://t.co/x9",
        ["https://example.com/$TSLA/@user#section", "https://t.co/x9"], [], [], [],
    ),
    (
        "duplicates-kept-once-first-spelling",
        "$TSLA $tsla #Fed #Fed @a @a https://t.co/x https://t.co/x",
        "$TSLA $tsla #Fed #Fed @a @a https://t.co/x https://t.co/x",
        ["https://t.co/x"], ["TSLA"], ["a"], ["Fed"],
    ),
    (
        "unicode-and-emoji",
        "Nikkei ↑ 2% 📈 — $NVDA in Zürich; café",
        "Nikkei ↑ 2% 📈 — $NVDA in Zürich; café",
        [], ["NVDA"], [], [],
    ),
    (
        "newlines-and-runs-of-space",
        "  BREAKING:\nFed hikes 75bp\r\n\n\thttps://t.co/q1  ",
        "BREAKING: Fed hikes 75bp https://t.co/q1",
        ["https://t.co/q1"], [], [], [],
    ),
    (
        "url-cut-short-with-an-ellipsis",
        "RT @CNBC: Fed minutes out https://t.co/bdKkXTKDOL…",
        "RT @CNBC: Fed minutes out https://t.co/bdKkXTKDOL…",
        ["https://t.co/bdKkXTKDOL"], [], ["CNBC"], [],
    ),
    (
        "non-breaking-space",
        "Oil\u00a0jumps\u00a0$USO",
        "Oil jumps $USO",
        [], ["USO"], [], [],
    ),
    (
        # the Kelvin sign and the long s fold to k and s: a "$KO" of them was a second KO
        "cashtags-are-ascii-letters-only",
        "$\u212aO and $KO, $\u017fPY",
        "$\u212aO and $KO, $\u017fPY",
        [], ["KO"], [], [],
    ),
]


@pytest.mark.parametrize(
    ("raw", "text", "urls", "cashtags", "mentions", "hashtags"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_prepare_extracts_links(
    raw: str, text: str, urls: list[str], cashtags: list[str], mentions: list[str],
    hashtags: list[str],
) -> None:
    cleaned = prepare(raw)
    assert cleaned.text == text
    assert cleaned.links.as_dict() == {
        "urls": urls, "cashtags": cashtags, "mentions": mentions, "hashtags": hashtags,
    }


@pytest.mark.parametrize("raw", [pytest.param(case[1], id=case[0]) for case in CASES])
def test_prepare_is_idempotent(raw: str) -> None:
    """The worker may see text that was already cleaned upstream (a replay of its own output);
    cleaning twice must not change text or links."""
    once = prepare(raw)
    assert prepare(once.text) == once


def test_expanded_urls_replace_tco_links_and_keep_others() -> None:
    links = extract_links(
        decode("Deal done https://t.co/abc and www.acme.com/pr"),
        expanded_urls=["https://www.reuters.com/markets/deals/acme-widget-2024"],
    )
    assert links.urls == ("https://www.reuters.com/markets/deals/acme-widget-2024",
                          "www.acme.com/pr")


def test_expanded_urls_empty_list_keeps_tco_links() -> None:
    assert extract_links("see https://t.co/abc", expanded_urls=[]).urls == ("https://t.co/abc",)


@pytest.mark.parametrize("blank", ["", "   ", "\n\t\r\n"])
def test_blank_text_cleans_to_empty_without_links(blank: str) -> None:
    cleaned = prepare(blank)
    assert cleaned.text == ""
    assert cleaned.links.as_dict() == {"urls": [], "cashtags": [], "mentions": [], "hashtags": []}
