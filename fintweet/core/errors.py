"""The one base class for errors meant for the user, not for a developer.

A :class:`UserError` is raised when the input or the environment is wrong (a bad CSV, a broker
that is down, a rejected token, an unknown filter): its message is one line naming the bad input
and what to do, and the CLI prints it and exits 2 instead of showing a traceback (``-v`` shows the
traceback anyway). Subclasses also derive from the built-in class that fits (``ValueError``,
``ConnectionError``…) so callers that catch those keep working. It lives in the core, and imports
nothing, so the CLI can recognise every such error without importing TensorFlow or tweepy.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is for the person running the command (one line, exit code 2)."""
