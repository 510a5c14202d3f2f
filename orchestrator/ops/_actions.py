"""Cancel and "retry now": small operator actions on one workflow, through the engine's journal.

Both take the order row lock, then the workflow row lock (the engine's order), and write in one
transaction, so they emit the usual status events and cannot race a running step.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.engine import Journal, Move
from orchestrator.events import LineItemState
from orchestrator.machines import Transitioned, is_settled
from orchestrator.ops._errors import ActionRefused, NotFound
from orchestrator.store import timers
from orchestrator.store import workflows as store
from orchestrator.store.rows import WorkflowRow

CANCEL_COMMENT_MAX = 200


async def _lock(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> WorkflowRow:
    order_id = await store.order_id_of(conn, workflow_id)
    locked = await store.lock_order_and_workflow(conn, order_id, workflow_id) if order_id else None
    if locked is None:
        raise NotFound(f"no workflow {workflow_id}", workflow_id=str(workflow_id))
    return locked[1]


async def cancel_workflow(
    conn: asyncpg.Connection,
    workflow_id: uuid.UUID,
    *,
    actor: str,
    reason: str,
    audit_id: int,
    journal: Journal,
    now: datetime,
) -> dict[str, Any]:
    """Fire the machine's `cancel`; the engine then compensates (removes the item from the provider
    order, or cancels the subscription) from `cancelling`."""
    row = await _lock(conn, workflow_id)
    previous = row.current
    if previous == LineItemState.CANCELLING:
        return {"workflow_id": str(workflow_id), "result": "already_cancelling", "state": row.current}
    # Connect's cancel reasons: OTHER needs a comment, which carries the operator's reason.
    context = {
        "cancel_reason": "OTHER",
        "cancel_comment": f"operator {actor}: {reason}"[:CANCEL_COMMENT_MAX],
        "settle_first": True,  # a call its worker left unanswered is settled before the undo
    }
    outcome = await journal.transition(
        conn,
        row,
        Move("cancel", context=context),
        now=now,
        cause=f"operator:{actor}",
        step_due=await timers.db_now(conn),
        details={"audit_id": audit_id, "reason": reason},
        wake_order=True,
    )
    if not isinstance(outcome, Transitioned):
        raise ActionRefused(f"a workflow in {previous} cannot be cancelled", state=previous)
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
        hint = "; use replay" if row.current == LineItemState.FAILED else ""
        raise ActionRefused(f"the workflow is {row.current}: nothing is waiting{hint}", state=row.current)
    pending = await timers.pending_step(conn, workflow_id)
    due = await timers.db_now(conn)
    await timers.schedule(conn, kind=timers.TimerKind.STEP, workflow_id=workflow_id, due_at=due)
    moved_order = await timers.advance_order_step(conn, row.order_id, due_at=due)
    previous_due = pending["due_at"] if pending is not None and pending["fired_at"] is None else None
    return {
        "workflow_id": str(workflow_id),
        "result": "scheduled_now",
        "state": row.current,
        "previous_due_at": previous_due.isoformat() if previous_due else None,
        "running": bool(pending is not None and pending["fired_at"] is not None),
        "order_step_moved": moved_order,
    }
