"""Filtered-stream rules and the default search query: what "financial news on X" means here, and
how the account's rule set is brought to exactly that, idempotently.

The rule set lives on the X account, not in this process, so a restart (or a second deploy with
the same rules) must not pile up copies; rules are compared by their value, the only thing X
itself treats as identity (it refuses a second rule with the same value as ``DuplicateRule``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tweepy

from fintweet.ingest.x.errors import XRuleError

USER_RULE_TAG = "fintweet"
RULES_ROUTE = "/2/tweets/search/stream/rules"


@dataclass(frozen=True)
class RuleSpec:
    value: str
    # Tags come back on every matching tweet; always set so tweepy's stream parser, which reads
    # ``matching_rules[].tag``, never meets a rule without one.
    tag: str = USER_RULE_TAG


# The training data (Twitter Financial News topics) is headlines from financial news accounts, so
# the defaults aim at the same: the big newswires plus cashtag, macro and corporate-event talk,
# English only, no retweets or replies (copies and chatter), links required where the wording
# alone is too broad. Each stays under 512 characters, the lowest rule-length limit X has had.
# Operator availability differs by plan (the ``$`` cashtag operator in particular): check yours.
NEWS_ACCOUNTS_QUERY = (
    "(from:Reuters OR from:ReutersBiz OR from:business OR from:markets OR from:WSJmarkets "
    "OR from:FT OR from:CNBC OR from:MarketWatch OR from:YahooFinance OR from:Benzinga "
    "OR from:FirstSquawk OR from:LiveSquawk) -is:retweet"
)
DEFAULT_STREAM_RULES: tuple[RuleSpec, ...] = (
    RuleSpec(NEWS_ACCOUNTS_QUERY, "fintweet:newswires"),
    RuleSpec(
        "($AAPL OR $MSFT OR $NVDA OR $AMZN OR $GOOGL OR $META OR $TSLA OR $JPM OR $V OR $XOM "
        "OR $UNH OR $LLY OR $AVGO OR $WMT) lang:en -is:retweet -is:reply",
        "fintweet:large-caps",
    ),
    RuleSpec(
        '("Federal Reserve" OR FOMC OR "rate cut" OR "rate hike" OR "Treasury yields" '
        'OR "jobs report" OR CPI OR ECB OR "central bank") lang:en -is:retweet -is:reply has:links',
        "fintweet:macro",
    ),
    RuleSpec(
        "(earnings OR guidance OR dividend OR buyback OR IPO OR merger OR acquisition OR "
        "downgrade OR upgrade) (stock OR shares OR Nasdaq OR NYSE) lang:en -is:retweet "
        "-is:reply has:links",
        "fintweet:corporate",
    ),
)
# Recent search takes one query (512 characters on Basic); the newswires are the best single one.
DEFAULT_SEARCH_QUERY = NEWS_ACCOUNTS_QUERY


def rules_from_values(values: Sequence[str]) -> list[RuleSpec]:
    """User-given rules, stripped, blank ones dropped, duplicates collapsed (first wins)."""
    seen = dict.fromkeys(v.strip() for v in values if v and v.strip())
    return [RuleSpec(value) for value in seen]


def is_comment(line: str) -> bool:
    """``#`` then a space (or nothing) starts a comment; ``#`` then a word is X's hashtag
    operator, so ``#earnings lang:en`` stays a rule even at the start of a line."""
    stripped = line.strip()
    return stripped == "#" or stripped.startswith(("# ", "#\t", "##"))


