"""The local broker is a real Kafka: idempotent and transactional producers and consumer groups
behave as the engine will rely on them."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from orchestrator.localstack import LocalStack


async def _drain(
    bootstrap: str, topic: str, *, isolation_level: str, expect_at_least: int = 0
) -> list[bytes]:
    """Everything currently readable on `topic` from the beginning, with the given isolation."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                values.extend(r.value for r in records)
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= end[tp] for tp in partitions) and len(values) >= expect_at_least:
                break
        return values
    finally:
        await consumer.stop()


async def test_idempotent_producer_delivers_each_record_once_in_order(
    stack: LocalStack, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        sent = [f"event-{i}".encode() for i in range(50)]
        futures = [await producer.send(topic_name, value, key=b"order-1") for value in sent]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert [m.offset for m in metadata] == list(range(50))
    assert await _drain(stack.kafka.bootstrap_servers, topic_name, isolation_level="read_uncommitted") == sent


async def test_transaction_commit_is_visible_and_abort_is_hidden(stack: LocalStack, topic_name: str) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka.bootstrap_servers, transactional_id=f"tx-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic_name, b"committed-1")
            await producer.send_and_wait(topic_name, b"committed-2")
        await producer.begin_transaction()
        await producer.send_and_wait(topic_name, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic_name, b"committed-3")
    finally:
        await producer.stop()

    committed = await _drain(stack.kafka.bootstrap_servers, topic_name, isolation_level="read_committed")
    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record is physically in the log: only read_committed hides it.
    everything = await _drain(stack.kafka.bootstrap_servers, topic_name, isolation_level="read_uncommitted")
    assert b"aborted" in everything


async def test_consumer_group_resumes_from_committed_offset(stack: LocalStack, topic_name: str) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    bootstrap = stack.kafka.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic_name, f"m{i}".encode())
    finally:
        await producer.stop()

    group = f"group-{uuid.uuid4().hex[:8]}"

    async def consume(count: int, *, commit: bool) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic_name,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < count:
                record = await asyncio.wait_for(consumer.getone(), 30)
                got.append(record.value)
                if commit:
                    tp = TopicPartition(record.topic, record.partition)
                    await consumer.commit({tp: record.offset + 1})
            return got
        finally:
            await consumer.stop()

    first = await consume(4, commit=True)
    # A consumer that reads without committing must not move the group's position.
    peek = await consume(2, commit=False)
    resumed = await consume(6, commit=True)
    assert first == [b"m0", b"m1", b"m2", b"m3"]
    assert peek == [b"m4", b"m5"]
    assert resumed == [f"m{i}".encode() for i in range(4, 10)]
