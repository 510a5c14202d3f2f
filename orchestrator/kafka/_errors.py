"""Errors of the Kafka edge, and the one place where aiokafka's exceptions become ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiokafka.errors import KafkaError

from orchestrator.errors import OrchestratorError


class KafkaEdgeError(OrchestratorError):
    """The broker refused, failed or did not answer in time. Trying again later can help."""

    code = "kafka_unavailable"
    retryable = True


class LifecycleError(OrchestratorError):
    """A component was used in the wrong state (started twice, used before start or after stop)."""

    code = "lifecycle_error"


class DeadLetter(OrchestratorError):
    """Raised by a handler: this record can never be processed; send it to the dead letter topic.

    `reason` is a stable code (the `dlq_reason` header operators and alerts key on); `error` is the
    human explanation (the `dlq_error` header). The consumer then commits past the record.
    """

    code = "dead_letter"

    def __init__(self, reason: str, error: str, **details: Any) -> None:
        super().__init__(error, reason=reason, **details)
        self.reason = reason
        self.error = error


@contextlib.contextmanager
def kafka_errors(action: str) -> Iterator[None]:
    """Translate aiokafka / socket / timeout errors raised while doing `action` into KafkaEdgeError."""
    try:
        yield
    except KafkaError as exc:
        raise KafkaEdgeError(f"{action} failed: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise KafkaEdgeError(f"{action} timed out") from exc
    except OSError as exc:
        raise KafkaEdgeError(f"{action} failed: {exc}") from exc
