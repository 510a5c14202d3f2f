"""OutboxRelay against real Postgres and Kafka: id order, headers, marking, in-process wake-up, the
poll, several relays publishing at once in order per key, a relay that dies or pauses mid-round
(holding row locks) replaced by another, a row with bad headers stopping only its key, and recovery
after the relay's connection is killed."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from orchestrator.kafka import OutboxRelay
from orchestrator.localstack import LocalStack
from orchestrator.store import (
    claim_outbox_batch,
    decode_outbox_headers,
    encode_outbox_headers,
    limit_lock_holding,
    outbox_lag,
)
from tests.kafka.support import Read, read_all, wait_until

LONG = 3600.0  # a poll that never fires within a test: only wake() (or a reconnect) starts a round

Row = tuple[bytes, bytes, list[tuple[str, bytes]]]
OTHER_SESSIONS = (  # pg_stat_activity: the relays' sessions in the test's database
    "datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


async def insert(conn: asyncpg.Connection, topic: str, rows: Sequence[Row]) -> None:
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
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "send_timeout_s": 20.0,
        "lag_interval_s": 0.1,
    }
    options.update(overrides)
    return OutboxRelay(database_url=database_url, bootstrap_servers=bootstrap, **options)  # type: ignore[arg-type]


def by_key(got: Sequence[Read]) -> dict[bytes, list[bytes]]:
    """Each key's values in the order Kafka holds them (one key lives in one partition)."""
    values: dict[bytes, list[bytes]] = defaultdict(list)
    for record in got:
        assert record.key is not None
        assert record.value is not None
        values[record.key].append(record.value)
    return dict(values)


def first_seen(values: list[bytes]) -> list[bytes]:
    """`values` without re-deliveries (at least once: a value may come again; its first copy counts)."""
    return list(dict.fromkeys(values))


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
        # batch_size 3: three rounds, still one id order
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers, batch_size=3) as relay:
            await wait_until(lambda: relay.published == 7, what="7 rows published")
            await wait_until(lambda: relay.lag.unpublished == 0, what="the lag gauge at zero")
        assert await unpublished(conn) == 0
        marked = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        assert marked == 7
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=7)
    assert [(r.key, r.value, list(r.headers)) for r in got] == [(k, v, h) for k, v, h in rows]


async def test_wake_starts_a_round_and_inserts_notify_nobody(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        # Migration 0005 took NOTIFY out of data commits: no trigger on the outbox any more.
        triggers = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal"
        )
        assert triggers == 0
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers) as relay:
            await wait_until(lambda: relay.rounds >= 1, what="the relay's first (empty) round")
            for i in range(3):
                # with a one-hour poll only wake() (what the worker calls after its commits) publishes
                await insert(conn, topic_name, [(b"order-1", f"v{i}".encode(), [])])
                relay.wake()
                await wait_until(lambda i=i: relay.published == i + 1, what=f"row {i} published on wake()")
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=3)
    assert [r.value for r in got] == [b"v0", b"v1", b"v2"]


async def test_the_poll_finds_rows_nobody_woke_it_for(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        relay = relay_for(migrated_database, stack.kafka.bootstrap_servers, poll_interval_s=0.1)
        async with relay:
            await wait_until(lambda: relay.rounds >= 1, what="the relay's first (empty) round")
            # as an operator command or another worker would: committed here, no wake() in the relay's process
            await insert(conn, topic_name, [(b"order-1", b"polled", [])])
            await wait_until(lambda: relay.published == 1, what="the row found by the poll")
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=1)
    assert [r.value for r in got] == [b"polled"]


