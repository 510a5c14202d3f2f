"""Durable time (`timers`, `workers`): scheduling the next step of a workflow or an order, and the
scheduler's claims.

A timer is claimed by setting `fired_at` and `claimed_by`, and deleted once its step is done (in
the worker's next claim statement, so a busy worker spends one commit per claim, not one per step).
A claim whose worker has not heartbeated for `dead_after` is taken over by any live worker.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from orchestrator.store._sql import Params, upsert_timer

TIMERS_CHANNEL = "timers"  # NOTIFYed by other processes after they commit a step (`wake_workers`)


class TimerKind(enum.StrEnum):
    STEP = "step"  # the next step of a line item workflow
    ORDER_STEP = "order_step"  # the next step of its order (create, submit, cancel)


async def schedule(
    conn: asyncpg.Connection,
    *,
    kind: TimerKind,
    due_at: datetime,
    workflow_id: uuid.UUID | None = None,
    order_id: str | None = None,
    fresh: bool = False,
) -> None:
    """Make sure the step of this workflow (or, without one, this order) runs by `due_at`;
    `fresh` for the first step of new work (claimed after steps of work already started)."""
    p = Params()
    target = (p(workflow_id), "NULL") if workflow_id else ("NULL", p(order_id))
    sql = upsert_timer(
        workflow_id=target[0], order_id=target[1], kind=p(str(kind)), due_at=p(due_at), fresh=fresh
    )
    await conn.execute(sql, *p.values)


async def schedule_steps(
    conn: asyncpg.Connection, workflow_ids: list[uuid.UUID], *, due_at: datetime
) -> None:
    """`schedule` a STEP for each workflow, in the given order (callers pass workflow id order, so
    concurrent transactions touch timers in one order and cannot deadlock)."""
    for workflow_id in workflow_ids:
        await schedule(conn, kind=TimerKind.STEP, workflow_id=workflow_id, due_at=due_at)


async def wake_workers(conn: asyncpg.Connection) -> None:
    """Tell every worker's scheduler to claim now, after (never inside) a commit that scheduled
    steps from outside a worker (an operator's action): data commits do not NOTIFY."""
    await conn.execute(f"SELECT pg_notify('{TIMERS_CHANNEL}', '')")


async def db_now(conn: asyncpg.Connection) -> datetime:
    """Timers are claimed against the database's clock (`due_at <= now()`), so "run it now" means
    the database's now, whatever clock the caller reasons with."""
    value: datetime = await conn.fetchval("SELECT now()")
    return value


async def pending_step(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> asyncpg.Record | None:
    """The workflow's step timer (a pending one first): `due_at`, `fired_at`, `claimed_by`."""
    record: asyncpg.Record | None = await conn.fetchrow(
        "SELECT due_at, fired_at, claimed_by FROM timers WHERE workflow_id = $1 AND kind = $2 "
        "ORDER BY fired_at NULLS FIRST LIMIT 1",
        workflow_id,
        str(TimerKind.STEP),
    )
    return record


async def advance_order_step(conn: asyncpg.Connection, order_id: str, *, due_at: datetime) -> bool:
    """Move the order's pending step to `due_at` if it waits longer; True if one was moved."""
    moved = await conn.fetchval(
        "UPDATE timers SET due_at = $3 "
        "WHERE order_id = $1 AND kind = $2 AND fired_at IS NULL AND due_at > $3 RETURNING 1",
        order_id,
        str(TimerKind.ORDER_STEP),
        due_at,
    )
    return bool(moved)


# --- the scheduler's side ---

_CLAIM = """
WITH finished AS (
    -- steps this worker finished since the last claim: deleted here rather than one by one
    DELETE FROM timers WHERE id = ANY($4::bigint[]) AND claimed_by = $1
),
live AS (SELECT worker_id FROM workers WHERE last_seen > now() - $3::interval),
-- Two index scans, not one OR: with a backlog of 100k due timers the OR sorted them all on every
-- claim (30 ms). Dead workers' claims (few) are taken over first, then due timers in due order.
stale AS (
    SELECT id FROM timers
    WHERE fired_at IS NOT NULL AND claimed_by IS DISTINCT FROM $1
      AND claimed_by NOT IN (SELECT worker_id FROM live)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
started AS (
    SELECT id FROM timers
    WHERE fired_at IS NULL AND NOT fresh AND due_at <= now()
      -- One worker per step: while another worker (live, or dead until its claim is taken over)
      -- holds a claim on this target, its pending twin waits, or both would send the same call
      -- at once. Our own claims do not block: the scheduler runs a twin after the step in hand.
      AND NOT EXISTS (SELECT 1 FROM timers c
                      WHERE c.target = timers.target AND c.kind = timers.kind
                        AND c.fired_at IS NOT NULL AND c.claimed_by IS DISTINCT FROM $1)
    ORDER BY due_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
-- New work (first steps, `fresh`) only in the room started work leaves: a backlog of new orders
-- then finishes orders from its first minute instead of starting every one of them first.
fresh AS (
    SELECT id FROM timers
    WHERE fired_at IS NULL AND fresh AND due_at <= now()
      AND NOT EXISTS (SELECT 1 FROM timers c
                      WHERE c.target = timers.target AND c.kind = timers.kind
                        AND c.fired_at IS NOT NULL AND c.claimed_by IS DISTINCT FROM $1)
    ORDER BY due_at
    LIMIT greatest($2 - (SELECT count(*) FROM started), 0)
    FOR UPDATE SKIP LOCKED
),
due AS (SELECT id FROM stale UNION ALL SELECT id FROM started UNION ALL SELECT id FROM fresh),
claimed AS (
    UPDATE timers t SET fired_at = now(), claimed_by = $1
    FROM due WHERE t.id = due.id
    -- a step's order (it never changes) rides along, sparing the step a lookup
    RETURNING t.id, t.workflow_id, t.kind,
              coalesce(t.order_id, (SELECT w.order_id FROM workflows w WHERE w.workflow_id = t.workflow_id))
                  AS order_id
)
SELECT id, workflow_id, order_id, kind, NULL::float8 AS next_due_s FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL,
       (SELECT extract(epoch FROM min(due_at) - now())::float8 FROM timers
        WHERE fired_at IS NULL AND due_at > now())
"""
# A worker restarted under the same id (a StatefulSet pod, a systemd instance) frees what its
# previous incarnation had claimed at once instead of never (claims of a live id are never taken
# over). A claim with a pending twin, or with an older claimed twin, just goes: the twin runs the
# step; the rest go back to pending, due now.
_RELEASE_PREVIOUS = """
WITH gone AS (
    DELETE FROM timers t
    WHERE t.claimed_by = $1 AND t.fired_at IS NOT NULL
      AND EXISTS (SELECT 1 FROM timers p WHERE p.target = t.target AND p.kind = t.kind AND p.id <> t.id
                  AND (p.fired_at IS NULL OR (p.claimed_by = $1 AND p.id < t.id)))
    RETURNING t.id
)
UPDATE timers SET fired_at = NULL, claimed_by = NULL
WHERE claimed_by = $1 AND fired_at IS NOT NULL AND id NOT IN (SELECT id FROM gone)
"""


class Claims:
    """The scheduler's statements over one pool, for one worker id."""

    def __init__(self, pool: asyncpg.Pool, *, worker_id: str) -> None:
        self._pool = pool
        self._worker_id = worker_id

    async def register(self) -> None:
        await self._pool.execute(
            "INSERT INTO workers (worker_id) VALUES ($1) "
            "ON CONFLICT (worker_id) DO UPDATE SET last_seen = now()",
            self._worker_id,
        )

    async def heartbeat(self) -> None:
        await self._pool.execute("UPDATE workers SET last_seen = now() WHERE worker_id = $1", self._worker_id)

    async def unregister(self) -> None:
        await self._pool.execute("DELETE FROM workers WHERE worker_id = $1", self._worker_id)

    async def release_previous(self) -> None:
        """Free what an earlier run under this worker id had claimed (may raise UniqueViolation
        when a concurrent `schedule` adds a pending twin meanwhile: try again)."""
        await self._pool.execute(_RELEASE_PREVIOUS, self._worker_id)

    async def claim(self, *, batch: int, dead_after: timedelta, finished: list[int]) -> list[Any]:
        """Delete `finished`, claim up to `batch` due timers (dead workers' claims first); the last
        row carries only `next_due_s`, the seconds until the next pending timer is due."""
        rows: list[Any] = await self._pool.fetch(_CLAIM, self._worker_id, batch, dead_after, finished)
        return rows

    async def delete(self, timer_ids: list[int]) -> None:
        if timer_ids:
            await self._pool.execute(
                "DELETE FROM timers WHERE id = ANY($1::bigint[]) AND claimed_by = $2",
                timer_ids,
                self._worker_id,
            )

    async def release(self, timer_id: int) -> None:
        """Put a failed step back, a little later; if a newer pending timer exists, this one goes."""
        try:
            await self._pool.execute(
                "UPDATE timers SET fired_at = NULL, claimed_by = NULL, due_at = now() + interval '1 second' "
                "WHERE id = $1",
                timer_id,
            )
        except asyncpg.UniqueViolationError:
            await self._pool.execute("DELETE FROM timers WHERE id = $1", timer_id)

    async def release_all(self) -> None:
        """Unfinished claims go back to pending now (at shutdown), rather than after `dead_after`."""
        await self._pool.execute(
            "UPDATE timers SET fired_at = NULL, claimed_by = NULL WHERE claimed_by = $1 "
            "AND NOT EXISTS (SELECT 1 FROM timers p "
            "WHERE p.target = timers.target AND p.kind = timers.kind "
            "AND p.fired_at IS NULL)",
            self._worker_id,
        )
