"""What can end an X ingest run, each shown to the user as one line (exit code 2), and the
internal signal that unwinds a wait when a stop was requested."""

from __future__ import annotations

from fintweet.core.errors import UserError


class XAuthError(UserError, RuntimeError):
    """The API rejected the bearer token (401) or refused it this endpoint (403); never retried.
    The message never holds the token."""


class XRequestError(UserError, ValueError):
    """The API refused a request as malformed (400, 404, …): a bad query, an unknown field.
    Retrying cannot help, so it ends the run."""


class XUnreachable(UserError, RuntimeError):
    """A bounded run (``--max-polls``) gave up on a request that kept failing (network, 5xx,
    429) instead of retrying forever."""


class XStateError(UserError, ValueError):
    """The ``since_id`` store (Redis) cannot be read at start-up: without it a restart would
    re-ingest up to seven days of matches, so the run refuses to start."""


class XRuleError(UserError, ValueError):
    """X refused a rule (syntax, an operator the plan lacks, too long), or a rules file is
    empty."""


class Stopped(Exception):
    """Raised inside a wait when a stop was requested, to unwind a poll without saving state."""
