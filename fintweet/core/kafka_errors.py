"""One clear error for "the broker is not there", whichever kafka-python client noticed it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

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
