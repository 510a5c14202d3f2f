"""The `outbox` table: its header format and every statement the relay runs against it.

Writers append rows in the transaction of the change (migration 0002's trigger NOTIFYs channel
`OUTBOX_CHANNEL` on every insert); the relay (`orchestrator.kafka.OutboxRelay`) reads them here
and publishes them. Leadership is a session-level advisory lock on `OUTBOX_LOCK_KEY`, held on a
dedicated connection from `orchestrator.store.connect`: it dies with its connection, so a leader
that crashes hands over without lease bookkeeping.

Header encoding (`outbox.headers`, jsonb): a JSON array of pairs `[name, value]`, in order,
duplicates allowed. `value` is the header's text, sent as its UTF-8 bytes. A value that is not
text is written as a triple `[name, base64, "base64"]`. `encode_outbox_headers()` produces this
form from Kafka-style `(name, bytes)` pairs; `decode_outbox_headers()` reverses it.

The relay passes `timeout_s` on every call: its connection (from `connect`) has no command
timeout of its own, and a hung statement must end in an error the relay reconnects from. It goes
to asyncpg's per-statement timeout, which also cancels the statement on the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

OUTBOX_CHANNEL = "outbox"
OUTBOX_LOCK_KEY = 0x6F7574626F78  # "outbox"; only has to be the same in every process of the service


class OutboxFormatError(ValueError):
    """An outbox row's headers are not in the documented encoding."""


def encode_outbox_headers(headers: Sequence[tuple[str, bytes]]) -> list[list[str]]:
    """Kafka headers → the jsonb form stored in `outbox.headers` (see the module docstring)."""
    encoded: list[list[str]] = []
    for name, value in headers:
        try:
            encoded.append([name, value.decode("utf-8")])
        except UnicodeDecodeError:
            encoded.append([name, base64.b64encode(value).decode("ascii"), "base64"])
    return encoded


def decode_outbox_headers(raw: Any) -> list[tuple[str, bytes]]:
    """The jsonb form (already parsed, or as JSON text) → Kafka headers."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, list):
        raise OutboxFormatError(f"headers must be a JSON array, got {type(raw).__name__}")
    headers: list[tuple[str, bytes]] = []
    for item in raw:
        if not isinstance(item, list) or not all(isinstance(part, str) for part in item):
            raise OutboxFormatError(f"header {item!r} is not [name, value] or [name, value, 'base64']")
        if len(item) == 2:
            headers.append((item[0], item[1].encode("utf-8")))
        elif len(item) == 3 and item[2] == "base64":
            try:
                headers.append((item[0], base64.b64decode(item[1], validate=True)))
            except binascii.Error as exc:
                raise OutboxFormatError(f"header {item[0]!r}: invalid base64") from exc
        else:
            raise OutboxFormatError(f"header {item!r} is not [name, value] or [name, value, 'base64']")
    return headers


@dataclass(frozen=True)
class OutboxLag:
    """The lag gauge: how many rows wait, and how old the oldest is (0 when none)."""

    unpublished: int
    oldest_age_s: float


NO_LAG = OutboxLag(unpublished=0, oldest_age_s=0.0)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One unpublished row. `headers` is the stored jsonb, undecoded: a row whose headers are
    malformed must stop the relay's round at that row, not fail the whole batch read."""

    id: int
    topic: str
    key: bytes
    value: bytes
    headers: Any


@dataclass(frozen=True)
class OutboxBatch:
    """Unpublished rows in id order, and the lag as of the read (every waiting row, not only these)."""

    rows: list[OutboxRow]
    lag: OutboxLag


_LAG_SQL = """
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
FROM outbox WHERE published_at IS NULL
"""
# The lag gauge rides along (window aggregates see every unpublished row, before the LIMIT), so a
# round costs two statements, not three.
_BATCH_SQL = """
SELECT id, topic, key, value, headers, count(*) OVER () AS waiting,
       extract(epoch FROM now() - min(created_at) OVER ())::float8 AS oldest_age_s
FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1
"""
_MARK_SQL = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL"
_TRY_LOCK_SQL = "SELECT pg_try_advisory_lock($1)"
_UNLOCK_SQL = "SELECT pg_advisory_unlock($1)"


async def outbox_lag(conn: asyncpg.Connection, *, timeout_s: float | None = None) -> OutboxLag:
    """Read the lag gauge with any connection (for /metrics, the console, tests)."""
    row = await conn.fetchrow(_LAG_SQL, timeout=timeout_s)
    assert row is not None
    return OutboxLag(unpublished=int(row["n"]), oldest_age_s=float(row["age"]))


async def read_outbox_batch(
    conn: asyncpg.Connection, limit: int, *, timeout_s: float | None = None
) -> OutboxBatch:
    """Up to `limit` unpublished rows, oldest first."""
    records = await conn.fetch(_BATCH_SQL, limit, timeout=timeout_s)
    if not records:
        return OutboxBatch(rows=[], lag=NO_LAG)
    rows = [
        OutboxRow(
            id=r["id"], topic=r["topic"], key=bytes(r["key"]), value=bytes(r["value"]), headers=r["headers"]
        )
        for r in records
    ]
    first = records[0]
    return OutboxBatch(
        rows=rows, lag=OutboxLag(unpublished=int(first["waiting"]), oldest_age_s=float(first["oldest_age_s"]))
    )


async def mark_outbox_published(
    conn: asyncpg.Connection, ids: Sequence[int], *, timeout_s: float | None = None
) -> None:
    """Set `published_at` on these rows (a row already marked by an earlier leader keeps its time)."""
    await conn.execute(_MARK_SQL, list(ids), timeout=timeout_s)


async def try_lock_outbox(
    conn: asyncpg.Connection, lock_key: int = OUTBOX_LOCK_KEY, *, timeout_s: float | None = None
) -> bool:
    """Take the relay's leader lock for this session, without waiting; True if taken."""
    return bool(await conn.fetchval(_TRY_LOCK_SQL, lock_key, timeout=timeout_s))


async def unlock_outbox(
    conn: asyncpg.Connection, lock_key: int = OUTBOX_LOCK_KEY, *, timeout_s: float | None = None
) -> None:
    """Give the leader lock back while keeping the connection (closing it releases it too)."""
    await conn.execute(_UNLOCK_SQL, lock_key, timeout=timeout_s)


OutboxListener = Callable[..., object]
"""Called by asyncpg as (connection, pid, channel, payload) on every NOTIFY of `OUTBOX_CHANNEL`."""


async def listen_outbox(
    conn: asyncpg.Connection, callback: OutboxListener, *, timeout_s: float | None = None
) -> None:
    """LISTEN for inserts on this session. asyncpg's `add_listener` takes no timeout, hence ours."""
    await asyncio.wait_for(conn.add_listener(OUTBOX_CHANNEL, callback), timeout_s)


async def unlisten_outbox(
    conn: asyncpg.Connection, callback: OutboxListener, *, timeout_s: float | None = None
) -> None:
    await asyncio.wait_for(conn.remove_listener(OUTBOX_CHANNEL, callback), timeout_s)
