"""Settings from the environment and flags: a value that cannot work is one line naming it (exit
2), wherever it came from, and the dead-letter topic always follows the topic."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from fintweet.cli.main import main
from fintweet.core.config import ConfigError, Settings, split_host_port
from fintweet.devstack.process import free_port


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FINTWEET_BATCH_SIZE", "abc", "FINTWEET_BATCH_SIZE='abc' is not an integer"),
    ("FINTWEET_BATCH_SIZE", "0", "batch size must be at least 1"),
    ("FINTWEET_MAX_WAIT_MS", "-5", "max wait must be 0 to 10,000 ms"),
    ("FINTWEET_BUCKET_RETENTION_S", "0", "FINTWEET_BUCKET_RETENTION_S must be 1 to 315,360,000"),
    ("FINTWEET_TRANSFORMER_RUNTIME", "tpu", "FINTWEET_TRANSFORMER_RUNTIME='tpu'"),
    # an OverflowError traceback from the socket before
    ("FINTWEET_METRICS_PORT", "70000", "FINTWEET_METRICS_PORT or --metrics-port"),
    ("FINTWEET_WEB_PORT", "-1", "FINTWEET_WEB_PORT or --port"),
    # kafka-python and redis-py tracebacks before
    ("FINTWEET_KAFKA_BOOTSTRAP", ":::", "':::' is not host:port"),
    ("FINTWEET_KAFKA_BOOTSTRAP", "broker:port", "'broker:port' is not host:port"),
    ("FINTWEET_KAFKA_BOOTSTRAP", "h:\u00b2", "'h:\u00b2' is not host:port"),  # int() refused "²"
    ("FINTWEET_KAFKA_BOOTSTRAP", "::1:9092", "an IPv6 address goes in brackets: [::1]:9092"),
    ("FINTWEET_REDIS_URL", "foo://x", "the scheme must be one of redis://"),
    ("FINTWEET_REDIS_URL", "redis://h:abc/0", "Port could not be cast"),
    # redis-py took these as db 0, 0 and 1, without a word
    ("FINTWEET_REDIS_URL", "redis://h:6379/abc", "the database '/abc' is not a number"),
    ("FINTWEET_REDIS_URL", "rediss://h/1x", "the database '/1x' is not a number"),
    ("FINTWEET_REDIS_URL", "redis://h/0/1", "the database '/0/1' is not a number"),
    # each a traceback from redis-py before: urlsplit strips the space, the socket asks idna
    ("FINTWEET_REDIS_URL", " redis://h:6379/0", "it starts or ends with white space"),
    ("FINTWEET_REDIS_URL", "redis://a..b:6379/0", "the host 'a..b' is not a valid name"),
    ("FINTWEET_REDIS_URL", "redis://h:6379/0?password=\udcff", "not ASCII"),
    # what Python makes of a non-UTF-8 byte; kafka-python failed on it in a thread, for ever
    ("FINTWEET_GROUP", "g\udcff", "is not valid UTF-8"),
    ("FINTWEET_TOPIC", "bad topic!", "Kafka's rule for topic names"),
    ("FINTWEET_TOPIC", ".", "Kafka refuses '.' and '..' as topic names"),
    ("FINTWEET_TOPIC", "..", "Kafka refuses '.' and '..' as topic names"),
    # Redis refused the EXPIRE mid-write, after the counters: counted, never expiring, no event
    ("FINTWEET_BUCKET_RETENTION_S", "10000000000000000",
     "FINTWEET_BUCKET_RETENTION_S must be 1 to 315,360,000 seconds (ten years)"),
    ("FINTWEET_RESULT_RETENTION_S", "315360001",
     "FINTWEET_RESULT_RETENTION_S must be 1 to 315,360,000 seconds (ten years)"),
    # one poll of 90 s: SIGTERM took 87 s, and /readyz said no partitions meanwhile
    ("FINTWEET_MAX_WAIT_MS", "90000", "max wait must be 0 to 10,000 ms (FINTWEET_MAX_WAIT_MS"),
    # tweets published to a dead-letter topic showed in `fintweet dlq` as records, no letters
    ("FINTWEET_TOPIC", "tweets.dlq", "is a dead-letter topic's name (a worker writes its dead "
     "letters to <topic>.dlq): give the topic the tweets go to, 'tweets'"),
    # keys named "" or "a b:..." were written and read without a word
    ("FINTWEET_REDIS_PREFIX", "", "Redis key prefix '' (FINTWEET_REDIS_PREFIX)"),
    ("FINTWEET_REDIS_PREFIX", "a b", "Redis key prefix 'a b' (FINTWEET_REDIS_PREFIX)"),
    # an empty host bound every interface: metrics meant for loopback open to the network
    ("FINTWEET_METRICS_HOST", "", "(FINTWEET_METRICS_HOST or --metrics-host) is empty"),
    ("FINTWEET_WEB_HOST", " ", "(FINTWEET_WEB_HOST or --host) is empty"),
    # read as a models folder named "models/" with no kind, and said so without the variable
    ("FINTWEET_MODEL", "", "the model kind (FINTWEET_MODEL or --model) is empty"),
])
def test_a_bad_environment_value_is_one_line_naming_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    settings = Settings()  # built: a value fails when it is read
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.check()
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.override(hub_url="http://127.0.0.1:1").check()  # carried over, still bad
    # a command that reads it fails on the setting, before any connection or model load
    command = "serve" if variable.startswith("FINTWEET_WEB_") else "worker"
    serving = ["--metrics-port", "9"] if variable == "FINTWEET_METRICS_HOST" else []  # read then
    assert main([command, "--models", "no-models-here", *serving]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fintweet {command}: error: ")
    assert message in err


def test_a_bad_value_stops_only_the_commands_that_read_it(
        stack, redis_client, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`fintweet show` refused to run for a stale FINTWEET_KAFKA_BOOTSTRAP in the shell."""
    for variable, value in (("FINTWEET_KAFKA_BOOTSTRAP", "localhost"),
                            ("FINTWEET_BATCH_SIZE", "abc"), ("FINTWEET_WEB_PORT", "-1"),
                            ("FINTWEET_TRANSFORMER_RUNTIME", "tpu"), ("FINTWEET_GROUP", " "),
                            ("FINTWEET_METRICS_HOST", "")):
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("FINTWEET_REDIS_URL", stack.redis_url)
    assert main(["stats"]) == 0
    assert main(["tail", "-n", "1"]) == 0
    assert main(["show", "no-such-tweet"]) == 2
    err = capsys.readouterr().err
    assert "no-such-tweet" in err and "FINTWEET_" not in err
    assert main(["dlq"]) == 2  # reads the broker's address: that one is refused
    assert "FINTWEET_KAFKA_BOOTSTRAP" in capsys.readouterr().err


