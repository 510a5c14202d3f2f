"""Orders and their line item workflows: row locks, saves, and the history and status event of
every state change, written in the change's statement.

Locks are always taken order first, then workflow, in every code path, so they cannot deadlock.
Callers hold an open transaction; nothing here commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.store._sql import Params, upsert_timer
from orchestrator.store.outbox import encode_outbox_headers
from orchestrator.store.rows import (
    ORDER_COLUMNS,
    WORKFLOW_COLUMNS,
    WORKFLOW_FIELDS,
    Change,
    OrderRow,
    OutboxMessage,
    WorkflowRow,
)
from orchestrator.store.timers import TimerKind

# --- locks and reads ---


async def lock_order(conn: asyncpg.Connection, order_id: str) -> OrderRow | None:
    record = await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE", order_id
    )
    return OrderRow.from_record(record) if record else None


async def lock_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> WorkflowRow | None:
    record = await conn.fetchrow(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = $1 FOR UPDATE", workflow_id
    )
    return WorkflowRow.from_record(record) if record else None


async def lock_order_and_workflow(
    conn: asyncpg.Connection, order_id: str, workflow_id: uuid.UUID
) -> tuple[OrderRow, WorkflowRow] | None:
    order = await lock_order(conn, order_id)
    row = await lock_workflow(conn, workflow_id) if order is not None else None
    return None if order is None or row is None else (order, row)


async def order_id_of(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> str | None:
    order_id: str | None = await conn.fetchval(
        "SELECT order_id FROM workflows WHERE workflow_id = $1", workflow_id
    )
    return order_id


async def load_order(conn: asyncpg.Connection, order_id: str) -> OrderRow | None:
    """The order without a lock (a dry run's read)."""
    record = await conn.fetchrow(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1", order_id)
    return OrderRow.from_record(record) if record else None


async def order_items(conn: asyncpg.Connection, order_id: str, *, state: str | None = None) -> list[Any]:
    """The order's line items in workflow id order (the order in which their timers and rows are
    touched everywhere): `workflow_id`, `line_item_id`, `state`, `context` (jsonb), `generation`."""
    records: list[Any] = await conn.fetch(
        "SELECT workflow_id, line_item_id, state, context, generation FROM workflows "
        "WHERE order_id = $1 AND ($2::text IS NULL OR state = $2) ORDER BY workflow_id",
        order_id,
        state,
    )
    return records


async def line_item_and_provider_order(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> Any:
    """`line_item_id` and its order's `provider_order_id` (for reading what the provider has)."""
    return await conn.fetchrow(
        "SELECT w.line_item_id, o.provider_order_id FROM workflows w JOIN orders o USING (order_id) "
        "WHERE w.workflow_id = $1",
        workflow_id,
    )


async def poll_targets(
    conn: asyncpg.Connection,
    *,
    subscription_id: str | None,
    provider_order_id: str | None,
    states: Sequence[str],
) -> list[uuid.UUID]:
    """Workflows in one of `states` that a provider event about this subscription or order concerns:
    the subscription's own, and those of its order that do not know their subscription yet (it may
    be theirs), not its siblings. Two index lookups, not one OR across the join: with 100k
    workflows waiting, the OR scanned every workflow in a polling state (87 ms at 15k)."""
    rows = await conn.fetch(
        """SELECT w.workflow_id FROM workflows w
           WHERE (w.context ->> 'subscription_id') = $1 AND w.state = ANY($3::text[])
           UNION
           SELECT w.workflow_id FROM orders o JOIN workflows w USING (order_id)
           WHERE o.provider_order_id = $2 AND w.state = ANY($3::text[])
             AND ($1::text IS NULL OR (w.context ->> 'subscription_id') IS NULL)
           ORDER BY workflow_id""",
        subscription_id,
        provider_order_id,
        list(states),
    )
    return [row["workflow_id"] for row in rows]


# --- writes ---


async def insert_order(
    conn: asyncpg.Connection, *, order_id: str, customer: dict[str, Any], metadata: dict[str, Any], state: str
) -> bool:
    """A new order; False if one with this id exists already."""
    created = await conn.fetchval(
        """INSERT INTO orders (order_id, customer, metadata, state) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING 1""",
        order_id,
        customer,
        metadata,
        state,
    )
    return bool(created)


# What a save writes back: every column but the line item's identity, which never changes, and the
# timestamps (`updated_at = now()`), as parameters $1, $2, ... in this order (`_AT` names them).
_NOT_SAVED = {"order_id", "line_item_id", "line_item_type", "definition_version", "created_at", "updated_at"}
_SAVED = tuple(name for name in WORKFLOW_FIELDS if name not in _NOT_SAVED)
_AT = {name: f"${i}" for i, name in enumerate(_SAVED, 1)}

_UPDATE_WORKFLOW = (
    "UPDATE workflows SET "
    + ", ".join(f"{name} = {_AT[name]}" for name in _SAVED if name != "workflow_id")
    + f", updated_at = now() WHERE workflow_id = {_AT['workflow_id']}"
)


def _saved_values(row: WorkflowRow) -> list[Any]:
    return [row.context.to_json() if name == "context" else getattr(row, name) for name in _SAVED]


def _history_and_event(
    p: Params, workflow: str, sequence: str, to_state: str, change: Change
) -> tuple[str, str]:
    """The `transitions` row's CTE and the `outbox` insert of one change, their values added to `p`."""
    history = f"""INSERT INTO transitions
               (workflow_id, sequence, event, from_state, to_state, cause, details, occurred_at)
           VALUES ({workflow}, {sequence}, {p(change.event)}, {p(change.from_state)}, {to_state},
                   {p(change.cause)}, {p(change.details)}, {p(change.occurred_at)})"""
    return history, _outbox_insert(p, change.message)


def _outbox_insert(p: Params, message: OutboxMessage) -> str:
    return (
        f"INSERT INTO outbox (topic, key, value, headers) VALUES ({p(message.topic)}, {p(message.key)}, "
        f"{p(message.value)}, {p(encode_outbox_headers(message.headers))})"
    )


async def save(
    conn: asyncpg.Connection,
    row: WorkflowRow,
    *,
    change: Change | None = None,
    next_step_at: datetime | None = None,
) -> None:
    """Store the row (its version bumped); with `change`, its history row and status event (its
    sequence bumped); with `next_step_at`, its next step. One statement: a transition used to be
    three round trips."""
    row.version += 1
    if change is not None:
        row.sequence += 1
    p = Params(*_saved_values(row))
    if change is None and next_step_at is None:
        await conn.execute(_UPDATE_WORKFLOW, *p.values)
        return
    parts = [f"saved AS ({_UPDATE_WORKFLOW})"]
    timer = ""
    if next_step_at is not None:
        timer = upsert_timer(
            workflow_id=_AT["workflow_id"],
            order_id="NULL",
            kind=p(str(TimerKind.STEP)),
            due_at=p(next_step_at),
        )
    if change is None:
        await conn.execute(f"WITH {parts[0]} {timer}", *p.values)
        return
    if timer:
        parts.append(f"next_step AS ({timer})")
    history, event = _history_and_event(p, _AT["workflow_id"], _AT["sequence"], _AT["state"], change)
    parts.append(f"history AS ({history})")
    await conn.execute(f"WITH {', '.join(parts)} {event}", *p.values)


async def insert_received(conn: asyncpg.Connection, rows: Sequence[tuple[WorkflowRow, Change]]) -> None:
    """New workflows in their first state: each row, its first history row and status event and
    its first step, all rows in one pipelined round trip (an order of five items used to take
    fifteen). Rows are written in list order, so their status events keep that order too."""
    args = []
    sql = ""
    for row, change in rows:
        row.sequence, row.version = 1, 1
        p = Params()
        workflow_id, state = p(row.workflow_id), p(row.state)
        history, event = _history_and_event(p, workflow_id, "1", state, change)
        first_step = upsert_timer(
            workflow_id=workflow_id,
            order_id="NULL",
            kind=p(str(TimerKind.STEP)),
            due_at=p(change.occurred_at),
            fresh=True,
        )
        # The same text for every row (the placeholders follow one order), so one prepared statement.
        sql = f"""WITH workflow AS (
            INSERT INTO workflows (workflow_id, order_id, line_item_id, line_item_type, definition_version,
                                   state, spec, secrets, context, generation, sequence, version)
            VALUES ({workflow_id}, {p(row.order_id)}, {p(row.line_item_id)}, {p(row.line_item_type)},
                    {p(row.definition_version)}, {state}, {p(row.spec)}, {p(row.secrets)},
                    {p(row.context.to_json())}, 0, 1, 1)
        ),
        history AS ({history}),
        first_step AS ({first_step})
        {event}"""
        args.append(p.values)
    if args:
        await conn.executemany(sql, args)


async def lock_order_states(conn: asyncpg.Connection, order_id: str) -> Any:
    """Lock the order; its `state`, `status_sequence` and its items' `states`, or None."""
    return await conn.fetchrow(
        "SELECT state, status_sequence, "
        "ARRAY(SELECT w.state FROM workflows w WHERE w.order_id = $1) AS states "
        "FROM orders WHERE order_id = $1 FOR UPDATE",
        order_id,
    )


async def save_order_state(
    conn: asyncpg.Connection, order_id: str, *, state: str, sequence: int, message: OutboxMessage
) -> None:
    """The order's derived state and its status event, in one statement."""
    p = Params(order_id, state, sequence)
    event = _outbox_insert(p, message)
    await conn.execute(
        "WITH changed AS (UPDATE orders SET state = $2, status_sequence = $3, updated_at = now() "
        f"WHERE order_id = $1) {event}",
        *p.values,
    )


async def set_provider_order_id(
    conn: asyncpg.Connection, order_id: str, provider_order_id: str | None
) -> None:
    await conn.execute(
        "UPDATE orders SET provider_order_id = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        provider_order_id,
    )


async def set_submitted(conn: asyncpg.Connection, order_id: str, *, at: datetime) -> None:
    await conn.execute("UPDATE orders SET submitted_at = $2 WHERE order_id = $1", order_id, at)


async def set_cancelled(conn: asyncpg.Connection, order_id: str, *, at: datetime) -> None:
    await conn.execute("UPDATE orders SET cancelled_at = $2 WHERE order_id = $1", order_id, at)


async def set_order_generation(conn: asyncpg.Connection, order_id: str, generation: int) -> None:
    await conn.execute(
        "UPDATE orders SET generation = $2, updated_at = now() WHERE order_id = $1", order_id, generation
    )
