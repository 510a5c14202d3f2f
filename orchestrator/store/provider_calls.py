"""Provider calls (`provider_calls`): every mutating call's intent, stored before it is sent, and
its outcome after. The idempotency key is the row's identity; rows are never deleted while the
provider may still be asked about them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

# A call not yet settled: sent and unanswered, retrying, or refused (an operator may replay it).
UNSETTLED = ("intent", "retrying", "failed")
# A call settled for good: its effect is there (`succeeded`, or `skipped` when a read showed it),
# or a new key took its place (`rekeyed`).
SETTLED = ("succeeded", "skipped", "rekeyed")


async def insert_intent(
    conn: asyncpg.Connection,
    *,
    workflow_id: uuid.UUID | None,
    order_id: str,
    step: str,
    generation: int,
    idempotency_key: str,
    method: str,
    path: str,
    body: bytes | None,
    now: datetime,
) -> bool:
    """Store a call's intent; False if the key has one already (then read it with `stored_call`).

    The key's 24 h window is taken to start now, before the send: a worker that dies after the
    send and before recording its outcome must not leave a call that looks never sent (and would
    be re-sent blindly after the provider forgot the key)."""
    inserted = await conn.fetchval(
        """INSERT INTO provider_calls
               (workflow_id, order_id, step, generation, idempotency_key, method, path, body, first_sent_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING true""",
        workflow_id,
        order_id,
        step,
        generation,
        idempotency_key,
        method,
        path,
        body,
        now,
    )
    return bool(inserted)


async def mark_sending(conn: asyncpg.Connection, idempotency_key: str, *, now: datetime) -> None:
    """A stored intent is about to be sent again: its window starts now if it never started."""
    await conn.execute(
        "UPDATE provider_calls SET first_sent_at = coalesce(first_sent_at, $2) WHERE idempotency_key = $1",
        idempotency_key,
        now,
    )


async def stored_call(conn: asyncpg.Connection, idempotency_key: str) -> asyncpg.Record | None:
    """The whole row of one call (with its exact body bytes: for re-sending, never for display)."""
    record: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM provider_calls WHERE idempotency_key = $1", idempotency_key
    )
    return record


async def call_attempts(conn: asyncpg.Connection, idempotency_key: str) -> int:
    attempts: int = await conn.fetchval(
        "SELECT attempts FROM provider_calls WHERE idempotency_key = $1", idempotency_key
    )
    return attempts


async def call_status(conn: asyncpg.Connection, idempotency_key: str) -> str | None:
    status: str | None = await conn.fetchval(
        "SELECT status FROM provider_calls WHERE idempotency_key = $1", idempotency_key
    )
    return status


async def record_outcome(
    conn: asyncpg.Connection,
    *,
    idempotency_key: str,
    status: str,
    response_status: int | None,
    response_body: Any,
    error: dict[str, Any] | None,
    latency_ms: int,
    now: datetime,
) -> bool:
    """One attempt's answer. The first attempt's time is kept: it starts the key's 24 h window.

    False if the call was settled already (`SETTLED`): two attempts of one key can be in flight
    at once (a step rescheduled while its call is out), and an answer that arrives after the call
    succeeded must not turn it back into a failure. That attempt is only counted."""
    recorded = await conn.fetchval(
        """UPDATE provider_calls SET status = $2, attempts = attempts + 1, response_status = $3,
                  response_body = $4, error = $5, latency_ms = $6,
                  first_sent_at = coalesce(first_sent_at, $7), last_sent_at = $7,
                  completed_at = CASE WHEN $2 IN ('succeeded', 'skipped') THEN $7 ELSE completed_at END
           WHERE idempotency_key = $1 AND status <> ALL($8::text[]) RETURNING true""",
        idempotency_key,
        status,
        response_status,
        response_body,
        error,
        latency_ms,
        now,
        list(SETTLED),
    )
    if recorded:
        return True
    await conn.execute(
        "UPDATE provider_calls SET attempts = attempts + 1, last_sent_at = $2 WHERE idempotency_key = $1",
        idempotency_key,
        now,
    )
    return False


async def settle(
    conn: asyncpg.Connection, idempotency_key: str, *, status: str, now: datetime, answer: Any = None
) -> bool:
    """Settle a call without sending it: `skipped` (the provider has the effect; `answer` is the
    read that showed it) or `rekeyed` (superseded by a new key). False if it was settled already."""
    changed = await conn.fetchval(
        """UPDATE provider_calls SET status = $2, completed_at = $3,
                  response_body = CASE WHEN $2 = 'skipped' THEN $4::jsonb ELSE response_body END
           WHERE idempotency_key = $1 AND status = ANY($5::text[]) RETURNING 1""",
        idempotency_key,
        status,
        now,
        answer,
        list(UNSETTLED),
    )
    return bool(changed)


async def copy_as_skipped(conn: asyncpg.Connection, idempotency_key: str, *, new_key: str) -> None:
    """A skipped call's twin under the next generation's key, so that key counts as done too."""
    await conn.execute(
        """INSERT INTO provider_calls (workflow_id, order_id, step, generation, idempotency_key, method,
                                       path, body, status, response_status, response_body, completed_at)
           SELECT workflow_id, order_id, step, generation + 1, $2, method, path, body, 'skipped',
                  response_status, response_body, completed_at
           FROM provider_calls WHERE idempotency_key = $1
           ON CONFLICT (idempotency_key) DO NOTHING""",
        idempotency_key,
        new_key,
    )


async def submission_started(conn: asyncpg.Connection, order_id: str) -> bool:
    """The order's submit is done or on its way (an intent stored that was not refused or re-keyed)."""
    started: bool = await conn.fetchval(
        """SELECT o.submitted_at IS NOT NULL OR EXISTS (
               SELECT 1 FROM provider_calls c
               WHERE c.order_id = o.order_id AND c.step = 'submit_order' AND c.workflow_id IS NULL
                 AND c.status NOT IN ('failed', 'rekeyed'))
           FROM orders o WHERE o.order_id = $1""",
        order_id,
    )
    return started


async def unsettled_calls(
    conn: asyncpg.Connection, *, order_id: str, workflow_id: uuid.UUID | None, generation: int
) -> list[asyncpg.Record]:
    """A workflow's (or, with `workflow_id` None, its order's own) unsettled calls of `generation`:
    older generations were superseded (an amendment, a re-key) and are never sent again."""
    if workflow_id is None:
        return list(
            await conn.fetch(
                "SELECT * FROM provider_calls WHERE order_id = $1 AND workflow_id IS NULL "
                "AND status = ANY($2::text[]) AND generation = $3 ORDER BY id",
                order_id,
                list(UNSETTLED),
                generation,
            )
        )
    return list(
        await conn.fetch(
            "SELECT * FROM provider_calls WHERE workflow_id = $1 AND status = ANY($2::text[]) "
            "AND generation = $3 ORDER BY id",
            workflow_id,
            list(UNSETTLED),
            generation,
        )
    )


async def unanswered_calls(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> list[asyncpg.Record]:
    """A workflow's calls whose effect is unknown (sent or maybe sent, never answered for good), of
    any generation, oldest first: what a change during a call may have left behind."""
    return list(
        await conn.fetch(
            "SELECT * FROM provider_calls WHERE workflow_id = $1 AND status IN ('intent', 'retrying') "
            "ORDER BY id",
            workflow_id,
        )
    )
