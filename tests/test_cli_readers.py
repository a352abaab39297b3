"""``fintweet show``, ``tail`` and ``classify`` as a user runs them: subprocesses against the real
Redis (seeded with the documented layout), and ``classify`` through the same code path as
``POST /v1/classify`` with the rule test model (the real model is checked end to end in
tests/test_web_api.py)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fintweet.cli.main import main
from fintweet.core.labels import TOPIC_NAMES
from tests.rule_model import RuleModel
from tests.seed import make_result, seed

EARNINGS = TOPIC_NAMES.index("Earnings")
OIL = TOPIC_NAMES.index("Energy | Oil")
BEARISH, BULLISH, NEUTRAL = range(3)


def cli(stack, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url}
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def seeded(redis_client):
    seed(redis_client, [
        make_result("t1", "$AAPL beats earnings https://t.co/a @CNBC #earnings", EARNINGS, BULLISH),
        make_result("t2", "Oil slides as OPEC+ talks stall $XOM", OIL, BEARISH),
        make_result("t3", "$AAPL guidance in line", EARNINGS, NEUTRAL),
    ])
    return redis_client


def test_show_prints_one_result_pretty_or_as_json(stack, seeded) -> None:
    pretty = cli(stack, "show", "t1")
    assert pretty.returncode == 0, pretty.stderr
    lines = dict(line.split(None, 1) for line in pretty.stdout.splitlines()
                 if not line.startswith(("text", "top-3")))
    assert lines["topic"] == "Earnings (90.0%)"
    assert lines["sentiment"] == "Bullish (80.0%)"
    assert lines["cashtags"] == "AAPL" and lines["urls"] == "https://t.co/a"
    assert "$AAPL beats earnings" in pretty.stdout
    as_json = cli(stack, "show", "t2", "--json")
    assert json.loads(as_json.stdout)["sentiment"]["label"] == "Bearish"
    missing = cli(stack, "show", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"fintweet show: error: no result for tweet id 'nope' in {stack.redis_url} "
        "(prefix 'fintweet'); `fintweet tail` lists recent ids"]
    # bytes that are not UTF-8 (a traceback before), or no id at all: said, not looked up
    for bad in ("caf\udce9", "a b"):
        refused = cli(stack, "show", bad)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
        assert "is not a tweet id" in refused.stderr, refused.stderr


def test_tail_lists_newest_first_with_filters(stack, seeded) -> None:
    everything = cli(stack, "tail")
    assert [line.split()[0] for line in everything.stdout.splitlines()] == ["t3", "t2", "t1"]
    assert "[Earnings]  [Neutral]  $AAPL guidance in line" in everything.stdout
    two = cli(stack, "tail", "-n", "2", "--json")
    assert [json.loads(line)["id"] for line in two.stdout.splitlines()] == ["t3", "t2"]
    aapl_bullish = cli(stack, "tail", "--ticker", "aapl", "--sentiment", "bullish")
    assert [line.split()[0] for line in aapl_bullish.stdout.splitlines()] == ["t1"]
    by_id = cli(stack, "tail", "--topic", str(OIL))
    assert [line.split()[0] for line in by_id.stdout.splitlines()] == ["t2"]
    bad = cli(stack, "tail", "--topic", "Sports")
    assert bad.returncode == 2 and "unknown topic 'Sports'" in bad.stderr
    empty = cli(stack, "tail", "--ticker", "")  # was every result, as if no filter were given
    assert empty.returncode == 2 and "--ticker is empty" in empty.stderr and not empty.stdout


def test_tail_follow_prints_results_written_after_it_started(stack, seeded) -> None:
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "tail", "-n", "1", "--follow",
         "--topic", "Earnings"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        # as a process started in the background without job control inherits it: kill -INT
        # did not stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    try:
        assert lines.get(timeout=60).startswith("t3 ")  # the backlog, then it follows
        seed(seeded, [make_result("n1", "Fed holds", TOPIC_NAMES.index("Fed | Central Banks"),
                                  NEUTRAL),
                      make_result("n2", "$NVDA earnings beat", EARNINGS, BULLISH)])
        assert lines.get(timeout=30).startswith("n2 ")  # n1 is filtered out
        seed(seeded, [make_result("n3", "EPS up", EARNINGS, BULLISH)])
        assert lines.get(timeout=30).startswith("n3 ")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
        assert process.stderr is not None and "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_classify_texts_file_and_stdin_share_the_api_answer(
        monkeypatch, tmp_path: Path, capsys) -> None:
    import fintweet.web.classify as classify_module

    model = RuleModel()
    loaded: list[tuple[str, str, str]] = []

    def load(models_dir, kind, transformer_runtime=""):
        loaded.append((str(models_dir), kind, transformer_runtime))
        return model

    monkeypatch.setattr(classify_module, "load_classifier", load)
    monkeypatch.delenv("FINTWEET_TRANSFORMER_RUNTIME", raising=False)
    assert main(["classify", "--models", str(tmp_path), "--model", "ann",
                 "--transformer-runtime", "onnx", "Oil jumps on OPEC cut",
                 "$AAPL beats earnings"]) == 0
    out, err = capsys.readouterr()
    table = out.splitlines()
    assert err.strip() == "model rules@test"  # which version answered, off the table's stream
    assert loaded == [(str(tmp_path), "ann", "onnx")]  # the flag reaches the loader
    assert table[0].split() == ["#", "topic", "conf", "sentiment", "conf", "text"]
    assert table[1].split()[:5] == ["1", "Energy", "|", "Oil", "90%"]
    assert "Bullish" in table[2] and "Earnings" in table[2]

    csv_file = tmp_path / "in.csv"
    csv_file.write_text('id,text\na1,"Fed raises rates, stocks lower"\na2,gold rally\n')
    assert main(["classify", "--file", str(csv_file), "--json", "--batch-size", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["topic"], r["sentiment"]["label"]) for r in rows] == [
        ("a1", "Fed | Central Banks", "Bearish"), ("a2", "Gold | Metals | Materials", "Bullish")]
    assert rows[0]["model"] == "rules@test" and model.calls[-2:] == [1, 1]
    # The API's answer for the same text is the same object, field for field.
    from fintweet.web.classify import classify_texts

    api_answer = classify_texts(model, ["Fed raises rates, stocks lower"])[0]
    assert {k: v for k, v in rows[0].items() if k not in ("id", "model")} == api_answer

    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("text\nipo priced\n"))
    assert main(["classify", "--file", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["topic"] == "IPO"


def test_classify_input_errors_are_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("tweet,label\nx,1\n")
    assert main(["classify", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fintweet classify: error: {bad}: no 'text' column in the header "
                   "(tweet, label); give a CSV whose header names a 'text' column"]
    twice = tmp_path / "twice.csv"  # the last 'text' column was classified, silently
    twice.write_text("text,text\na,b\n")
    assert main(["classify", "--file", str(twice)]) == 2
    assert "the header names 'text' more than once" in capsys.readouterr().err
    header_only = tmp_path / "header.csv"  # printed nothing and exited 0
    header_only.write_text("id,text\n")
    assert main(["classify", "--file", str(header_only)]) == 2
    assert capsys.readouterr().err.strip() == (f"fintweet classify: error: {header_only}: a "
                                               "header and no data rows; give at least one row "
                                               "of text")
    assert main(["classify"]) == 2
    assert capsys.readouterr().err.strip() == (
        "fintweet classify: error: nothing to classify: give texts, or --file CSV (- for stdin)")
    assert main(["classify", "a text", "--file", str(bad)]) == 2
    assert "give texts to classify, or --file CSV (- for stdin), not both" in (
        capsys.readouterr().err)
    assert main(["classify", "--file", str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err


def test_serve_on_a_taken_port_says_so_in_one_line_before_loading_a_model(
        stack, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # no model there either: the port is what it reports, so it was checked first
        result = cli(stack, "serve", "--port", str(port), "--models", str(tmp_path / "none"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fintweet serve: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another --port / FINTWEET_WEB_PORT, or --host / FINTWEET_WEB_HOST"]


def test_serve_without_a_model_is_a_one_line_error(stack, tmp_path: Path) -> None:
    result = cli(stack, "serve", "--port", "0", "--models", str(tmp_path / "none"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fintweet serve: error: ")
    assert str(tmp_path / "none") in lines[0]


def test_serve_on_a_host_that_does_not_resolve_names_the_resolver_error(
        tmp_path: Path, capsys) -> None:
    """The resolver's words ("Name or service not known"), not "Unknown error -2" (its code
    read as an errno)."""
    host = "no.such.host.invalid"
    try:
        socket.getaddrinfo(host, 0, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        expected = exc.strerror
    else:
        pytest.skip(f"this machine's resolver answers for {host}")
    assert main(["serve", "--host", host, "--port", "0",
                 "--models", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fintweet serve: error: cannot listen on {host}:0 ({expected}); pick another --port / "
        "FINTWEET_WEB_PORT, or --host / FINTWEET_WEB_HOST"]


def test_the_server_thread_serves_on_a_socket_bound_beforehand(stack) -> None:
    """What `demo --serve` does: the port is bound before the demo, served after it."""
    import httpx
    import redis

    from fintweet.core.reader import ResultReader
    from fintweet.core.store import ResultStore
    from fintweet.web.app import create_app
    from fintweet.web.server import ServerThread, listen

    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    app = create_app(ResultReader(client), ResultStore(client), RuleModel())
    with listen("127.0.0.1", 0) as sock, ServerThread(app, sock=sock) as running:
        assert running.port == sock.getsockname()[1]
        assert httpx.get(f"{running.url}/healthz", timeout=10).json() == {"status": "ok"}


def test_classify_bad_csv_and_bad_utf8_are_one_line_naming_file_and_line(
        monkeypatch, tmp_path: Path, capsys) -> None:
    """A field past the csv module's 131,072-character limit, and bytes that are not UTF-8 on
    stdin as in a file: exit 2 and one line, before any model is loaded (none is there)."""
    import io

    models = ["--models", str(tmp_path / "none")]
    huge = tmp_path / "huge.csv"
    huge.write_text('id,text\na,"short"\nb,"two\nlines"\nc,"' + "x" * 140_000 + '"\n')
    assert main(["classify", "--file", str(huge), *models]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fintweet classify: error: {huge}: line 5: not valid CSV (field larger than field "
        "limit (131072)); check the quoting from there"]

    latin1 = "text\nok\ncaf\u00e9 ouvert\n".encode("latin-1")
    (tmp_path / "latin1.csv").write_bytes(latin1)
    assert main(["classify", "--file", str(tmp_path / "latin1.csv"), *models]) == 2
    from_file = capsys.readouterr().err.strip().splitlines()
    assert from_file == [f"fintweet classify: error: {tmp_path / 'latin1.csv'}: line 3: bytes "
                         "are not valid UTF-8 (invalid continuation byte at byte 11); save it "
                         "as UTF-8"]
    # stdin as the shell gives it: bytes under a text layer that would fail (or, in the C
    # locale, smuggle them through as surrogates) at read()
    stdin = io.TextIOWrapper(io.BytesIO(latin1), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["classify", "--file", "-", *models]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        from_file[0].replace(str(tmp_path / "latin1.csv"), "stdin")]


def test_classify_reads_a_spreadsheet_byte_order_mark_and_crlf(
        monkeypatch, tmp_path: Path, capsys) -> None:
    import fintweet.web.classify as classify_module

    monkeypatch.setattr(classify_module, "load_classifier", lambda *_a, **_k: RuleModel())
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes('\ufeffid,text\r\na1,"gold\r\nrally"\r\n'.encode())
    assert main(["classify", "--file", str(csv_file), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["id"] == "a1" and row["topic"] == "Gold | Metals | Materials"


@pytest.mark.parametrize(("content", "message"), [
    # the quote left open swallowed the rows after it into one text, classified and exit 0
    ('text\n"$AAPL up\n$TSLA down\nFed hikes\n',
     "line 2: not valid CSV (unexpected end of data); check the quoting from there"),
    ("text\nrates up, oil down\n",
     "row 1 (line 2): 2 fields where the header has 1; quote a text that holds a comma"),
    ('text\nfine\n"  "\n',
     "row 2 (line 3): text is blank (once HTML entities are decoded); fix or remove that row"),
    ("text\nbad\x00text\n",
     "row 1 (line 2): text contains a NUL character; fix or remove that row"),
], ids=["open-quote", "unquoted-comma", "blank", "nul"])
def test_classify_refuses_a_file_row_it_would_misread_or_the_worker_refuses(
        tmp_path: Path, capsys, content, message) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    assert main(["classify", "--file", str(bad), "--models", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fintweet classify: error: {bad}: {message}"]


def test_classify_refuses_a_blank_text_as_the_worker_does(tmp_path: Path, capsys) -> None:
    assert main(["classify", "gold rally", "", "--models", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fintweet classify: error: text 2: text is blank (once HTML entities are decoded); fix "
        "or leave out that text"]


def test_classify_takes_a_spreadsheet_s_empty_trailing_cells(
        monkeypatch, tmp_path: Path, capsys) -> None:
    """An export with a trailing comma on each row is no text cut at a comma."""
    import fintweet.web.classify as classify_module

    monkeypatch.setattr(classify_module, "load_classifier", lambda *_a, **_k: RuleModel())
    csv_file = tmp_path / "export.csv"
    csv_file.write_text("text\ngold rally,\noil falls,,\n")
    assert main(["classify", "--file", str(csv_file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == ["gold rally", "oil falls"]


def test_output_into_a_pipe_whose_reader_left_ends_quietly(stack, redis_client) -> None:
    """`fintweet tail | head -1` showed a BrokenPipeError traceback."""
    import fcntl

    seed(redis_client, [make_result(f"p{i}", f"$SPY tweet {i} " + "x" * 200, EARNINGS, BULLISH)
                        for i in range(500)])
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url}
    for args in (["tail", "-n", "500"], ["tail", "-n", "500", "--json"]):
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # far less than the output: it blocks
        process = subprocess.Popen([sys.executable, "-m", "fintweet.cli.main", *args], env=env,
                                   stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as output:
            assert output.readline().startswith(b"p499" if args[-1] != "--json" else b"{")
        # the reader has left, as head does after its line
        assert process.wait(timeout=60) == 128 + signal.SIGPIPE
        assert process.stderr is not None and process.stderr.read() == b"", args


def test_tail_follow_waits_out_a_redis_restart_and_misses_nothing(stack, seeded) -> None:
    """It exited 2 ("cannot reach Redis") on a restart that `fintweet up` finished a second
    later."""
    env = {**os.environ, "FINTWEET_REDIS_URL": stack.redis_url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "tail", "-n", "1", "--follow"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    errors: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    threading.Thread(target=lambda: [errors.put(line) for line in process.stderr],
                     daemon=True).start()
    try:
        assert lines.get(timeout=60).startswith("t3 ")
        stack.stop_redis()
        try:
            assert "Redis is unreachable" in errors.get(timeout=30)
            assert process.poll() is None  # still following
        finally:
            stack.start_redis()
        seed(seeded, [make_result("r1", "$AAPL after the restart", EARNINGS, BULLISH)])
        assert lines.get(timeout=60).startswith("r1 ")
        assert "Redis is back after" in errors.get(timeout=10)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_model_given_with_a_slash_is_read_from_the_working_directory(
        monkeypatch, tmp_path: Path, capsys) -> None:
    """`--model ./copies/ann` was looked for under the models folder (models/./copies/ann)."""
    import fintweet.models

    read: list[Path] = []

    def load(path, transformer_runtime=None):
        read.append(Path(path))
        return RuleModel()

    monkeypatch.setattr(fintweet.models, "load", load)
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "--models", "elsewhere", "--model", "./copies/ann", "Fed"]) == 0
    assert main(["classify", "--models", "elsewhere", "--model", "ann", "Fed"]) == 0
    assert read == [Path("copies/ann"), Path("elsewhere/ann")]
    capsys.readouterr()
