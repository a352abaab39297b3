"""A real Prometheus server for tests: scrapes the given targets every second on a free loopback
port, keeps its TSDB in a temp dir, and is stopped (SIGTERM, then SIGKILL) afterwards.

Used by test_metrics.py (scraping a bare MetricsServer) and by the worker's tests (scraping a real
worker), so it lives here rather than in one test file. Typical use::

    from tests.prometheus_helper import running_prometheus

    with running_prometheus([f"127.0.0.1:{server.port}"], tmp_path) as prometheus:
        prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", 3)

The binary comes from PATH (``scripts/install-prometheus.sh`` puts it there) or from the
``PROMETHEUS_BIN`` environment variable. A missing binary is a test FAILURE with the fix in the
message, never a skip: these tests are the only check that what we export is scrapeable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fintweet.devstack.process import free_port

INSTALL_HINT = "run scripts/install-prometheus.sh (as root) or set PROMETHEUS_BIN"


def prometheus_binary(name: str = "prometheus") -> str:
    """Path of ``prometheus`` or ``promtool``; fails the calling test when neither is found."""
    override = os.environ.get(f"{name.upper()}_BIN")
    if override:
        if not os.access(override, os.X_OK):
            pytest.fail(f"{name.upper()}_BIN={override!r} is not an executable file")
        return override
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed or not on PATH; {INSTALL_HINT}", pytrace=False)
    return found


class PrometheusServer:
    """One Prometheus process and a tiny client for its HTTP API."""

    def __init__(
        self,
        targets: Sequence[str],
        work_dir: Path,
        scrape_interval: str = "1s",
        job: str = "fintweet",
        more_jobs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.work_dir = Path(work_dir)
        self.scrape_interval = scrape_interval
        self.job = job
        self.more_jobs = {name: list(more) for name, more in (more_jobs or {}).items()}
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """JSON is valid YAML, so the config needs no YAML library to write."""
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": name, "static_configs": [{"targets": targets}]}
                for name, targets in {self.job: self.targets, **self.more_jobs}.items()],
        }
        path = self.work_dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0, attempts: int = 3) -> PrometheusServer:
        binary = prometheus_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        for attempt in range(1, attempts + 1):
            # The port is free when chosen but could be taken before Prometheus binds it; retry.
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={self.work_dir / 'data'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready(timeout):
                return self
            self.stop()
            if attempt == attempts:
                raise RuntimeError(
                    f"prometheus did not become ready on {self.url} within {timeout}s; "
                    f"log tail:\n{self.log_tail()}")
        return self

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def api(self, path: str, **params: str) -> object:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus API {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, object]]:
        """Instant query; the result vector (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        assert isinstance(data, dict)
        return list(data["result"])

    def scalar(self, expr: str) -> float | None:
        """The value of a query that yields one series, or None while it yields none."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr!r} returned {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])  # type: ignore[index]

    def wait_for_value(self, expr: str, expected: float, timeout: float = 30.0) -> float:
        """Poll until ``expr`` equals ``expected``; on timeout fail with what it last saw and the
        state of the scrape targets, which is what explains a wrong number."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.scalar(expr)
            if last is not None and abs(last - expected) < 1e-9:
                return last
            time.sleep(0.25)
        raise AssertionError(
            f"{expr!r} was {last}, expected {expected} after {timeout}s; "
            f"targets: {json.dumps(self.targets_health())}\nprometheus log:\n{self.log_tail()}")

    def targets_health(self) -> list[dict[str, object]]:
        data = self.api("targets", state="active")
        assert isinstance(data, dict)
        return [
            {key: target.get(key) for key in ("scrapeUrl", "health", "lastError")}
            for target in data["activeTargets"]
        ]


@contextmanager
def running_prometheus(
    targets: Sequence[str], work_dir: Path, scrape_interval: str = "1s", job: str = "fintweet",
    more_jobs: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(targets, work_dir, scrape_interval=scrape_interval, job=job,
                              more_jobs=more_jobs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def metric_sample_names(registry: CollectorRegistry) -> Iterator[str]:
    """Every series name Prometheus will store for this registry (``_total``, ``_bucket``…),
    derived from what is registered, so dashboards and alerts can be checked against it."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            yield family.name + suffix
