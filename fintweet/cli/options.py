"""The command-line options several commands share, declared once: each overrides the
:class:`fintweet.core.config.Settings` field of the same name (``dest``), and ``None`` (not
given) leaves the environment's value or the default standing.

A command adds the groups it needs; the names, ``dest``s and help texts stay the same across
commands, so ``--bootstrap`` means the same thing to ``ingest`` and ``worker``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def positive_int(value: str) -> int:
    """An argparse ``type`` for counts that must be at least 1 (partitions, top N, batch sizes):
    argparse reports the error in one line (``cli.main.Parser``)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def port(value: str) -> int:
    """An argparse ``type`` for a TCP port, 0 (pick a free one) to 65535: a bad one is refused
    when the flag is parsed, in one line, not when the server binds after the command's work."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a TCP port (0-65535)")
    return number


def directory(value: str) -> Path:
    """An argparse ``type`` for a folder read or written (created if absent): a file of that
    name is refused when the flag is parsed, not after the work that was to go there."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} exists and is not a directory")
    return path


def writable_folder(path: Path, flag: str) -> Path:
    """Make the folder a command will write its results to, and check it takes a file, before
    the work: a bad one was found only after minutes of scoring, whose results were lost."""
    import tempfile

    from fintweet.core.errors import UserError

    if path.exists() and not path.is_dir():  # mkdir says only "File exists"
        raise UserError(f"{flag} {path}: a file, not a folder; choose another folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or exc}); choose "
                        "another folder") from None
    return path


def http_url(value: str) -> str:
    """An argparse ``type`` for a base URL a client will call: one that can never connect would
    otherwise be retried for ever as if the server were down."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL with a host, e.g. "
                                         "http://127.0.0.1:8080")
    return value


def positive_float(value: str) -> float:
    """An argparse ``type`` for rates that must be above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} must be a number above 0")
    return number


def add_kafka_options(parser: Parser, topic_role: str = "topic to publish to") -> None:
    """``--bootstrap`` and ``--topic``; ``topic_role`` says what the command does with it."""
    parser.add_argument("--bootstrap", dest="kafka_bootstrap", default=None,
                        help="Kafka bootstrap servers (env FINTWEET_KAFKA_BOOTSTRAP, default "
                             "127.0.0.1:9092, where `fintweet up` listens)")
    parser.add_argument("--topic", default=None,
                        help=f"{topic_role} (env FINTWEET_TOPIC, default tweets)")


def add_redis_option(parser: Parser, role: str = "Redis URL") -> None:
    parser.add_argument("--redis-url", default=None,
                        help=f"{role} (env FINTWEET_REDIS_URL, default "
                             "redis://127.0.0.1:6379/0, where `fintweet up` listens); the keys "
                             "start with FINTWEET_REDIS_PREFIX (default fintweet)")


def add_metrics_options(parser: Parser, serves: str = "/metrics, /healthz, /readyz") -> None:
    """``--metrics-port`` and ``--metrics-host`` (loopback unless told otherwise)."""
    parser.add_argument("--metrics-port", type=int, default=None,
                        help=f"serve {serves} on this port "
                             "(env FINTWEET_METRICS_PORT; 0 or unset: no server)")
    parser.add_argument("--metrics-host", default=None,
                        help="address the metrics server binds (env FINTWEET_METRICS_HOST, "
                             "default 127.0.0.1; 0.0.0.0 to let a remote Prometheus scrape)")


def add_model_options(parser: Parser, model_help: str = "model kind; its 'current' version is "
                      "loaded (env FINTWEET_MODEL, default ann)",
                      models_help: str = "") -> None:
    """``--models`` (the directory) and ``--model`` (the kind served from it)."""
    add_models_dir_option(parser, models_help)
    parser.add_argument("--model", default=None,
                        help=f"{model_help}; or, with a /, a model folder elsewhere "
                             "(./copies/ann)")
    add_transformer_runtime_option(parser)


def add_models_dir_option(parser: Parser, extra_help: str = "",
                          default: object = None) -> None:
    """``--models``, the trained models directory (``fintweet train --out``'s)."""
    parser.add_argument("--models", dest="models_dir", default=default,
                        help="trained models directory (env FINTWEET_MODELS_DIR, default "
                             "./models)" + (f"; {extra_help}" if extra_help else ""))


def add_transformer_runtime_option(parser: Parser) -> None:
    from fintweet.core.config import TRANSFORMER_RUNTIMES

    parser.add_argument(
        "--transformer-runtime", choices=TRANSFORMER_RUNTIMES, default=None,
        help="serve a transformer (alone, in an ensemble or a cascade) with keras, onnx "
             "(ONNX Runtime, float32) or onnx-int8 (int8 weights, the fastest on a CPU); auto: "
             "keras on a GPU, onnx-int8 on a CPU (env FINTWEET_TRANSFORMER_RUNTIME, default: "
             "the artifact's, auto)")


def shared_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The Settings overrides the shared options carry, for ``Settings.from_env(**...)``;
    options a command did not declare are simply absent."""
    names = ("kafka_bootstrap", "topic", "redis_url", "metrics_port", "metrics_host", "model",
             "transformer_runtime")
    overrides: dict[str, object] = {name: getattr(args, name) for name in names
                                    if hasattr(args, name)}
    if hasattr(args, "models_dir"):
        overrides["models_dir"] = Path(args.models_dir) if args.models_dir else None
    return overrides
