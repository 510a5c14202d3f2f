"""Dead letter publishing: the original record untouched, plus headers that say why, whence, when.

The header names are a contract (shared/reference/event-contracts.md §1): `dlq_reason`,
`dlq_error`, `dlq_source_topic`, `dlq_source_partition`, `dlq_source_offset`, `dlq_time`. They are
appended after the original headers, which keep their order; a record that already carries
`dlq_*` headers (re-consumed from a DLQ) keeps them too, and readers take the last value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from orchestrator.kafka._errors import LifecycleError
from orchestrator.kafka._lifecycle import State
from orchestrator.kafka._producer import IdempotentProducer
from orchestrator.kafka._records import ConsumedRecord
from orchestrator.lifecycle import AsyncLifecycle
from orchestrator.logs import get_logger

log = get_logger(__name__)

MAX_DLQ_ERROR_CHARS = 2000
"""`dlq_error` is a header, not a document: long messages are cut to keep records readable."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-11-25T10:00:00.123Z`: RFC 3339 in UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dead_letter_headers(
    record: ConsumedRecord, *, reason: str, error: str, at: datetime
) -> list[tuple[str, bytes]]:
    """The DLQ copy's headers: the original ones first, untouched, then the `dlq_*` ones."""
    if len(error) > MAX_DLQ_ERROR_CHARS:
        error = error[: MAX_DLQ_ERROR_CHARS - 1] + "…"
    return [
        *record.headers,
        ("dlq_reason", reason.encode()),
        ("dlq_error", error.encode()),
        ("dlq_source_topic", record.topic.encode()),
        ("dlq_source_partition", str(record.partition).encode()),
        ("dlq_source_offset", str(record.offset).encode()),
        ("dlq_time", rfc3339(at).encode()),
    ]


class DeadLetterPublisher(AsyncLifecycle):
    """Publishes refused records to a DLQ topic with an idempotent producer and waits for the ack.

    `publish` raises `KafkaEdgeError` when the broker does not ack in time; the caller (the
    consumer) then retries and does not commit the source offset, so nothing is lost. A retried
    publish can write the DLQ copy twice: the DLQ is at-least-once.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str = "provisioning-orchestrator-dlq",
        send_timeout_s: float = 30.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._producer = IdempotentProducer(
            bootstrap_servers=bootstrap_servers, client_id=client_id, start_timeout_s=send_timeout_s
        )
        self._send_timeout_s = send_timeout_s
        self._clock = clock
        self._state = State.NEW
        self.published = 0

    @property
    def state(self) -> State:
        return self._state

    async def start(self) -> None:
        """Connect now so a bad address shows at start-up; a broker that is down is tried again on
        the first publish."""
        if self._state is not State.NEW:
            raise LifecycleError(f"DeadLetterPublisher cannot start from state {self._state.value}")
        self._state = State.RUNNING
        try:
            await self._producer.ensure()
        except Exception as exc:
            log.warning("dlq_producer_start_failed", error=str(exc))

    async def stop(self) -> None:
        """Close the producer. Idempotent."""
        if self._state in (State.STOPPED, State.STOPPING):
            return
        self._state = State.STOPPING
        await self._producer.close()
        self._state = State.STOPPED

    async def publish(self, record: ConsumedRecord, *, topic: str, reason: str, error: str) -> None:
        """Write `record` to `topic` with the original key, value and headers plus the `dlq_*`
        headers; return once the broker acknowledged it."""
        if self._state is not State.RUNNING:
            raise LifecycleError(f"DeadLetterPublisher is {self._state.value}, not running")
        headers = dead_letter_headers(record, reason=reason, error=error, at=self._clock())
        partition, offset = await self._producer.send_and_wait(
            topic, key=record.key, value=record.value, headers=headers, timeout_s=self._send_timeout_s
        )
        self.published += 1
        log.warning(
            "record_dead_lettered",
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            dlq_topic=topic,
            dlq_partition=partition,
            dlq_offset=offset,
            reason=reason,
        )
