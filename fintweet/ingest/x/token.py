"""The bearer token: held so it never prints itself, and scrubbed from tweepy's debug log, which
would otherwise print the ``Authorization`` header."""

from __future__ import annotations

import logging

from fintweet.ingest.x.errors import XAuthError

_TWEEPY_LOGGERS = ("tweepy.client", "tweepy.streaming")


class BearerToken:
    """An app-only bearer token that never prints itself (repr, str, f-strings, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        if value is None or not value.strip():
            raise XAuthError("no X API bearer token: set FINTWEET_X_BEARER_TOKEN "
                             "(developer portal → your app → Keys and tokens → Bearer Token)")
        value = value.strip()
        # A token is URL-encoded ASCII. Anything else came with the paste (typographic quotes, a
        # line break): an HTTP header cannot carry it, which showed as a traceback (non-Latin-1)
        # or as a connection failure retried for ever (a line break), never as a bad token.
        for position, char in enumerate(value, 1):
            if not "!" <= char <= "~":
                raise XAuthError(f"FINTWEET_X_BEARER_TOKEN has U+{ord(char):04X} at character "
                                 f"{position}, which no bearer token holds: paste the token "
                                 "again, without quotes, spaces or line breaks")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "BearerToken('***')"

    __str__ = __repr__


class _RedactToken(logging.Filter):
    """tweepy logs request headers at DEBUG (``fintweet -v``); this masks the token in them."""

    def __init__(self, token: BearerToken) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self._token.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class TokenRedaction:
    """Context manager: the token is masked in tweepy's log records while it is active."""

    def __init__(self, token: BearerToken) -> None:
        self.token = token
        self._filter: _RedactToken | None = None

    def __enter__(self) -> TokenRedaction:
        self._filter = _RedactToken(self.token)
        for name in _TWEEPY_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._filter is not None:
            for name in _TWEEPY_LOGGERS:
                logging.getLogger(name).removeFilter(self._filter)
            self._filter = None