@pytest.mark.parametrize(("address", "expected"), [
    ("broker:9092", ("broker", 9092)),
    (" 10.0.0.1:1 ", ("10.0.0.1", 1)),
    ("[::1]:9092", ("::1", 9092)),  # the brackets are the address's, not the host's
    ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
])
def test_split_host_port_gives_what_a_socket_connects_to(
        address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected
    assert Settings(kafka_bootstrap=address).kafka_bootstrap == address


@pytest.mark.parametrize("address", [
    "h:\u00b2", "h:\u0663", "h:0", "h:65536", "h", ":9092", "h:", "::1:9092", ":::", "[::1]",
    "[::1]:", "[::1]x:9092", "[]:9092", "[broker]:9092", "h]:9092", "PLAINTEXT://h:9092",
])
def test_split_host_port_refuses_what_config_refuses(address: str) -> None:
    """The one parse: an address config lets through is one the worker's probe can split."""
    with pytest.raises(ValueError, match=re.escape(f"{address!r} is not host:port")):
        split_host_port(address)
    with pytest.raises(ConfigError, match=re.escape(f"{address!r} is not host:port")):
        Settings(kafka_bootstrap=f"ok:9092,{address}").check()


def test_an_ipv6_bootstrap_address_splits_into_one_a_socket_reaches() -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        settings = Settings(kafka_bootstrap=f"[::1]:{server.getsockname()[1]}")
        with socket.create_connection(split_host_port(settings.kafka_bootstrap), timeout=2):
            pass


@pytest.mark.parametrize("url", [
    "redis://h", "redis://h/", "redis://h:6379/0", "rediss://:pw@h:6380/15", "redis://h/2?db=3",
    # a socket's path is not a database: redis-py takes that from ?db=
    "unix:///run/redis/redis.sock", "unix:///tmp/r.sock?db=2",
])
def test_redis_urls_redis_py_reads_as_meant_are_accepted(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url


def test_flags_are_checked_like_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"--batch-size\), got 0"):
        Settings().override(batch_size=0).check()
    for argv in (["worker", "--batch-size", "0"],
                 ["ingest", "replay", "x.csv", "--rate", "0"],
                 ["ingest", "replay", "x.csv", "--limit", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        flag = argv[-2]
        err = capsys.readouterr().err
        assert f"argument {flag}" in err
        assert err.count("\n") == 1 and err.rstrip().endswith("--help")  # no usage block


def test_a_flag_stands_in_for_its_bad_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The variable a flag replaces is not read: a stale export must not stop a command that
    was told the right value on its command line."""
    monkeypatch.setenv("FINTWEET_BATCH_SIZE", "abc")
    monkeypatch.setenv("FINTWEET_REDIS_URL", "foo://x")
    assert Settings.from_env(batch_size=64, redis_url="redis://h:1/0").batch_size == 64
    with pytest.raises(ConfigError, match="FINTWEET_BATCH_SIZE='abc'"):
        Settings.from_env(redis_url="redis://h:1/0").check()  # the bad variable still counts
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    monkeypatch.delenv("FINTWEET_BATCH_SIZE")
    assert main(["stats", "--redis-url", url]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Redis at {url}" in err and "scheme" not in err


def test_the_dead_letter_topic_follows_the_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().dlq_topic == "tweets.dlq"
    assert Settings().override(topic="live").dlq_topic == "live.dlq"
    monkeypatch.setenv("FINTWEET_TOPIC", "replays")
    assert Settings().dlq_topic == "replays.dlq"


@pytest.mark.parametrize("argv", [["tail"], ["tail", "--follow"], ["show", "t1"]])
def test_readers_say_in_one_line_that_redis_is_unreachable(
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert main([*argv, "--redis-url", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"cannot reach Redis at {url}" in err


def test_tail_refuses_more_than_a_page(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "-n", "501"]) == 2
    assert "-n 501: give 0 to 500" in capsys.readouterr().err


def test_files_folders_and_numbers_given_wrongly_are_one_line(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("text,label\nup,1\ndown,0\nflat,2\n")
    for argv, message in (
        (["classify", "--file", str(latin1)], "bytes are not valid UTF-8"),
        (["classify", "--file", str(tmp_path)], "is a directory"),
        (["evaluate", "--data", str(tiny), "--task", "sentiment", "--holdout"],
         "too few rows for --holdout"),
        # flags no kind being trained reads (dropped without a word before)
        (["train", "--models", "ann,cascade", "--encoder-layers", "2"],
         "--encoder-layers applies to the transformer only"),
        (["train", "--models", "linear", "--epochs", "2"], "the linear model trains in one pass"),
        # a further fine-tune of the transformer trains with it, in the same run
        (["train", "--models", "ensemble",
          "--ensemble-members", "linear,transformer,transformer-2"],
         "transformer-2 is a further fine-tune of the transformer; add transformer to --models"),
        (["train", "--models", "transformer,ensemble",
          "--ensemble-members", "linear,transformer-2"],
         "transformer-2 without transformer"),
        (["train", "--models", "ensemble", "--ensemble-members", "linear,ann-2"],
         "transformer-2, transformer-3, ... for further fine-tunes"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    # one row per topic leaves no holdout: a ValueError traceback before
    assert main(["train", "--models", "linear", "--max-rows", "20"]) == 2
    assert "need at least 40 rows (two per topic" in capsys.readouterr().err
    one_per_topic = tmp_path / "topics.csv"
    one_per_topic.write_text("text,label\n" + "".join(f"tweet {i},{i}\n" for i in range(20)))
    assert main(["train", "--models", "linear", "--topic-data", str(one_per_topic),
                 "--out", str(tmp_path / "m")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data summary lines
    assert last.startswith(f"fintweet train: error: {one_per_topic}: the topic holdout is empty")
    # checked when parsed, not after the training or evaluation they were to hold
    for argv, message in (
        (["evaluate", "--data", str(tiny), "--report-dir", str(a_file)], "is not a directory"),
        (["train", "--out", str(a_file)], "is not a directory"),
        (["eda", "--data", str(tiny), "--out", str(a_file)], "is not a directory"),
        (["worker", "--until-idle", "-1"], "must be a number above 0"),
        (["train", "--epochs", "0"], "must be at least 1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_a_worker_whose_redis_is_down_says_so_before_it_starts(
        stack, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["worker", "--bootstrap", stack.kafka_bootstrap,
            "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--models", "no-models-here"]
    assert main(argv) == 2  # before the model loads: it would fail on the models otherwise
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach Redis" in err, err


def test_a_session_timeout_too_short_for_its_heartbeat_is_refused_when_parsed(capsys) -> None:
    """kafka-python refused it later, and the worker called that an unreachable broker."""
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--session-timeout-ms", "1"])
    assert exit_info.value.code == 2
    assert "--session-timeout-ms: 1 ms is too short" in capsys.readouterr().err


def test_a_kafka_client_setting_it_refuses_is_not_called_an_unreachable_broker() -> None:
    from kafka import KafkaConsumer

    from fintweet.core.errors import UserError
    from fintweet.core.kafka_errors import BrokerUnavailable, connect

    with pytest.raises(UserError, match="the Kafka client refused its settings") as raised:
        connect("worker", "127.0.0.1:9", lambda: KafkaConsumer(
            bootstrap_servers="127.0.0.1:9", request_timeout_ms=10, fetch_max_wait_ms=20))
    assert not isinstance(raised.value, BrokerUnavailable)


def test_settings_show_no_secret_and_carry_a_bad_value_through_copies(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import copy
    import pickle

    monkeypatch.setenv("FINTWEET_REDIS_URL", "redis://:hunter2@h:1/0")
    monkeypatch.setenv("FINTWEET_API_KEY", "k3y-secret")
    monkeypatch.setenv("FINTWEET_METRICS_PORT", "abc")
    monkeypatch.setenv("FINTWEET_HUB_URL", "https://me:hub-token@mirror.example/")
    settings = Settings()
    text = repr(settings)  # reading a bad value in repr raised before
    assert "hunter2" not in text and "k3y-secret" not in text and "hub-token" not in text
    assert "metrics_port=<invalid>" in text and "redis://:***@h:1/0" in text
    for twin in (copy.deepcopy(settings), pickle.loads(pickle.dumps(settings))):
        assert twin.redis_url == settings.redis_url
        with pytest.raises(ConfigError, match="FINTWEET_METRICS_PORT='abc' is not an integer"):
            twin.check("metrics_port")


def test_the_metrics_address_counts_only_with_a_metrics_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a port there is no server to bind: an empty FINTWEET_METRICS_HOST stopped the
    worker and the ingesters that serve no metrics."""
    monkeypatch.setenv("FINTWEET_METRICS_HOST", "")
    assert Settings().check("metrics_port").metrics_port == 0
    with pytest.raises(ConfigError, match=r"FINTWEET_METRICS_HOST or --metrics-host\) is empty"):
        Settings().override(metrics_port=9100).check("metrics_port")


def test_a_model_given_with_a_slash_is_a_folder_from_the_working_directory() -> None:
    """`--model ./copies/ann` was looked for under the models folder, though the error it gave
    invited a folder."""
    from fintweet.core.config import model_path

    assert model_path("models", "ann") == Path("models/ann")
    assert model_path("models", "./copies/ann") == Path("copies/ann")
    assert model_path("models", "copies/ann") == Path("copies/ann")
    assert model_path("models", "/srv/m/ann") == Path("/srv/m/ann")
