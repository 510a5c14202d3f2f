"""An idempotent producer that can be (re)started lazily, so a broker that is down at start-up or
goes away later costs a retry, not a crash or a restart of the owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from orchestrator.kafka._errors import kafka_errors
from orchestrator.logs import get_logger

log = get_logger(__name__)

Headers = Sequence[tuple[str, bytes]]


class IdempotentProducer:
    """Owns at most one started `AIOKafkaProducer(enable_idempotence=True)` (acks=all).

    `ensure()` starts one when none is running; a start that fails leaves nothing behind and the
    next call tries again with a fresh client (aiokafka clients cannot be restarted after a failed
    start). `reset()` drops a producer after a fatal error.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str,
        start_timeout_s: float,
        request_timeout_ms: int = 30_000,
        linger_ms: int = 0,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._start_timeout_s = start_timeout_s
        self._request_timeout_ms = request_timeout_ms
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def ensure(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers,
                    client_id=self._client_id,
                    enable_idempotence=True,
                    request_timeout_ms=self._request_timeout_ms,
                    linger_ms=self._linger_ms,
                )
                try:
                    with kafka_errors(f"starting a producer on {self._bootstrap_servers}"):
                        await asyncio.wait_for(producer.start(), self._start_timeout_s)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def send_and_wait(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers, timeout_s: float
    ) -> tuple[int, int]:
        """Send one record and wait for the broker's ack; return (partition, offset).

        The idempotent producer never expires a batch by itself, so the wait is bounded here. A
        record whose wait timed out may still be written later: callers are at-least-once.
        """
        producer = await self.ensure()
        with kafka_errors(f"publishing to {topic}"):
            metadata = await asyncio.wait_for(
                producer.send_and_wait(topic, value, key=key, headers=list(headers)), timeout_s
            )
        return int(metadata.partition), int(metadata.offset)

    async def reset(self) -> None:
        """Drop the current producer (after an error that may have broken it)."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def close(self) -> None:
        await self.reset()


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:  # closing must never mask the error that made us close
        log.warning("kafka_producer_close_failed", error=repr(exc))
