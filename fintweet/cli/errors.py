"""Which exceptions are the user's input being wrong (print one line, exit 2) rather than a bug
(show the traceback)."""

from __future__ import annotations


def user_error_message(exc: BaseException) -> str | None:
    from fintweet.core.data import DataError
    from fintweet.core.kafka_errors import BrokerUnavailable

    if isinstance(exc, DataError | BrokerUnavailable | FileNotFoundError | PermissionError):
        return str(exc)
    if type(exc).__name__ in {"ArtifactError", "StackError", "NoBrokersAvailable", "XAuthError"}:
        return str(exc)
    if isinstance(exc, ValueError) and getattr(exc, "user_facing", False):
        return str(exc)
    return None
