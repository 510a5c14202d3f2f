"""Cancel and "retry now": small operator actions on one workflow, through the engine's journal.

Both take the order row lock, then the workflow row lock (the engine's order), and write in one
transaction, so they emit the usual status events and cannot race a running step.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.engine._journal import (
    ORDER_STEP,
    STEP,
    lock_workflow,
    record_change,
    refresh_order_state,
    save_workflow,
    schedule,
)
from orchestrator.engine._rows import WorkflowRow
from orchestrator.engine._steps import lock_order
from orchestrator.machines import Transitioned, is_settled, restore, try_event
from orchestrator.ops._errors import ActionRefused, NotFound
from orchestrator.ops._replay import db_now

CANCEL_COMMENT_MAX = 200


async def _lock(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> WorkflowRow:
    order_id = await conn.fetchval("SELECT order_id FROM workflows WHERE workflow_id = $1", workflow_id)
    if order_id is None:
        raise NotFound(f"no workflow {workflow_id}", workflow_id=str(workflow_id))
    await lock_order(conn, order_id)
    row = await lock_workflow(conn, workflow_id)
    assert row is not None
    return row


async def cancel_workflow(
    conn: asyncpg.Connection,
    workflow_id: uuid.UUID,
    *,
    actor: str,
    reason: str,
    audit_id: int,
    status_topic: str,
    now: datetime,
) -> dict[str, Any]:
    """Fire the machine's `cancel`; the engine then compensates (removes the item from the provider
    order, or cancels the subscription) from `cancelling`."""
    row = await _lock(conn, workflow_id)
    previous = row.current
    machine = restore(line_item_type=row.line_item_type, definition_version=row.definition_version, model=row)
    outcome = try_event(machine, event="cancel")
    if not isinstance(outcome, Transitioned):
        raise ActionRefused(f"a workflow in {previous} cannot be cancelled", state=previous)
    if not outcome.changed:
        return {"workflow_id": str(workflow_id), "result": "already_cancelling", "state": row.current}
    # Connect's cancel reasons: OTHER needs a comment, which carries the operator's reason.
    row.context["cancel_reason"] = "OTHER"
    row.context["cancel_comment"] = f"operator {actor}: {reason}"[:CANCEL_COMMENT_MAX]
    await record_change(
        conn,
        row,
        event="cancel",
        previous=previous,
        cause=f"operator:{actor}",
        now=now,
        status_topic=status_topic,
        details={"audit_id": audit_id, "reason": reason},
    )
    await save_workflow(conn, row)
    due = await db_now(conn)
    await schedule(conn, kind=STEP, workflow_id=row.workflow_id, due_at=due)
    await refresh_order_state(conn, row.order_id, now=now, status_topic=status_topic)
    await schedule(conn, kind=ORDER_STEP, order_id=row.order_id, due_at=due)
    return {
        "workflow_id": str(workflow_id),
        "result": "cancelling",
        "previous_state": previous,
        "state": row.current,
    }


async def retry_now(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> dict[str, Any]:
    """Run the workflow's next step now instead of after its backoff or Retry-After; an order step
    waiting on a backoff for this order is moved too. A settled workflow has nothing to retry."""
    row = await _lock(conn, workflow_id)
    if is_settled(row.current):
        hint = "; use replay" if row.current == "failed" else ""
        raise ActionRefused(f"the workflow is {row.current}: nothing is waiting{hint}", state=row.current)
    pending = await conn.fetchrow(
        "SELECT due_at, fired_at, claimed_by FROM timers WHERE workflow_id = $1 AND kind = $2 "
        "ORDER BY fired_at NULLS FIRST LIMIT 1",
        workflow_id,
        STEP,
    )
    due = await db_now(conn)
    await schedule(conn, kind=STEP, workflow_id=workflow_id, due_at=due)
    moved_order = await conn.fetchval(
        "UPDATE timers SET due_at = $3 "
        "WHERE order_id = $1 AND kind = $2 AND fired_at IS NULL AND due_at > $3 RETURNING 1",
        row.order_id,
        ORDER_STEP,
        due,
    )
    previous_due = pending["due_at"] if pending is not None and pending["fired_at"] is None else None
    return {
        "workflow_id": str(workflow_id),
        "result": "scheduled_now",
        "state": row.current,
        "previous_due_at": previous_due.isoformat() if previous_due else None,
        "running": bool(pending is not None and pending["fired_at"] is not None),
        "order_step_moved": bool(moved_order),
    }