def read_rules_file(path: str | Path) -> list[RuleSpec]:
    """One rule per line; blank lines and comment lines (see :func:`is_comment`) are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise XRuleError(f"rules file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                         ) from None
    except OSError as exc:  # absent, a directory, unreadable
        raise XRuleError(f"rules file {path}: {exc.strerror or exc}; give a text file with "
                         "one rule per line") from None
    rules = rules_from_values([line for line in lines if not is_comment(line)])
    if not rules:
        raise XRuleError(f"rules file {path} holds no rules (only blank lines or # comments)")
    return rules


@dataclass(frozen=True)
class RulesChange:
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    kept: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.deleted)


def _describe(errors: Sequence[dict[str, Any]]) -> str:
    """X's per-rule errors, e.g. ``'$AAPL lang:xx': UnprocessableEntity (invalid lang)``."""
    parts = []
    for error in errors[:5]:
        text = str(error.get("title") or error.get("message") or "error")
        details = error.get("details") or error.get("detail")
        if details:
            text += f" ({'; '.join(map(str, details)) if isinstance(details, list) else details})"
        value = error.get("value")
        parts.append(f"{value!r}: {text}" if value is not None else text)
    return "; ".join(parts)


def _is_duplicate(error: dict[str, Any], adding: set[str]) -> bool:
    """X's ``DuplicateRule`` for a value this reconcile is adding: the rule is there, which is
    what the add wanted. The retrying ``call`` re-sends an add whose response was lost (a dropped
    connection, a 5xx after the commit), and X answers the repeat with exactly this."""
    title = "".join(ch for ch in str(error.get("title") or "").lower() if ch.isalpha())
    kind = str(error.get("type") or "")
    value = error.get("value")
    return ((title == "duplicaterule" or kind.endswith("/duplicate-rules"))
            and isinstance(value, str) and value.strip() in adding)


def reconcile_rules(
    client: tweepy.StreamingClient,
    desired: Sequence[RuleSpec],
    call: Callable[..., Any] | None = None,
) -> RulesChange:
    """Make the account's rules exactly ``desired``: add wanted values that are missing, delete
    rules whose value is not wanted, leave equal ones alone (so a restart changes nothing and
    loses no matches). Adds go first, checked before they are made: a rule X refuses ends the run
    with the old rules in place and none of the new, rather than with the stale ones deleted and
    nothing matching (an account at its plan's
    rule cap needs room for the new rules first; X's refusal says so). ``call(what, fn, *args)``
    runs each API call (the ingester passes its retrying wrapper; ``what`` names the request in
    its logs and errors)."""
    if not desired:
        raise XRuleError("no stream rules given")
    invoke = call or (lambda _what, fn, *args, **kwargs: fn(*args, **kwargs))
    wanted: dict[str, RuleSpec] = {}
    for rule in desired:
        wanted.setdefault(rule.value.strip(), rule)

    current = invoke(f"GET {RULES_ROUTE}", client.get_rules).data or []
    stale = [rule for rule in current if rule.value not in wanted]
    present = {rule.value for rule in current}
    missing = [rule for value, rule in wanted.items() if value not in present]

    if missing:
        adding = {rule.value.strip() for rule in missing}
        rules = [tweepy.StreamRule(value=rule.value.strip(), tag=rule.tag) for rule in missing]
        # Checked first (X validates a dry run and creates nothing): X creates the valid rules
        # of an add it partly refuses, so a refusal left the account with the old rules and
        # some of the new, a set nobody asked for.
        # "true" as X documents it: tweepy would send a bool as requests spells it, "True".
        for what, dry_run in (("check", {"dry_run": "true"}), ("add", {})):
            response = invoke(f"POST {RULES_ROUTE} ({what})", client.add_rules, rules,
                              **dry_run)
            refused = [error for error in response.errors or ()
                       if not _is_duplicate(error, adding)]
            if refused:
                raise XRuleError(f"X refused rule(s): {_describe(refused)}")
    if stale:
        response = invoke(f"POST {RULES_ROUTE} (delete)", client.delete_rules,
                          [str(rule.id) for rule in stale])
        if response.errors:
            raise XRuleError(f"X did not delete stale rules: {_describe(response.errors)}")
    return RulesChange(
        added=tuple(rule.value.strip() for rule in missing),
        deleted=tuple(rule.value for rule in stale),
        kept=tuple(value for value in wanted if value in present),
    )
