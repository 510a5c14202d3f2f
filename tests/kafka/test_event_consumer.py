"""EventConsumer against the real broker: offsets move only after the handler returned (or the DLQ
acked), failing records are retried rather than skipped, a crash redelivers what was not
committed, each partition is handled in order while partitions run concurrently."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime

import pytest

from orchestrator.kafka import (
    ConsumedRecord,
    DeadLetter,
    EventConsumer,
    Handler,
    LifecycleError,
    RetryPolicy,
    State,
)
from orchestrator.localstack import LocalStack
from tests.kafka.support import committed_offsets, produce, read_all, wait_until

FAST_RETRY = RetryPolicy(initial_s=0.01, max_s=0.05)


def consumer_for(
    bootstrap: str,
    group_id: str,
    topic: str,
    handler: Handler,
    *,
    dlq: dict[str, str] | None = None,
    grace_s: float = 10.0,
) -> EventConsumer:
    return EventConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        topics=[topic],
        handler=handler,
        dlq_topics=dlq or {},
        retry=FAST_RETRY,
        fetch_timeout_ms=100,
        stop_grace_s=grace_s,
        heartbeat_interval_ms=300,
        session_timeout_ms=6000,
    )


def values(n: int, prefix: str = "m") -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [(b"order-1", f"{prefix}{i}".encode(), []) for i in range(n)]


async def test_failing_handler_is_retried_not_skipped_and_offsets_follow_handled_records(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    await produce(bootstrap, topic_name, values(5))
    handled: list[bytes] = []
    attempts: defaultdict[bytes, int] = defaultdict(int)
    committed_while_failing: list[int | None] = []

    async def handler(record: ConsumedRecord) -> None:
        assert record.value is not None
        attempts[record.value] += 1
        if record.value == b"m2" and attempts[b"m2"] <= 3:
            if attempts[b"m2"] == 3:
                offsets = await committed_offsets(bootstrap, group_id, topic_name, 1)
                committed_while_failing.append(offsets[0])
            raise RuntimeError("database is briefly unavailable")
        handled.append(record.value)

    consumer = consumer_for(bootstrap, group_id, topic_name, handler)
    async with consumer:
        await wait_until(lambda: len(handled) == 5, what="all five records handled")
    assert handled == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert attempts[b"m2"] == 4
    assert consumer.counters.handler_failures == 3
    assert consumer.counters.consumed == 5
    # While m2 (offset 2) kept failing, the group never got past it.
    assert len(committed_while_failing) == 1
    assert committed_while_failing[0] in (None, 0, 1, 2)
    assert (await committed_offsets(bootstrap, group_id, topic_name, 1))[0] == 5

    # A restart: nothing handled comes back; a new record is the only one delivered.
    await produce(bootstrap, topic_name, values(1, prefix="n"))
    again: list[bytes | None] = []

    async def second(record: ConsumedRecord) -> None:
        again.append(record.value)

    async with consumer_for(bootstrap, group_id, topic_name, second):
        await wait_until(lambda: len(again) >= 1, what="the new record handled after restart")
    assert again == [b"n0"]


async def test_dead_letter_keeps_the_original_record_and_adds_the_reason(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    dlq = f"{topic_name}.dlq"
    await stack.kafka.create_topics([topic_name, dlq], partitions=1)
    original_headers = [
        ("content-type", b"application/json"),
        ("trace", b"\x00\x01binary"),
        ("trace", b"two"),
    ]
    await produce(
        bootstrap,
        topic_name,
        [
            (b"order-1", b'{"ok": 1}', []),
            (b"order-9", b"{not json", original_headers),
            (b"order-1", b'{"ok": 2}', []),
        ],
    )
    handled: list[bytes | None] = []

    async def handler(record: ConsumedRecord) -> None:
        if record.value == b"{not json":
            raise DeadLetter("malformed_json", "Expecting property name enclosed in double quotes")
        handled.append(record.value)

    consumer = consumer_for(bootstrap, group_id, topic_name, handler, dlq={topic_name: dlq})
    async with consumer:
        await wait_until(lambda: len(handled) == 2, what="both valid records handled")
    assert handled == [b'{"ok": 1}', b'{"ok": 2}']
    assert consumer.counters.dead_lettered == 1
    assert (await committed_offsets(bootstrap, group_id, topic_name, 1))[0] == 3

    [dead] = await read_all(bootstrap, dlq, expect_at_least=1)
    assert dead.key == b"order-9"
    assert dead.value == b"{not json"
    assert list(dead.headers[:3]) == original_headers  # untouched, in order, duplicates kept
    extra = dict(dead.headers[3:])
    assert extra["dlq_reason"] == b"malformed_json"
    assert extra["dlq_error"] == b"Expecting property name enclosed in double quotes"
    assert extra["dlq_source_topic"] == topic_name.encode()
    assert extra["dlq_source_partition"] == b"0"
    assert extra["dlq_source_offset"] == b"1"
    when = extra["dlq_time"].decode()
    assert when.endswith("Z")
    assert datetime.fromisoformat(when).utcoffset() is not None


async def test_dead_letter_without_a_dlq_mapping_is_retried_never_dropped(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    await produce(bootstrap, topic_name, values(3))
    seen: list[bytes | None] = []

    async def handler(record: ConsumedRecord) -> None:
        seen.append(record.value)
        if record.value == b"m1":
            raise DeadLetter("invalid_data", "no DLQ is configured for this topic")

    consumer = consumer_for(bootstrap, group_id, topic_name, handler)
    async with consumer:
        await wait_until(lambda: seen.count(b"m1") >= 3, what="the refused record retried")
    assert b"m2" not in seen  # nothing after it was handled
    assert consumer.counters.dead_lettered == 0
    assert consumer.counters.handler_failures >= 3
    assert (await committed_offsets(bootstrap, group_id, topic_name, 1))[0] == 1


async def test_a_crash_redelivers_every_record_not_committed(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    await produce(bootstrap, topic_name, values(10))
    first_run: list[int] = []
    stuck = asyncio.Event()

    async def hangs_at_five(record: ConsumedRecord) -> None:
        if record.offset == 5:
            stuck.set()
            await asyncio.Event().wait()  # a handler that never returns, as if the process froze
        first_run.append(record.offset)

    consumer = consumer_for(bootstrap, group_id, topic_name, hangs_at_five)
    await consumer.start()
    await asyncio.wait_for(stuck.wait(), 20)
    await consumer.abort()  # the crash: no commit, no waiting for the handler
    assert consumer.state is State.STOPPED
    assert first_run == [0, 1, 2, 3, 4]
    committed = (await committed_offsets(bootstrap, group_id, topic_name, 1))[0] or 0
    assert committed <= 5  # never past the record that did not finish

    second_run: list[int] = []

    async def handler(record: ConsumedRecord) -> None:
        second_run.append(record.offset)

    async with consumer_for(bootstrap, group_id, topic_name, handler):
        await wait_until(lambda: 9 in second_run, what="the last record redelivered")
    # Everything from the committed offset on comes back, in order: the unfinished ones included.
    assert second_run == list(range(committed, 10))


async def test_stop_lets_the_in_flight_record_finish_and_commits_it(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    await produce(bootstrap, topic_name, values(3))
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []

    async def handler(record: ConsumedRecord) -> None:
        if record.offset == 1:
            started.set()
            await release.wait()
        finished.append(record.offset)

    consumer = consumer_for(bootstrap, group_id, topic_name, handler)
    await consumer.start()
    await asyncio.wait_for(started.wait(), 20)
    stopping = asyncio.create_task(consumer.stop())
    await wait_until(lambda: consumer.state is State.STOPPING, what="stop begun")
    assert not stopping.done()  # stop waits for the handler in flight
    release.set()
    await asyncio.wait_for(stopping, 20)
    assert finished == [0, 1]  # offset 2 was fetched but not started: left for redelivery
    assert (await committed_offsets(bootstrap, group_id, topic_name, 1))[0] == 2
    await consumer.stop()  # idempotent
    with pytest.raises(LifecycleError):
        await consumer.start()


async def test_partitions_run_concurrently_and_each_keeps_its_order(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=3)
    for partition in range(3):
        await produce(
            bootstrap,
            topic_name,
            [(f"k{partition}".encode(), f"{partition}:{i}".encode(), []) for i in range(20)],
            partition=partition,
        )
    # The first record of each partition waits until all three are in flight at once: with
    # serial handling this barrier would never open and the test would fail on its deadline.
    barrier = asyncio.Barrier(3)
    seen: defaultdict[int, list[int]] = defaultdict(list)
    in_flight: set[int] = set()

    async def handler(record: ConsumedRecord) -> None:
        assert record.partition not in in_flight, "two records of one partition at once"
        in_flight.add(record.partition)
        try:
            if record.offset == 0:
                await asyncio.wait_for(barrier.wait(), 20)
            await asyncio.sleep(0.001 * (record.offset % 3))
            seen[record.partition].append(record.offset)
        finally:
            in_flight.discard(record.partition)

    consumer = consumer_for(bootstrap, group_id, topic_name, handler)
    async with consumer:
        await wait_until(lambda: sum(len(v) for v in seen.values()) == 60, what="all 60 records handled")
        assert consumer.state is State.RUNNING
        with pytest.raises(LifecycleError):
            await consumer.start()
    assert {p: seen[p] for p in range(3)} == {p: list(range(20)) for p in range(3)}
    assert await committed_offsets(bootstrap, group_id, topic_name, 3) == {0: 20, 1: 20, 2: 20}


async def test_a_rebalance_hands_over_partitions_without_losing_or_repeating_records(
    stack: LocalStack, bootstrap: str, group_id: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=2)
    for partition in range(2):
        await produce(
            bootstrap,
            topic_name,
            [(b"k", f"{partition}:{i}".encode(), []) for i in range(10)],
            partition=partition,
        )
    by_a: list[tuple[int, int]] = []
    by_b: list[tuple[int, int]] = []

    def recorder(sink: list[tuple[int, int]]) -> Handler:
        async def handler(record: ConsumedRecord) -> None:
            sink.append((record.partition, record.offset))

        return handler

    async with consumer_for(bootstrap, group_id, topic_name, recorder(by_a)) as a:
        await wait_until(lambda: len(by_a) == 20, what="A handled everything")
        await produce(
            bootstrap, topic_name, [(b"k", f"later-{i}".encode(), []) for i in range(10)], partition=0
        )
        await produce(
            bootstrap, topic_name, [(b"k", f"later-{i}".encode(), []) for i in range(10)], partition=1
        )
        async with consumer_for(bootstrap, group_id, topic_name, recorder(by_b)) as b:
            await wait_until(
                lambda: len(a.assignment()) == 1 and len(b.assignment()) == 1, what="one partition each"
            )
            await wait_until(lambda: len(set(by_a) | set(by_b)) == 40, what="all 40 records handled")
            await produce(bootstrap, topic_name, [(b"k", b"last", [])], partition=0)
            await produce(bootstrap, topic_name, [(b"k", b"last", [])], partition=1)
            await wait_until(lambda: len(set(by_a) | set(by_b)) == 42, what="records after the rebalance")
    everything = by_a + by_b
    assert sorted(set(everything)) == sorted((p, o) for p in range(2) for o in range(21))
    # Revocation committed what A had handled, so nothing A finished was handled again by B.
    assert len(everything) == len(set(everything))
    assert await committed_offsets(bootstrap, group_id, topic_name, 2) == {0: 21, 1: 21}
