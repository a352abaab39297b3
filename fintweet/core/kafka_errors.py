"""Is the broker there: one clear error when it is not, whichever kafka-python client noticed,
and a cheap probe for code waiting for it to come back."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

from fintweet.core.config import split_host_port
from fintweet.core.errors import UserError

T = TypeVar("T")


class BrokerUnavailable(UserError, ConnectionError):
    """Kafka could not be reached at the configured bootstrap address."""


def connect(what: str, bootstrap: str, factory: Callable[[], T]) -> T:
    """Build a kafka-python client, turning its bootstrap failure (a timeout or
    NoBrokersAvailable, depending on the version) into :class:`BrokerUnavailable`."""
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        return factory()
    except KafkaConfigurationError as exc:  # the settings, not the broker: no point retrying
        raise UserError(f"{what}: the Kafka client refused its settings ({exc})") from exc
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"{what}: cannot reach Kafka at {bootstrap} ({type(exc).__name__}); is the broker "
            "up? (`fintweet up` starts the embedded one; set FINTWEET_KAFKA_BOOTSTRAP or "
            "--bootstrap)"
        ) from exc


def broker_accepts(address: str, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection: a broker process is listening there
    (a hung one too: the kernel accepts for it)."""
    try:
        host, port = split_host_port(address)  # "[::1]:9092" connects to ::1, not "[::1]"
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def any_broker_accepts(bootstrap: str) -> bool:
    return any(broker_accepts(address) for address in bootstrap.split(","))
