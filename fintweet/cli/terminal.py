"""Text from tweets made safe to print to a terminal, for the human-readable output of ``tail``,
``show`` and ``classify`` (their JSON output escapes control characters already).

A tweet's text is anyone's input: an ESC in it starts a terminal escape sequence that can move
the cursor, rewrite lines already printed, retitle the window or, on some terminals, answer back
into the shell's input. A newline in it would also break ``tail``'s one line per result.
"""

from __future__ import annotations

# C0 (U+0000..U+001F, tab and newline included), DEL, and C1 (U+0080..U+009F, where CSI and
# OSC have one-character forms). Plain space is U+0020 and stays.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES |= {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
# The invisible direction marks, embeddings, overrides and isolates: a right-to-left override
# makes the rest of the line read backwards (the page escapes them too).
_ESCAPES |= {code: f"\\u{code:04x}" for code in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                                   *range(0x2066, 0x206A))}


def printable(text: object) -> str:
    """``text`` with each control character written as its escape (``\\x1b``, ``\\n``…), so
    what reaches the terminal is only what is shown."""
    return str(text).translate(_ESCAPES)
