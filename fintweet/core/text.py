"""Tweet cleaning and link extraction, shared by the worker (links into Redis) and the models
(the text they see), so training and serving can never disagree on preprocessing.

Why a placeholder rather than deletion for URLs: whether a tweet carries a link is itself a topic
signal (news headlines almost always end in a t.co link, commentary rarely does), while the random
t.co path is pure noise. Cashtags and handles are kept as tokens: ``$TSLA`` and ``@CNBCPro`` carry
topic signal (measured on the holdout: docs/models.md, "Text preparation").
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MAX_TEXT_CHARS = 10_000  # the longest text a tweet may have (X's long posts stay under it)

# A URL runs until whitespace; a trailing sentence mark is not part of it.
# Curly quotes end a URL too (real URLs percent-encode them): "https://t.co/x’s" is a possessive.
_URL = re.compile(r"\bhttps?://[^\s<>\"'‘’“”]+|\bwww\.[^\s<>\"'‘’“”]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?)]}'\"…"  # … : a URL cut short by a retweet or a truncated text
# One pass finds all four kinds of link; a URL is tried first at each position.
# Cashtags ($TSLA, $BRK.B, $ES_F, $BTC-USD) start with a letter, so "$100" and "$5.2B" are money.
# The leading lookahead is a speed gate: most positions start none of the four, and one
# character test rejects them before the alternatives' lookbehinds run (4x faster per tweet on
# the training CSVs, the same matches on all of them).
_LINK = re.compile(
    r"(?=[hw$@#])"
    r"(?P<url>\bhttps?://[^\s<>\"'‘’“”]+|\bwww\.[^\s<>\"'‘’“”]+)"
    # (?-i:): under IGNORECASE [A-Za-z] also takes the Kelvin sign and the long s, which
    # would make "$\u212aO" a second KO that reads the same in the tickers table
    r"|(?<![\w$])\$(?P<cashtag>(?-i:[A-Za-z][A-Za-z0-9]{0,9}(?:[._-][A-Za-z0-9]{1,4})?))\b"
    r"|(?<![\w@])@(?P<mention>\w{1,30})"
    r"|(?<![\w#&])#(?P<hashtag>\w*[A-Za-z_]\w*)",
    re.IGNORECASE,
)
# Tokens for the model: cashtags/handles/hashtags whole, words with inner apostrophes or dots
# ("u.s.", "q3", "don't"), numbers with their unit ("5%", "$5.2b"), and single punctuation.
_TOKEN = re.compile(
    r"xxurl|[$@#]\w+(?:[._-]\w+)?|\$?\d+(?:[.,]\d+)*[%kmbx]?|\w+(?:['’.]\w+)*|[^\w\s]"
)

URL_TOKEN = "xxurl"


@dataclass(frozen=True)
class Links:
    """What a tweet points at. Cashtags are upper-cased (``$tsla`` and ``$TSLA`` are one ticker);
    mentions and hashtags keep the author's spelling without the sigil."""

    urls: tuple[str, ...] = ()
    cashtags: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "urls": list(self.urls),
            "cashtags": list(self.cashtags),
            "mentions": list(self.mentions),
            "hashtags": list(self.hashtags),
        }


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items)) if len(items) > 1 else tuple(items)


def decode(text: str) -> str:
    """Decode HTML entities (the dataset carries ``&amp;``) and collapse whitespace. Entities are
    decoded twice because some feeds double-encode (``&amp;amp;``). The ``&`` test and
    ``str.split`` keep this cheap: it runs on every tweet in the worker's hot path."""
    if "&" in text:
        text = html.unescape(html.unescape(text))
    return " ".join(text.split())


# Whitespace and the format characters that show nothing (zero-width space and joiners, the
# byte-order mark, direction marks, the soft hyphen): a text of only these is blank to a reader,
# and to the model, which was classifying "\u200b" as news.
_INVISIBLE = re.compile(r"[\s\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]*")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a tweet's text, or None: what ``schema.Tweet`` refuses, for a
    producer (the CSV replay) to check every row before it sends the first, and for every CSV
    reader. Here, not beside ``Tweet``, so that reading a CSV needs no pydantic (a GPU machine
    runs the trainer with only Keras carried in)."""
    # What the worker stores and classifies is the decoded text: "&nbsp;" is blank too. Only
    # a text with an entity needs decoding here (this runs for every tweet the worker reads;
    # the match stops at the first visible character, the first one of nearly every tweet).
    if _INVISIBLE.fullmatch(text) or ("&" in text and _INVISIBLE.fullmatch(decode(text))):
        return "text is blank (once HTML entities are decoded)"
    if len(text) > MAX_TEXT_CHARS:
        return f"text is {len(text):,} characters, over the {MAX_TEXT_CHARS:,} a tweet may have"
    if "\x00" in text:  # rejected, not stripped: a NUL means the producer is broken
        return "text contains a NUL character"
    return None


def extract_links(text: str, expanded_urls: list[str] | None = None) -> Links:
    """Links of a decoded tweet, in one regex pass. A URL is matched before anything inside it,
    so ``$X`` or ``@y`` within a link is not taken for a cashtag or mention. ``expanded_urls``
    (from the X API's entities) replace the t.co short links they expand, so Redis holds real
    destinations when the source gives them."""
    found: dict[str, list[str]] = {"url": [], "cashtag": [], "mention": [], "hashtag": []}
    for match in _LINK.finditer(text):
        kind = match.lastgroup
        value = match.group(kind)  # type: ignore[arg-type]
        if kind == "url":
            value = value.rstrip(_URL_TRAILING)
        elif kind == "cashtag":
            value = value.upper()
        found[kind].append(value)  # type: ignore[index]
    urls = found["url"]
    if expanded_urls:
        urls = [u for u in urls if not u.lower().startswith(("http://t.co/", "https://t.co/"))]
        urls = list(expanded_urls) + urls
    return Links(
        urls=_unique(urls),
        cashtags=_unique(found["cashtag"]),
        mentions=_unique(found["mention"]),
        hashtags=_unique(found["hashtag"]),
    )


def _model_text_of_decoded(decoded: str) -> str:
    """The text a model sees: lower-cased, each URL replaced by one ``xxurl`` token. Cashtags,
    handles and hashtags stay, with their sigils, as tokens of their own."""
    return _URL.sub(f" {URL_TOKEN} ", decoded).lower()


@dataclass(frozen=True, slots=True)
class PreparedText:
    """Everything downstream reads of one raw tweet, computed once: the decoded text people see
    and Redis stores, its links, and the text every model reads (``model_text``)."""

    text: str
    links: Links
    model_text: str


def prepare(text: str, expanded_urls: list[str] | None = None) -> PreparedText:
    """The one text preparation of the project. The worker calls it once per tweet and hands
    ``model_text`` to the model; the trainer, ``evaluate`` and the web app call the same
    function, so training and serving cannot disagree."""
    decoded = decode(text)
    return PreparedText(
        text=decoded,
        links=extract_links(decoded, expanded_urls),
        model_text=_model_text_of_decoded(decoded),
    )


def prepare_model_texts(texts: list[str]) -> list[str]:
    """``prepare(t).model_text`` for many raw texts (training and evaluation)."""
    return [_model_text_of_decoded(decode(t)) for t in texts]


def tokenize(text: str) -> list[str]:
    """Split a model text (``PreparedText.model_text``) into tokens. Faster than nltk's
    TweetTokenizer (the worker calls this on every tweet) and it keeps the same units that
    matter here: ``$tsla``, ``@cnbcpro``, ``#fomc``, ``5%``, ``u.s.``."""
    return _TOKEN.findall(text)
