"""Writes that must happen in the same transaction as a state change: the history row, the status
event in the outbox, the order's derived state (and its own event when it changes), and timers.

Callers hold the workflow's row lock (and the order's, for order-level changes) and an open
transaction; nothing here commits.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.engine._rows import WORKFLOW_COLUMNS, WorkflowRow
from orchestrator.events import (
    LineItemState,
    LineItemStateChanged,
    OrderState,
    OrderStateChanged,
    StepError,
    encode_status_event,
)
from orchestrator.kafka import encode_outbox_headers
from orchestrator.machines import derive_order_state

STATUS_SOURCE = "urn:provisioning-orchestrator"
# Timer kinds: the next step of a line item workflow, and of its order.
STEP = "step"
ORDER_STEP = "order_step"


def _status_data(row: WorkflowRow, *, previous: str | None, now: datetime) -> LineItemStateChanged:
    ctx = row.context
    temporary = ctx.get("temporary_msisdn") if row.state == LineItemState.TEMP_NUMBER_ACTIVE else None
    error = None
    if row.state == LineItemState.FAILED and row.error is not None:
        error = StepError(
            code=row.error.get("code", "unknown"),
            message=row.error.get("message", ""),
            retryable=bool(row.error.get("retryable", False)),
            step=row.error.get("step", "unknown"),
        )
    return LineItemStateChanged(
        order_id=row.order_id,
        line_item_id=row.line_item_id,
        line_item_type=row.line_item_type,
        workflow_id=str(row.workflow_id),
        state=row.current,
        previous_state=previous,
        sequence=row.sequence,
        occurred_at=now,
        msisdn=ctx.get("msisdn"),
        temporary_msisdn=temporary,
        ported_msisdn=ctx.get("ported_msisdn") if temporary else None,
        subscription_id=ctx.get("subscription_id"),
        scheduled_activation_date=ctx.get("scheduled_activation_date")
        if row.state == LineItemState.ACTIVATION_SCHEDULED
        else None,
        error=error,
    )


_INSERT_RECEIVED = """
WITH workflow AS (
    INSERT INTO workflows (workflow_id, order_id, line_item_id, line_item_type, definition_version,
                           state, spec, secrets, context, generation, sequence, version)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 1, 1)
),
history AS (
    INSERT INTO transitions (workflow_id, sequence, event, from_state, to_state, cause, details, occurred_at)
    VALUES ($1, 1, $10, $11, $6, $12, $13, $14)
),
first_step AS (
    INSERT INTO timers (workflow_id, kind, due_at, payload) VALUES ($1, 'step', $14, '{}')
)
INSERT INTO outbox (topic, key, value, headers) VALUES ($15, $16, $17, $18)
"""


async def insert_received(
    conn: asyncpg.Connection, rows: list[WorkflowRow], *, cause: str, now: datetime, status_topic: str
) -> None:
    """New workflows in their first state: each row, its `received` history and status event and
    its first step, all rows in one pipelined round trip (an order of five items used to take
    fifteen). Rows are written in list order, so their status events keep that order too."""
    args = []
    for row in rows:
        row.sequence, row.version = 1, 1
        args.append(
            (
                row.workflow_id,
                row.order_id,
                row.line_item_id,
                row.line_item_type,
                row.definition_version,
                row.state,
                row.spec,
                row.secrets,
                row.context,
                *_change_args(row, event="received", previous="", cause=cause, details=None, now=now,
                              status_topic=status_topic),
            )
        )  # fmt: skip
    await conn.executemany(_INSERT_RECEIVED, args)


async def lock_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> WorkflowRow | None:
    record = await conn.fetchrow(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = $1 FOR UPDATE", workflow_id
    )
    return WorkflowRow.from_record(record) if record else None


_SAVE = """UPDATE workflows SET state = $2, spec = $3, secrets = $4, context = $5, generation = $6,
                  sequence = $7, version = $8, resume_state = $9, error = $10, attempts = $11,
                  updated_at = now()
           WHERE workflow_id = $1"""
# A pending timer is moved earlier, never later: a poke cannot postpone a step.
_UPSERT_TIMER = """INSERT INTO timers (workflow_id, order_id, kind, due_at, payload)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (target, kind) WHERE fired_at IS NULL
           DO UPDATE SET due_at = LEAST(timers.due_at, EXCLUDED.due_at)"""


async def save_workflow(
    conn: asyncpg.Connection, row: WorkflowRow, *, next_step_at: datetime | None = None
) -> None:
    """Store the row; with `next_step_at`, also schedule its next step (one statement, not two)."""
    row.version += 1
    if next_step_at is not None:
        await conn.execute(
            f"WITH saved AS ({_SAVE}) "
            "INSERT INTO timers (workflow_id, kind, due_at, payload) VALUES ($1, $12, $13, '{}') "
            "ON CONFLICT (target, kind) WHERE fired_at IS NULL "
            "DO UPDATE SET due_at = LEAST(timers.due_at, EXCLUDED.due_at)",
            *_save_args(row),
            STEP,
            next_step_at,
        )
        return
    await conn.execute(_SAVE, *_save_args(row))


def _save_args(row: WorkflowRow) -> tuple[Any, ...]:
    return (
        row.workflow_id,
        row.state,
        row.spec,
        row.secrets,
        row.context,
        row.generation,
        row.sequence,
        row.version,
        row.resume_state,
        row.error,
        row.attempts,
    )


async def record_change(
    conn: asyncpg.Connection,
    row: WorkflowRow,
    *,
    event: str,
    previous: str | None,
    cause: str,
    now: datetime,
    status_topic: str,
    details: dict[str, Any] | None = None,
) -> None:
    """After the machine moved `row` from `previous` to `row.state`: history, status event, order
    state. `previous=None` is the workflow's first event (`received`)."""
    row.sequence += 1
    # History row and status event in one statement: a round trip less on every change.
    await conn.execute(
        """WITH history AS (
               INSERT INTO transitions
                   (workflow_id, sequence, event, from_state, to_state, cause, details, occurred_at)
               VALUES ($1, $2, $4, $5, $3, $6, $7, $8)
           )
           INSERT INTO outbox (topic, key, value, headers) VALUES ($9, $10, $11, $12)""",
        row.workflow_id,
        row.sequence,
        row.state,
        *_change_args(row, event=event, previous=previous or "", cause=cause, details=details, now=now,
                      status_topic=status_topic),
    )  # fmt: skip


