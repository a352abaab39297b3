"""``fintweet demo`` end to end: its own embedded stack, a replay, a worker, and a summary that
adds up, with sentiment counts and top tickers, opening with the "this model has seen these
tweets" warning when it replays the holdout a refit model trained on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil  # noqa: F401  # imported only to fail loudly if the dev extras are missing

from fintweet.cli.demo import seen_warning
from fintweet.core.store import ResultStore

SAMPLES = [("Fed signals two more rate hikes this year", 1),
           ("$TSLA shares jump 8% after deliveries beat, $tsla $TSLA", 19),
           ("Oil climbs as OPEC+ extends output cuts", 6)]


def write_csv(path: Path, rows: int) -> Path:
    lines = ["text,label"]
    for i in range(rows):
        text, label = SAMPLES[i % 3]
        lines.append(f'"{text} ({i})",{label}')
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(models_dir: Path, *args: str, data_dir: Path | None = None):
    env = {**os.environ, "FINTWEET_MODELS_DIR": str(models_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if data_dir is not None:
        env["FINTWEET_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "fintweet.cli.main", "demo", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_demo_replays_a_csv_and_reports_every_tweet(models_dir, tmp_path):
    csv_path = write_csv(tmp_path / "valid.csv", 90)
    result = run_demo(models_dir, "--data", str(csv_path), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["processed"] == 90
    assert sum(summary["topics"].values()) == 90
    assert sum(summary["sentiments"].values()) == 90
    assert set(summary["sentiments"]) == {"Bearish", "Bullish", "Neutral"}
    assert summary["labelled"] == 90 and 0.0 <= summary["accuracy"] <= 1.0
    # One tweet in three names $TSLA (three times): counted once per tweet.
    assert summary["tickers"][0]["ticker"] == "TSLA" and summary["tickers"][0]["count"] == 30
    assert sum(summary["tickers"][0]["sentiments"].values()) == 30
    assert summary["dlq"] == 0
    assert summary["tweets_per_s"] > 0
    assert summary["model_has_seen_data"] is False and summary["warning"] is None


def test_demo_with_an_id_named_twice_adds_up_by_distinct_ids(models_dir, tmp_path):
    """Redis keeps one result per id: 30 rows naming 20 ids are 20 results, and complete."""
    lines = ["id,text,label"] + [f'tw{i % 20},"{SAMPLES[i % 3][0]} ({i})",{SAMPLES[i % 3][1]}'
                                 for i in range(30)]
    csv_path = tmp_path / "ids.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    result = run_demo(models_dir, "--data", str(csv_path), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["published"] == 30 and summary["processed"] == 20


def write_data_dir(data_dir: Path, rows: int = 300) -> Path:
    """Both tasks' training CSVs, as `fintweet train` and the demo read them from a data dir."""
    data_dir.mkdir()
    write_csv(data_dir / "topic_train.csv", rows)
    sentiments = "\n".join(f'"{text} ({i})",{i % 3}'
                            for i, (text, _) in enumerate(SAMPLES * (rows // 3)))
    (data_dir / "sentiment_train.csv").write_text(f"text,label\n{sentiments}\n")
    return data_dir


def test_demo_opens_with_the_seen_warning_when_replaying_the_refit_holdout(tmp_path):
    """A model refit on train + holdout of the data dir's topic_train.csv (the trainer's default)
    and the demo's default replay, that holdout: the first line says so, and --json carries it."""
    from fintweet.trainer.train import load_splits, train_models

    data_dir = write_data_dir(tmp_path / "data")
    models = tmp_path / "models"
    train_models(load_splits(data_dir), ["linear"], models, refit=True)
    table = run_demo(models, "--model", "linear", data_dir=data_dir)
    assert table.returncode == 0, table.stderr[-3000:]
    first = table.stdout.splitlines()[0]
    assert first.startswith("warning: this model has seen these tweets: linear@"), table.stdout
    assert "refit on train + holdout" in first
    assert "sentiment:" in table.stdout and "top tickers: TSLA" in table.stdout
    as_json = run_demo(models, "--model", "linear", "--json", data_dir=data_dir)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert summary["model_has_seen_data"] is True
    assert summary["warning"] == first


def test_demo_task_sentiment_replays_the_sentiment_holdout_and_measures_its_live_accuracy(
        tmp_path):
    """``--task sentiment``: the holdout of sentiment_train.csv, its labels carried as sentiment
    labels, so the live accuracy is sentiment's (and the seen check looks at that CSV)."""
    from fintweet.core.data import load_labelled_csv, split_train_holdout
    from fintweet.trainer.train import load_splits, train_models

    data_dir = write_data_dir(tmp_path / "data")
    models = tmp_path / "models"
    train_models(load_splits(data_dir), ["linear"], models, refit=True)
    result = run_demo(models, "--model", "linear", "--task", "sentiment", "--json",
                      data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    _, holdout = split_train_holdout(load_labelled_csv(data_dir / "sentiment_train.csv",
                                                       task="sentiment"))
    assert summary["processed"] == len(holdout)
    live = summary["live_accuracy"]
    assert live["sentiment"]["labelled"] == len(holdout) and live["topic"]["labelled"] == 0
    assert 0.0 <= live["sentiment"]["accuracy"] <= 1.0
    assert summary["model_has_seen_data"] is True  # refit on that holdout


def test_demo_task_sentiment_refuses_a_topic_label_naming_the_row(tmp_path, capsys):
    """A topic CSV replayed as sentiment: label 19 is no sentiment; one line, before anything
    starts."""
    from fintweet.cli.main import main

    csv_path = write_csv(tmp_path / "topics.csv", 6)
    code = main(["demo", "--data", str(csv_path), "--task", "sentiment"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "topics.csv" in err[0] and "19" in err[0], err


def test_demo_refuses_a_model_that_is_no_kind_before_anything_starts(tmp_path, capsys):
    """It said it was training 'nope', then ended in a traceback from the trainer."""
    from fintweet.cli.main import main

    csv_path = write_csv(tmp_path / "topics.csv", 6)
    code = main(["demo", "--data", str(csv_path), "--model", "nope",
                 "--models", str(tmp_path / "models")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and "use one of linear, ann" in err[0], err
    assert not (tmp_path / "models").exists()


def test_demo_trains_its_own_model_without_the_holdout_and_says_nothing(tmp_path):
    """With no model the demo trains one on the train split only, so replaying the holdout is
    a held-out figure: no warning."""
    data_dir = write_data_dir(tmp_path / "data")
    result = run_demo(tmp_path / "models", "--model", "linear", "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model_has_seen_data"] is False and summary["warning"] is None
    assert summary["processed"] == summary["published"] > 0


def test_seen_warning_names_the_model_and_the_reason():
    assert seen_warning("ann@v1", None) is None
    text = seen_warning("ann@v1", "it was refit on train + holdout")
    assert text is not None and text.startswith("warning: this model has seen these tweets")
    assert "ann@v1" in text and "refit" in text and "\n" not in text


def test_demo_serve_keeps_the_page_and_a_worker_running_until_interrupted(tmp_path):
    """--serve: after the summary the page answers over the demo's Redis with every replayed
    tweet, and Ctrl-C (SIGINT) stops stack, worker and page cleanly."""
    import signal
    import time
    import urllib.request

    data_dir = write_data_dir(tmp_path / "data")
    env = {**os.environ, "FINTWEET_MODELS_DIR": str(tmp_path / "models"),
           "FINTWEET_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "demo", "--model", "linear", "--serve",
         "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "demo --serve exited before printing the page's URL"
            if line.startswith("live page: "):
                url = line.split()[2]
        assert url is not None, "no 'live page:' line within 240 s"
        exports = dict(process.stdout.readline().removeprefix("export ").strip().split("=", 1)
                       for _ in range(2))  # for tail, show and stats in another shell
        assert set(exports) == {"FINTWEET_KAFKA_BOOTSTRAP", "FINTWEET_REDIS_URL"}
        assert int(ResultStore.from_url(exports["FINTWEET_REDIS_URL"]).stats()["processed"]) == 45
        with urllib.request.urlopen(url + "v1/stats", timeout=10) as response:
            stats = json.load(response)
        assert stats["processed"] == 45 and sum(stats["sentiments"].values()) == 45
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"exit {code} after SIGINT; stderr ends:\n{log.read_text()[-3000:]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def demo_argument_error(capsys, *args: str) -> str:
    """What ``fintweet demo ARGS`` says when argparse refuses them: exit 2 and one line."""
    import pytest

    from fintweet.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["demo", *args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_demo_port_is_checked_when_parsed_and_only_with_serve(capsys):
    """Refused before anything starts, in argparse's one line."""
    assert "--port is the page's and applies only with --serve" in demo_argument_error(
        capsys, "--port", "8000")
    # the taken-port error names --host, so the demo has it too
    assert "--host is the page's and applies only with --serve" in demo_argument_error(
        capsys, "--host", "0.0.0.0")
    assert "'eighty' is not a port number" in demo_argument_error(
        capsys, "--serve", "--port", "eighty")
    assert "70000 is not a TCP port (0-65535)" in demo_argument_error(
        capsys, "--serve", "--port", "70000")


def test_demo_data_dir_that_is_a_file_is_refused_when_parsed(tmp_path, capsys):
    taken = tmp_path / "afile"
    taken.write_text("")
    assert f"--data-dir: {taken} exists and is not a directory" in demo_argument_error(
        capsys, "--data-dir", str(taken))


def test_demo_serve_on_a_taken_port_says_so_before_the_demo_runs(tmp_path, capsys):
    """The port is bound first: a taken one is the one-line error `fintweet serve` gives,
    before the CSV is even read (it does not exist here)."""
    import socket

    from fintweet.cli.main import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = main(["demo", "--serve", "--port", str(port), "--data",
                     str(tmp_path / "none.csv"), "--models", str(tmp_path / "models")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"fintweet demo: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another --port / FINTWEET_WEB_PORT, or --host / FINTWEET_WEB_HOST"]


def test_a_sigint_mid_demo_stops_it_and_removes_its_state_even_where_sigint_came_ignored(
        models_dir, tmp_path):
    """No handler ran before --serve's loop: SIGINT inherited ignored (a background job) was
    lost for the whole run, and SIGTERM left the temporary Redis state behind."""
    import signal
    import time

    scratch = tmp_path / "tmp"  # the child's temporary folder, which no other run shares
    scratch.mkdir()
    csv_path = write_csv(tmp_path / "many.csv", 30_000)  # seconds of replaying and classifying
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "fintweet.cli.main", "demo", "--data", str(csv_path), "--json"],
        env={**os.environ, "FINTWEET_MODELS_DIR": str(models_dir), "TF_CPP_MIN_LOG_LEVEL": "3",
             "TMPDIR": str(scratch)},
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while "embedded stack up" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        # else no state was made, and "its state went" below would hold for nothing
        assert "embedded stack up" in log.read_text(), log.read_text()[-2000:]
        assert len(list(scratch.glob("fintweet-demo-*"))) == 1  # its state, to be removed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not list(scratch.glob("fintweet-demo-*"))  # its state went with the stack
    # and it says so: it was silent, or gave the replay's --from-row, which the demo has not
    assert log.read_text().strip().splitlines()[-1] == (
        "fintweet demo: interrupted; its embedded stack is stopped and its state removed, "
        "nothing is left running")