async def test_two_relays_publish_concurrently_every_row_in_order_per_key(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    """Two workers' relays drain one outbox while writers commit: every row goes out, and each
    key's rows reach Kafka in their commit order, whichever relay sent them."""
    partitions, writers, keys_per_writer, rows_per_writer = 4, 6, 4, 150
    await stack.kafka.create_topics([topic_name], partitions=partitions)
    bootstrap = stack.kafka.bootstrap_servers
    expected: dict[bytes, list[bytes]] = defaultdict(list)
    # small batches, short polls: the relays' rounds interleave and often meet a key's earlier row
    # locked by the other one
    first = relay_for(migrated_database, bootstrap, batch_size=7, poll_interval_s=0.02)
    second = relay_for(migrated_database, bootstrap, batch_size=5, poll_interval_s=0.02)

    async def write(writer: int) -> None:
        # One writer per key, one transaction per row or two: per key, ids follow commit order (as
        # under the order's row lock in the engine).
        rng = random.Random(writer)
        keys = [f"order-{writer}-{k}".encode() for k in range(keys_per_writer)]
        conn = await asyncpg.connect(migrated_database)
        try:
            i = 0
            while i < rows_per_writer:
                chunk: list[Row] = []
                for _ in range(rng.randint(1, 2)):
                    key = rng.choice(keys)
                    value = f"{key.decode()}#{i}".encode()
                    expected[key].append(value)
                    chunk.append((key, value, [("n", str(i).encode())]))
                    i += 1
                async with conn.transaction():
                    await insert(conn, topic_name, chunk)
                (first if i % 2 else second).wake()
                await asyncio.sleep(rng.random() / 500)
        finally:
            await conn.close()

    conn = await asyncpg.connect(migrated_database)
    try:
        async with first, second:
            await asyncio.gather(*(write(w) for w in range(writers)))
            total = sum(len(v) for v in expected.values())
            await wait_until(
                lambda: first.published + second.published >= total,
                what=f"{total} rows published between the two relays",
                timeout_s=60,
            )
            assert await unpublished(conn) == 0
        assert first.published > 0, "the first relay published nothing: nothing ran concurrently"
        assert second.published > 0, "the second relay published nothing: nothing ran concurrently"
    finally:
        await conn.close()
    got = await read_all(bootstrap, topic_name, partitions=partitions, expect_at_least=total)
    published = by_key(got)
    assert set(published) == set(expected)
    for key, values in expected.items():
        assert published[key] == values, f"{key!r}: {published[key]} != {values}"


class _HungProducer:
    """A producer whose send() returns only when released, then fails: until then its relay stays
    mid-round, holding its row locks."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, *_: Any, **__: Any) -> Any:
        self.sending.set()
        await self.release.wait()
        raise KafkaConnectionError("released")


async def test_a_relay_killed_mid_round_has_its_rows_published_by_another(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=2)
    bootstrap = stack.kafka.bootstrap_servers
    held = [(b"order-a", b"a0", []), (b"order-b", b"b0", []), (b"order-a", b"a1", [])]
    conn = await asyncpg.connect(migrated_database)
    try:
        await insert(conn, topic_name, held)
        hung = _HungProducer()
        # ack_timeout_s: it would give up on its own only long after the test
        dying = relay_for(migrated_database, bootstrap, ack_timeout_s=LONG, send_timeout_s=2.0)

        async def hung_producer() -> _HungProducer:
            return hung

        dying._producer.ensure = hung_producer  # type: ignore[method-assign,assignment]
        async with dying:
            await asyncio.wait_for(hung.sending.wait(), 20)
            [pid] = await conn.fetch(
                f"SELECT pid FROM pg_stat_activity WHERE {OTHER_SESSIONS} AND state = 'idle in transaction'"
            )
            # Rows after the held ones: a1's key has a later row, order-c none held.
            await insert(conn, topic_name, [(b"order-a", b"a2", []), (b"order-c", b"c0", [])])
            async with relay_for(migrated_database, bootstrap, poll_interval_s=0.05) as survivor:
                await wait_until(lambda: survivor.published == 1, what="order-c published past the held rows")
                waiting = await conn.fetch(
                    "SELECT value FROM outbox WHERE published_at IS NULL ORDER BY id"
                )  # a2 waits for a0 and a1, which the dying relay holds
                assert [bytes(r["value"]) for r in waiting] == [b"a0", b"b0", b"a1", b"a2"]

                # The dying relay's process ends: Postgres ends its session and rolls it back.
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid["pid"])
                await wait_until(lambda: survivor.published == 5, what="the dead relay's rows published")
                assert await unpublished(conn) == 0
            hung.release.set()  # lets the dying relay's task end with the test
            assert dying.published == 0
    finally:
        await conn.close()
    got = by_key(await read_all(bootstrap, topic_name, partitions=2, expect_at_least=5))
    assert got == {b"order-a": [b"a0", b"a1", b"a2"], b"order-b": [b"b0"], b"order-c": [b"c0"]}


async def test_a_relay_paused_mid_round_loses_its_locks_after_the_hold_limit(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    """A relay frozen inside its round (SIGSTOP, a frozen host) never commits or hangs up; the
    server ends its session after the hold limit it set, and another relay takes its rows."""
    await stack.kafka.create_topics([topic_name], partitions=1)
    bootstrap = stack.kafka.bootstrap_servers
    conn = await asyncpg.connect(migrated_database)
    paused = await asyncpg.connect(migrated_database)
    try:
        await insert(conn, topic_name, [(b"order-a", f"a{i}".encode(), []) for i in range(3)])
        await limit_lock_holding(paused, 1.0)
        transaction = paused.transaction()
        await transaction.start()
        batch = await claim_outbox_batch(paused, 10)  # the paused relay's round, never to go on
        assert [row.value for row in batch.rows] == [b"a0", b"a1", b"a2"]
        async with relay_for(migrated_database, bootstrap, poll_interval_s=0.05) as survivor:
            await wait_until(lambda: survivor.published == 3, what="the paused relay's rows published")
        assert paused.is_closed() or await _session_ended(paused)
    finally:
        await conn.close()
        paused.terminate()
    got = await read_all(bootstrap, topic_name, expect_at_least=3)
    assert [r.value for r in got] == [b"a0", b"a1", b"a2"]


async def _session_ended(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return True
    return False


async def test_a_row_with_bad_headers_stops_only_its_key(
    stack: LocalStack, migrated_database: str, topic_name: str
) -> None:
    await stack.kafka.create_topics([topic_name], partitions=1)
    conn = await asyncpg.connect(migrated_database)
    try:
        await insert(conn, topic_name, [(b"order-a", b"a0", [])])
        await conn.execute(
            "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, 'order-a', 'a1', '[[\"x\"]]')",
            topic_name,
        )
        await insert(conn, topic_name, [(b"order-a", b"a2", []), (b"order-b", b"b0", [])])
        async with relay_for(migrated_database, stack.kafka.bootstrap_servers, poll_interval_s=0.05) as relay:
            await wait_until(lambda: relay.published == 2, what="a0 and b0 published")
            # a1 can never go out, so a2 waits behind it; the lag gauge shows both
            await wait_until(lambda: relay.lag.unpublished == 2, what="the lag gauge showing a1 and a2")
            rounds = relay.rounds
            await wait_until(lambda: relay.rounds > rounds + 2, what="more rounds")
            assert relay.published == 2
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=2)
    assert [r.value for r in got] == [b"a0", b"b0"]


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
            # Postgres drops the relay's session (as on a failover).
            killed = await conn.fetchval(
                f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {OTHER_SESSIONS}"
            )
            assert killed == 1
            await insert(conn, topic_name, [(b"k", b"during", [])])  # may be inserted while it is away
            # No wake() and a one-hour poll: the lost session itself wakes the relay, which reconnects
            await wait_until(lambda: relay.published == 2, what="the relay reconnects and catches up")
    finally:
        await conn.close()
    got = await read_all(stack.kafka.bootstrap_servers, topic_name, expect_at_least=2)
    assert [r.value for r in got] == [b"before", b"during"]