def _change_args(
    row: WorkflowRow,
    *,
    event: str,
    previous: str,
    cause: str,
    details: dict[str, Any] | None,
    now: datetime,
    status_topic: str,
) -> tuple[Any, ...]:
    """A change's history and status-event parameters, in this order: event, from state, cause,
    details, time, then the outbox row (topic, key, value, headers)."""
    record = encode_status_event(
        data=_status_data(row, previous=previous or None, now=now), source=STATUS_SOURCE
    )
    return (
        event,
        previous,
        cause,
        details or {},
        now,
        status_topic,
        record.key,
        record.value,
        encode_outbox_headers(record.headers),
    )


_PENDING_STEP = """INSERT INTO timers (workflow_id, kind, due_at, payload) VALUES ($1, 'step', $21, '{}')
           ON CONFLICT (target, kind) WHERE fired_at IS NULL
           DO UPDATE SET due_at = LEAST(timers.due_at, EXCLUDED.due_at)"""


async def save_changed(
    conn: asyncpg.Connection,
    row: WorkflowRow,
    *,
    event: str,
    previous: str,
    cause: str,
    now: datetime,
    status_topic: str,
    details: dict[str, Any] | None = None,
    next_step_at: datetime | None = None,
) -> None:
    """`record_change` and `save_workflow` in one statement: the engine's every transition did
    them back to back, two round trips where one does."""
    row.sequence += 1
    row.version += 1
    timer = f", next_step AS ({_PENDING_STEP})" if next_step_at is not None else ""
    args: list[Any] = [
        *_save_args(row),
        *_change_args(
            row,
            event=event,
            previous=previous,
            cause=cause,
            details=details,
            now=now,
            status_topic=status_topic,
        ),
    ]
    if next_step_at is not None:
        args.append(next_step_at)
    await conn.execute(
        f"""WITH saved AS ({_SAVE}),
           history AS (
               INSERT INTO transitions
                   (workflow_id, sequence, event, from_state, to_state, cause, details, occurred_at)
               VALUES ($1, $7, $12, $13, $2, $14, $15, $16)
           ){timer}
           INSERT INTO outbox (topic, key, value, headers) VALUES ($17, $18, $19, $20)""",
        *args,
    )


async def refresh_order_state(
    conn: asyncpg.Connection, order_id: str, *, now: datetime, status_topic: str
) -> OrderState | None:
    """Recompute the order's derived state from its items; emit an order event if it changed.

    Locks the order row, so concurrent item changes of one order serialise here and the order's
    own sequence stays gap-free.
    """
    order = await conn.fetchrow(
        "SELECT state, status_sequence, "
        "ARRAY(SELECT w.state FROM workflows w WHERE w.order_id = $1) AS states "
        "FROM orders WHERE order_id = $1 FOR UPDATE",
        order_id,
    )
    if order is None or not order["states"]:
        return None
    states: list[str] = list(order["states"])
    derived = derive_order_state(states)
    if order["state"] == derived.value and order["status_sequence"] > 0:
        return derived
    sequence = order["status_sequence"] + 1
    counts = Counter(states)
    data = OrderStateChanged(
        order_id=order_id,
        state=derived,
        previous_state=OrderState(order["state"]) if order["status_sequence"] > 0 else None,
        sequence=sequence,
        occurred_at=now,
        line_item_counts={LineItemState(state): n for state, n in counts.items()},
        line_item_total=len(states),
    )
    record = encode_status_event(data=data, source=STATUS_SOURCE)
    await conn.execute(
        """WITH changed AS (
               UPDATE orders SET state = $2, status_sequence = $3, updated_at = now() WHERE order_id = $1
           )
           INSERT INTO outbox (topic, key, value, headers) VALUES ($4, $5, $6, $7)""",
        order_id,
        derived.value,
        sequence,
        status_topic,
        record.key,
        record.value,
        encode_outbox_headers(record.headers),
    )
    return derived


async def schedule(
    conn: asyncpg.Connection,
    *,
    kind: str,
    due_at: datetime,
    workflow_id: uuid.UUID | None = None,
    order_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Make sure a timer of `kind` for this workflow/order fires by `due_at`: an existing pending
    timer is moved earlier, never later (a poke cannot postpone a step)."""
    await conn.execute(
        _UPSERT_TIMER,
        workflow_id,
        None if workflow_id else order_id,
        kind,
        due_at,
        json.loads(json.dumps(payload or {})),
    )
