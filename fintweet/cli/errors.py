"""Which exceptions are the user's input or environment being wrong (print one line, exit 2)
rather than a bug (show the traceback)."""

from __future__ import annotations

# Matched by name so that this module imports nothing heavy (TensorFlow, tweepy) to decide.
USER_ERROR_NAMES = frozenset({
    "ArtifactError",  # a models dir without a usable artifact
    "StackError",  # the embedded broker or Redis could not start (port taken, binary missing)
    "PublishError",  # the broker did not acknowledge some tweets
    "XAuthError",  # the X API rejected the bearer token
})


def user_error_message(exc: BaseException) -> str | None:
    from fintweet.core.data import DataError
    from fintweet.core.kafka_errors import BrokerUnavailable

    if isinstance(exc, DataError | BrokerUnavailable | FileNotFoundError | PermissionError):
        return str(exc)
    if type(exc).__name__ in USER_ERROR_NAMES:
        return str(exc)
    if getattr(exc, "user_facing", False):  # an exception raised to tell the user something
        return str(exc)
    return None
