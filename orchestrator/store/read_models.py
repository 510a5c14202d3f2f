"""Read models: what operators (`orchestrator.ops`) and the admin surface (`orchestrator.admin`) read.

Reads only, no locks. Functions return asyncpg records (or plain counts); shaping and redaction
stay with the caller. Whatever is shown to people is read through the named column lists below:
never `SELECT *`, and never the `workflows.secrets` column (the porting credentials must not leave
the database this way). The one exception, `select_workflow_rows`, loads the engine's full row for
a replay and is never shown.

The replay's other reads are the engine's own: `workflows.load_order`, `workflows.order_items`,
`provider_calls.unsettled_calls`, `timers.db_now`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.store._sql import Params
from orchestrator.store.rows import ORDER_COLUMNS, WORKFLOW_COLUMNS, WorkflowRow

_SUMMARY_COLUMNS = """w.workflow_id, w.order_id, w.line_item_id, w.line_item_type, w.state, w.resume_state,
    w.error, w.attempts, w.generation, w.version, w.created_at, w.updated_at,
    coalesce(w.context ->> 'msisdn', w.spec ->> 'msisdn') AS msisdn"""
# `holds_secrets` says whether credentials are still kept without reading them.
_DETAIL_COLUMNS = f"""{_SUMMARY_COLUMNS}, w.definition_version, w.sequence, w.spec, w.context,
    (w.secrets IS NOT NULL) AS holds_secrets"""
_ORDER_DETAIL_COLUMNS = f"{ORDER_COLUMNS}, created_at, updated_at"
_CALL_COLUMNS = """id, workflow_id, order_id, step, generation, idempotency_key, method, path, body, status,
    attempts, response_status, response_body, error, latency_ms, created_at, first_sent_at, last_sent_at,
    completed_at"""
_TIMER_COLUMNS = "id, kind, workflow_id, order_id, due_at, claimed_by, fired_at"


@dataclass(frozen=True)
class WorkflowQuery:
    """Which workflows, in the store's terms. Every condition given is ANDed; empty or None is "any"."""

    workflow_ids: Sequence[uuid.UUID] = ()
    states: Sequence[str] = ()
    line_item_type: str | None = None
    order_id: str | None = None
    msisdn: str | None = None  # assigned, temporary or ported
    error_code: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    updated_before: datetime | None = None
    excluded_states: Sequence[str] = ()
    in_jeopardy: bool | None = None  # jeopardy raised and not cleared (`context.jeopardy`)
    limit: int = 100


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Any]:
    return list(await conn.fetch(sql, *args))


def where_sql(query: WorkflowQuery) -> tuple[str, list[Any]]:
    """`WHERE ...` over `workflows w` and its parameters ($1...); "" when `query` is "any"."""
    conditions: list[str] = []
    param = Params()
    if query.workflow_ids:
        conditions.append(f"w.workflow_id = ANY({param(list(query.workflow_ids))}::uuid[])")
    if query.states:
        conditions.append(f"w.state = ANY({param(list(query.states))}::text[])")
    if query.line_item_type:
        conditions.append(f"w.line_item_type = {param(query.line_item_type)}")
    if query.order_id:
        conditions.append(f"w.order_id = {param(query.order_id)}")
    if query.msisdn:
        p = param(query.msisdn)
        conditions.append(
            f"(w.spec ->> 'msisdn' = {p} OR w.context ->> 'msisdn' = {p} "
            f"OR w.context ->> 'temporary_msisdn' = {p} OR w.context ->> 'ported_msisdn' = {p})"
        )
    if query.error_code:
        conditions.append(f"w.error ->> 'code' = {param(query.error_code)}")
    if query.created_before is not None:
        conditions.append(f"w.created_at <= {param(query.created_before)}")
    if query.created_after is not None:
        conditions.append(f"w.created_at >= {param(query.created_after)}")
    if query.updated_before is not None:
        conditions.append(f"w.updated_at <= {param(query.updated_before)}")
    if query.excluded_states:
        conditions.append(f"w.state <> ALL({param(list(query.excluded_states))}::text[])")
    if query.in_jeopardy is not None:
        conditions.append(f"{'' if query.in_jeopardy else 'NOT '}(w.context ? 'jeopardy')")
    return ("WHERE " + " AND ".join(conditions)) if conditions else "", param.values


async def workflow_summaries(conn: asyncpg.Connection, query: WorkflowQuery) -> list[Any]:
    """Matching workflows, newest change first, at most `query.limit`."""
    where, params = where_sql(query)
    return await _fetch(
        conn,
        f"SELECT {_SUMMARY_COLUMNS} FROM workflows w {where} "
        f"ORDER BY w.updated_at DESC, w.workflow_id LIMIT {int(query.limit)}",
        *params,
    )


async def workflow_counts_by_state(
    conn: asyncpg.Connection, query: WorkflowQuery | None = None
) -> dict[str, int]:
    """Matching workflows per state (all of them, whatever `query.limit`), ordered by state."""
    where, params = where_sql(query or WorkflowQuery())
    rows = await conn.fetch(
        f"SELECT w.state, count(*) AS n FROM workflows w {where} GROUP BY w.state ORDER BY w.state", *params
    )
    return {r["state"]: int(r["n"]) for r in rows}


