"""Helpers for the Kafka edge and webhook tests: produce to and read back from the session's real broker.

Every wait here is bounded by a deadline and fails with what it saw, so a broken guarantee shows
up as an assertion, never as a hang; nothing asserts on how long something took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

WAIT_S = 20.0


async def wait_until(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]], *, what: str, timeout_s: float = WAIT_S
) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout_s` (a bound, not an assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    *,
    partition: int | None = None,
) -> None:
    """Send (key, value, headers) records in order with an idempotent producer, awaiting every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, *, partitions: int = 1, expect_at_least: int = 0
) -> list[Read]:
    """Everything on `topic` (which has `partitions` partitions) from the beginning, read_committed,
    in partition then offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[Read] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while loop.time() < deadline:
            end = await consumer.end_offsets(tps)
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                got.extend(
                    Read(r.partition, r.offset, r.key, r.value, tuple((n, bytes(v)) for n, v in r.headers))
                    for r in records
                )
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps) and len(got) >= expect_at_least:
                break
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offset per partition, as the broker has it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
