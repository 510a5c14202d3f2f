"""OutboxRelay against real Postgres and Kafka: id order, headers, marking, NOTIFY wake-up, one
leader at a time with take-over, and recovery after its connection is killed."""

from __future__ import annotations

import json

import asyncpg
import pytest

from orchestrator.kafka import OutboxRelay
from orchestrator.localstack import LocalStack
from orchestrator.store import decode_outbox_headers, encode_outbox_headers, outbox_lag
from tests.kafka.support import read_all, wait_until

LONG = 3600.0  # a fallback poll that never fires within a test: only NOTIFY can wake the relay


async def insert(
    conn: asyncpg.Connection, topic: str, rows: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """One INSERT statement per call, as a writer in a transaction would do it."""
    await conn.executemany(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        [(topic, key, value, json.dumps(encode_outbox_headers(headers))) for key, value, headers in rows],
    )


async def unpublished(conn: asyncpg.Connection) -> int:
    return (await outbox_lag(conn)).unpublished


def relay_for(database_url: str, bootstrap: str, **overrides: float) -> OutboxRelay:
    options: dict[str, float] = {
        "poll_interval_s": LONG,
        "lock_retry_interval_s": 0.1,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "send_timeout_s": 20.0,
    }
    options.update(overrides)
    return OutboxRelay(database_url=database_url, bootstrap_servers=bootstrap, **options)  # type: ignore[arg-type]


def test_header_encoding_round_trips_text_and_binary() -> None:
    headers = [("ce_id", b"evt-1"), ("bin", b"\xff\x00"), ("ce_id", b"dup")]
    encoded = encode_outbox_headers(headers)
    assert encoded == [["ce_id", "evt-1"], ["bin", "/wA=", "base64"], ["ce_id", "dup"]]
    assert decode_outbox_headers(json.dumps(encoded)) == headers
    with pytest.raises(ValueError, match="not \\[name, value\\]"):
        decode_outbox_headers([["only-a-name"]])


async def test_rows_are_published_in_id_order_with_headers_and_marked(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        rows = [
            (
                f"order-{i % 2}".encode(),
                f"event-{i}".encode(),
                [("ce_id", f"id-{i}".encode()), ("raw", b"\xfe")],
            )
            for i in range(7)
        ]
        await insert(conn, topic_name, rows)
        # batch_size 3: three rounds, still one global id order
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers, batch_size=3) as relay:
            await wait_until(lambda: relay.published == 7, what="7 rows published")
        assert await unpublished(conn) == 0
        marked = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        assert marked == 7
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=7)
    assert [(r.key, r.value, list(r.headers)) for r in got] == [(k, v, h) for k, v, h in rows]


async def test_a_notify_wakes_the_relay_without_waiting_for_the_poll(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers) as relay:
            await wait_until(lambda: relay.is_leader, what="the relay leads")
            for i in range(3):
                # each insert fires the trigger; with a one-hour poll only NOTIFY can publish it in time
                await insert(conn, topic_name, [(b"order-1", f"v{i}".encode(), [])])
                await wait_until(lambda i=i: relay.published == i + 1, what=f"row {i} published via NOTIFY")
            assert relay.lag.unpublished == 0
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=3)
    assert [r.value for r in got] == [b"v0", b"v1", b"v2"]


async def test_one_leader_publishes_and_a_standby_takes_over_when_it_stops(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    bootstrap = stack.kafka.bootstrap_servers
    conn = await asyncpg.connect(migrated_database)
    try:
        first = relay_for(migrated_database, bootstrap)
        second = relay_for(migrated_database, bootstrap)
        async with first:
            await wait_until(lambda: first.is_leader, what="the first relay leads")
            async with second:
                await insert(conn, topic_name, [(b"k", f"a{i}".encode(), []) for i in range(5)])
                await wait_until(lambda: first.published == 5, what="the leader publishes")
                await wait_until(lambda: second.lag.unpublished == 0, what="the standby sees no lag")
                assert not second.is_leader
                assert second.published == 0

                await first.stop()  # releases the lock with its connection
                await wait_until(lambda: second.is_leader, what="the standby takes over")
                await insert(conn, topic_name, [(b"k", f"b{i}".encode(), []) for i in range(4)])
                await wait_until(lambda: second.published == 4, what="the new leader publishes")
        assert first.published == 5
    finally:
        await conn.close()
    got = await read_all(bootstrap, topic_name, expect_at_least=9)
    assert [r.value for r in got] == [f"a{i}".encode() for i in range(5)] + [
        f"b{i}".encode() for i in range(4)
    ]


async def test_rows_left_by_a_dead_relay_are_published_after_it_reconnects(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        # Rows committed while no relay runs (a crash before publishing) wait; nothing is lost.
        await insert(conn, topic_name, [(b"k", b"before", [])])
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers) as relay:
            await wait_until(lambda: relay.published == 1, what="the waiting row published at start")
            # Postgres drops the leader's session (as on a failover): the lock goes with it.
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert killed == 1
            await insert(conn, topic_name, [(b"k", b"during", [])])  # may be inserted while it is away
            await wait_until(lambda: relay.published == 2, what="the relay reconnects, leads and catches up")
            assert relay.is_leader
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=2)
    assert [r.value for r in got] == [b"before", b"during"]
