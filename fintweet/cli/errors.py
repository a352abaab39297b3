"""Which exceptions are the user's input or environment being wrong (print one line, exit 2)
rather than a bug (show the traceback).

One rule: a :class:`fintweet.core.errors.UserError` (every such error of the project derives
from it), or an operating-system refusal to open a file the user named. The check imports only
the tiny core module, so deciding never loads TensorFlow or tweepy.
"""

from __future__ import annotations

from fintweet.core.errors import UserError


def user_error_message(exc: BaseException) -> str | None:
    if isinstance(exc, UserError | FileNotFoundError | PermissionError):
        return str(exc)
    # cli/train.py and cli/eda.py (the models helper's files) still mark a plain ValueError with
    # ``user_facing``; drop this line once they raise UserError.
    if getattr(exc, "user_facing", False):
        return str(exc)
    return None
