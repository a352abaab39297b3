"""The human-readable output of ``tail``, ``show`` and ``classify`` never hands a tweet's control
characters to the terminal: an ESC in a tweet would otherwise start an escape sequence (clear
the screen, retitle the window, rewrite earlier lines). Their JSON output keeps the text as it
is. ``tail`` and ``show`` run as a user runs them, against the real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fintweet.cli.main import main
from fintweet.cli.terminal import printable
from fintweet.core.labels import TOPIC_NAMES
from tests.rule_model import RuleModel
from tests.seed import make_result, seed

EARNINGS = TOPIC_NAMES.index("Earnings")
BULLISH = 1
# OSC (retitle the window), CSI (clear the screen) in its 7-bit and its one-character C1 form,
# a NUL and DEL.
HOSTILE = "$AAPL beats \x1b]0;owned\x07 \x1b[2J\x9b31m\x00\x7f next \u00e9\u2603"
ESCAPED = "$AAPL beats \\x1b]0;owned\\x07 \\x1b[2J\\x9b31m\\x00\\x7f next \u00e9\u2603"


def no_controls(text: str) -> bool:
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text)


def test_printable_escapes_c0_del_and_c1_and_keeps_the_rest() -> None:
    assert printable(HOSTILE) == ESCAPED
    # a newline would also split tail's one line per result
    assert printable("tab\there\r\nnext") == "tab\\there\\r\\nnext"
    assert printable("plain text, $TSLA 🚀 ünïcödé") == "plain text, $TSLA 🚀 ünïcödé"
    assert printable("RTL \u202eevil\u202c \u2067x\u2069 \u061c") == (
        "RTL \\u202eevil\\u202c \\u2067x\\u2069 \\u061c")
    assert printable(None) == "None"


def cli(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", *args], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120,
                          check=False)


@pytest.fixture
def hostile(redis_client):
    seed(redis_client, [make_result("h1", HOSTILE, EARNINGS, BULLISH)])
    return redis_client


def test_tail_and_show_escape_control_characters_but_json_keeps_them(stack, hostile) -> None:
    tail = cli(stack, "tail")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.splitlines() == [f"h1  [Earnings]  [Bullish]  {ESCAPED}"]
    show = cli(stack, "show", "h1")
    assert show.returncode == 0, show.stderr
    assert no_controls(show.stdout)
    text_line = next(line for line in show.stdout.splitlines() if line.startswith("text "))
    assert text_line.split(None, 1)[1] == ESCAPED
    for args in (("tail", "--json"), ("show", "h1", "--json")):
        as_json = cli(stack, *args)
        assert not [c for c in as_json.stdout if ord(c) < 0x20 and c != "\n"], args
        assert json.loads(as_json.stdout)["text"] == HOSTILE, args


def test_classify_table_escapes_control_characters_in_texts_and_ids(
        monkeypatch, tmp_path, capsys) -> None:
    import fintweet.web.classify as classify_module

    monkeypatch.setattr(classify_module, "load_classifier", lambda *_a, **_k: RuleModel())
    assert main(["classify", "--models", str(tmp_path), "oil \x1b[2J down \x9b0m"]) == 0
    out = capsys.readouterr().out
    assert no_controls(out)
    assert out.splitlines()[1].endswith("oil \\x1b[2J down \\x9b0m")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,text\n"a\x1b[1m",gold rally\n', encoding="utf-8")
    assert main(["classify", "--models", str(tmp_path), "--file", str(csv_file)]) == 0
    out = capsys.readouterr().out
    assert no_controls(out) and out.splitlines()[1].startswith("a\\x1b[1m ")
    assert main(["classify", "--models", str(tmp_path), "--json", "oil \x1b[2J"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "oil \x1b[2J"


def test_a_folder_the_system_refuses_is_one_line_naming_it(capsys, tmp_path) -> None:
    """The OS's words after the path, not Python's "[Errno 2] ..." repr."""
    a_file = tmp_path / "afile"
    a_file.write_text("")
    state = a_file / "state"  # under a file: no folder can be made there
    assert main(["up", "--state-dir", str(state), "--kafka-port", "0", "--redis-port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"fintweet up: error: {state}: Not a directory"]
