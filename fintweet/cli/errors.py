"""Which exceptions are the user's input or environment being wrong (print one line, exit 2)
rather than a bug (show the traceback).

One rule: a :class:`fintweet.core.errors.UserError` (every such error of the project derives
from it), or an operating-system refusal to open a file the user named. The check imports only
the tiny core module, so deciding never loads TensorFlow or tweepy.
"""

from __future__ import annotations

from fintweet.core.errors import UserError


def user_error_message(exc: BaseException) -> str | None:
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError):
        if exc.filename is not None and exc.strerror:  # "/x/y: No such file or directory"
            names = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
            return f"{names}: {exc.strerror}"
        return str(exc)
    return None