async def select_workflow_rows(conn: asyncpg.Connection, query: WorkflowQuery) -> list[WorkflowRow]:
    """The engine's rows of the matching workflows, without a lock (secrets included: never show
    these), by order then workflow, at most `query.limit`."""
    where, params = where_sql(query)
    records = await conn.fetch(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows w {where} "
        f"ORDER BY order_id, workflow_id LIMIT {int(query.limit)}",
        *params,
    )
    return [WorkflowRow.from_record(r) for r in records]


async def workflow_detail(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> Any | None:
    return await conn.fetchrow(
        f"SELECT {_DETAIL_COLUMNS} FROM workflows w WHERE w.workflow_id = $1", workflow_id
    )


async def workflow_details_of_order(conn: asyncpg.Connection, order_id: str) -> list[Any]:
    return await _fetch(
        conn,
        f"SELECT {_DETAIL_COLUMNS} FROM workflows w WHERE w.order_id = $1 ORDER BY w.line_item_id",
        order_id,
    )


async def transitions_of_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> list[Any]:
    return await _fetch(
        conn,
        "SELECT sequence, event, from_state, to_state, cause, details, occurred_at FROM transitions "
        "WHERE workflow_id = $1 ORDER BY sequence",
        workflow_id,
    )


async def order_detail(conn: asyncpg.Connection, order_id: str) -> Any | None:
    """The order row with its created/updated times."""
    return await conn.fetchrow(f"SELECT {_ORDER_DETAIL_COLUMNS} FROM orders WHERE order_id = $1", order_id)


async def calls_of_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> list[Any]:
    return await _fetch(
        conn, f"SELECT {_CALL_COLUMNS} FROM provider_calls WHERE workflow_id = $1 ORDER BY id", workflow_id
    )


async def calls_of_order(conn: asyncpg.Connection, order_id: str) -> list[Any]:
    """The order's own calls (create, submit, cancel the provider order), not its items'."""
    return await _fetch(
        conn,
        f"SELECT {_CALL_COLUMNS} FROM provider_calls WHERE order_id = $1 AND workflow_id IS NULL ORDER BY id",
        order_id,
    )


async def timers_of_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> list[Any]:
    return await _fetch(
        conn, f"SELECT {_TIMER_COLUMNS} FROM timers WHERE workflow_id = $1 ORDER BY due_at", workflow_id
    )


async def timers_of_order(conn: asyncpg.Connection, order_id: str) -> list[Any]:
    """The order step's timers, not its items'."""
    return await _fetch(
        conn,
        f"SELECT {_TIMER_COLUMNS} FROM timers WHERE order_id = $1 AND workflow_id IS NULL ORDER BY due_at",
        order_id,
    )


async def status_events_of_order(conn: asyncpg.Connection, order_id: str) -> list[Any]:
    """Outbox rows (`id`, `value`, `created_at`, `published_at`) keyed by the order: every status
    event of the order and of its line items."""
    return await _fetch(
        conn,
        "SELECT id, value, created_at, published_at FROM outbox WHERE key = $1 ORDER BY id",
        order_id.encode(),
    )


async def ping(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """One round trip: the database answers queries (readiness)."""
    await conn.fetchval("SELECT 1")


async def jeopardy_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Workflows in jeopardy (raised, not cleared), per reason."""
    rows = await conn.fetch(
        "SELECT context -> 'jeopardy' ->> 'reason' AS reason, count(*) AS n FROM workflows "
        "WHERE context ? 'jeopardy' GROUP BY 1 ORDER BY 1"
    )
    return {str(r["reason"]): int(r["n"]) for r in rows}


async def transition_counts_by_state(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT to_state, count(*) n FROM transitions GROUP BY 1")
    return {r["to_state"]: int(r["n"]) for r in rows}


async def call_counts(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """(step, status, count) over every provider call."""
    rows = await conn.fetch("SELECT step, status, count(*) n FROM provider_calls GROUP BY 1, 2")
    return [(r["step"], r["status"], int(r["n"])) for r in rows]


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative counts of calls at or under each bound, their latency sum, and their count."""

    buckets: list[int]
    sum_ms: float
    count: int


async def call_latency(conn: asyncpg.Connection, bounds_ms: Sequence[int]) -> LatencyHistogram:
    """The latency of the last attempt of every provider call that has one."""
    buckets = ", ".join(f"count(*) FILTER (WHERE latency_ms <= {int(b)})" for b in bounds_ms)
    row = await conn.fetchrow(
        f"SELECT {buckets}, coalesce(sum(latency_ms), 0) AS total, count(latency_ms) AS n "
        "FROM provider_calls WHERE latency_ms IS NOT NULL"
    )
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return LatencyHistogram(
        buckets=[int(row[i]) for i in range(len(bounds_ms))], sum_ms=float(row["total"]), count=int(row["n"])
    )


@dataclass(frozen=True)
class TimerLag:
    overdue: int  # due and not fired
    lag_s: float  # how late the most overdue one is


async def timer_lag(conn: asyncpg.Connection) -> TimerLag:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM max(now() - due_at)), 0) AS lag "
        "FROM timers WHERE fired_at IS NULL AND due_at <= now()"
    )
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return TimerLag(overdue=int(row["n"]), lag_s=float(row["lag"]))
