"""The `outbox` table: its header format and every statement the relay runs against it.

Writers append rows in the transaction of the change, without waking anyone from inside it (no
NOTIFY in data commits: migration 0005 dropped the trigger); every worker's relay
(`orchestrator.kafka.OutboxRelay`) claims rows here with row locks (`claim_outbox_batch`, SKIP
LOCKED), publishes them and marks them published in the same transaction. The relay's module
docstring says why that keeps per-key order across relays.

Header encoding (`outbox.headers`, jsonb): a JSON array of pairs `[name, value]`, in order,
duplicates allowed. `value` is the header's text, sent as its UTF-8 bytes. A value that is not
text is written as a triple `[name, base64, "base64"]`. `encode_outbox_headers()` produces this
form from Kafka-style `(name, bytes)` pairs; `decode_outbox_headers()` reverses it.

The relay passes `timeout_s` on every call: its connection (from `connect`) has no command
timeout of its own, and a hung statement must end in an error the relay reconnects from. It goes
to asyncpg's per-statement timeout, which also cancels the statement on the server.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


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
    """One round's rows: those this relay may publish now, in id order, and how many rows it
    locked in all (`locked` ≥ len(rows): rows behind another relay's rows of their key wait)."""

    rows: list[OutboxRow]
    locked: int


_LAG_SQL = """
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age
FROM outbox WHERE published_at IS NULL
"""
# A relay's round (in its transaction): lock up to $1 unpublished rows, oldest first, that no other
# relay holds (SKIP LOCKED), and return those that may go out now: a row waits while an earlier
# unpublished row of its key is not among ours (another relay holds it, or it fell past our
# LIMIT). The rows that wait stay locked until our commit, which only delays them. The blocker is
# looked up per row (LATERAL ... LIMIT 1, on `outbox_unpublished_key_idx` of migration 0005): as an
# anti-join the planner hashes every unpublished row, a cost that grows with a backlog.
# MATERIALIZED: the locking read runs once.
_CLAIM_SQL = """
WITH locked AS MATERIALIZED (
    SELECT id, topic, key, value, headers FROM outbox
    WHERE published_at IS NULL
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
SELECT l.id, l.topic, l.key, l.value, l.headers, (SELECT count(*) FROM locked) AS locked
FROM locked l
LEFT JOIN LATERAL (
    SELECT e.id FROM outbox e
    WHERE e.key = l.key AND e.id < l.id AND e.published_at IS NULL
      AND e.id NOT IN (SELECT id FROM locked)
    LIMIT 1
) blocker ON true
WHERE blocker.id IS NULL
ORDER BY l.id
"""
_MARK_SQL = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]) AND published_at IS NULL"
_HOLD_LIMIT_SQL = "SELECT set_config('idle_in_transaction_session_timeout', $1, false)"


async def outbox_lag(conn: asyncpg.Connection, *, timeout_s: float | None = None) -> OutboxLag:
    """Read the lag gauge with any connection (for /metrics, the console, tests, the relay at most
    once a second): it counts every unpublished row, so it is not run per round."""
    row = await conn.fetchrow(_LAG_SQL, timeout=timeout_s)
    assert row is not None
    return OutboxLag(unpublished=int(row["n"]), oldest_age_s=float(row["age"]))


async def limit_lock_holding(
    conn: asyncpg.Connection, seconds: float, *, timeout_s: float | None = None
) -> None:
    """Have the server end this session if it sits inside a transaction for `seconds`: a relay
    that pauses (SIGSTOP, a frozen VM) or vanishes with its host mid-round releases its row locks
    then, and another relay publishes its rows. A dead process's session ends at once anyway."""
    await conn.execute(_HOLD_LIMIT_SQL, f"{max(1, round(seconds * 1000))}ms", timeout=timeout_s)


async def claim_outbox_batch(
    conn: asyncpg.Connection, limit: int, *, timeout_s: float | None = None
) -> OutboxBatch:
    """Lock up to `limit` unpublished rows and return, in id order, those this relay may publish
    now (see `_CLAIM_SQL`). Call it inside a transaction: the locks last until its end."""
    records = await conn.fetch(_CLAIM_SQL, limit, timeout=timeout_s)
    rows = [
        OutboxRow(
            id=r["id"], topic=r["topic"], key=bytes(r["key"]), value=bytes(r["value"]), headers=r["headers"]
        )
        for r in records
    ]
    return OutboxBatch(rows=rows, locked=int(records[0]["locked"]) if records else 0)


async def mark_outbox_published(
    conn: asyncpg.Connection, ids: Sequence[int], *, timeout_s: float | None = None
) -> None:
    """Set `published_at` on these rows (a row already marked by another relay keeps its time)."""
    await conn.execute(_MARK_SQL, list(ids), timeout=timeout_s)
