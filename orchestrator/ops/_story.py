"""Read side for operators: `list` (which workflows match) and `show` (the whole story of one
workflow or one order). Everything returned is JSON-ready and redacted: the rows come from
`orchestrator.store.read_models`, which never reads the `workflows.secrets` column, and what they
carry from outside (bodies, answers, specs, contexts) passes through `orchestrator.events.redact`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.events import redact
from orchestrator.ops._errors import NotFound
from orchestrator.ops._filters import WorkflowFilter
from orchestrator.store import audit, read_models


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(record: Any) -> dict[str, Any]:
    error = record["error"] or {}
    return {
        "workflow_id": str(record["workflow_id"]),
        "order_id": record["order_id"],
        "line_item_id": record["line_item_id"],
        "line_item_type": record["line_item_type"],
        "state": record["state"],
        "resume_state": record["resume_state"],
        "error_code": error.get("code"),
        "error_step": error.get("step"),
        "attempts": record["attempts"],
        "generation": record["generation"],
        "version": record["version"],
        "msisdn": record["msisdn"],
        "created_at": _iso(record["created_at"]),
        "updated_at": _iso(record["updated_at"]),
    }


async def list_workflows(conn: asyncpg.Connection, flt: WorkflowFilter, *, now: datetime) -> dict[str, Any]:
    """Matching workflows (newest change first, at most `limit`), the total, and counts per state."""
    query = flt.query(now=now)
    rows = await read_models.workflow_summaries(conn, query)
    by_state = await read_models.workflow_counts_by_state(conn, query)
    return {
        "filter": flt.to_dict(),
        "total": sum(by_state.values()),
        "counts_by_state": by_state,
        "workflows": [summary(r) for r in rows],
    }


async def state_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Workflows per state over the whole table (the console's header)."""
    return await read_models.workflow_counts_by_state(conn)


def _body(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return redact(json.loads(raw))
    except ValueError:
        return {"undecodable_bytes": len(raw)}


def _call(record: Any) -> dict[str, Any]:
    body = record["body"]
    return {
        "id": record["id"],
        "workflow_id": str(record["workflow_id"]) if record["workflow_id"] else None,
        "order_level": record["workflow_id"] is None,
        "step": record["step"],
        "generation": record["generation"],
        "idempotency_key": record["idempotency_key"],
        "method": record["method"],
        "path": record["path"],
        "body": _body(body),
        "body_sha256": hashlib.sha256(body).hexdigest() if body is not None else None,
        "status": record["status"],
        "attempts": record["attempts"],
        "response_status": record["response_status"],
        "response_body": redact(record["response_body"]),
        "error": redact(record["error"]),
        "latency_ms": record["latency_ms"],
        "created_at": _iso(record["created_at"]),
        "first_sent_at": _iso(record["first_sent_at"]),
        "last_sent_at": _iso(record["last_sent_at"]),
        "completed_at": _iso(record["completed_at"]),
    }


def _timer(record: Any) -> dict[str, Any]:
    return {
        "id": record["id"],
        "kind": record["kind"],
        "workflow_id": str(record["workflow_id"]) if record["workflow_id"] else None,
        "order_id": record["order_id"],
        "due_at": _iso(record["due_at"]),
        "claimed_by": record["claimed_by"],
        "fired_at": _iso(record["fired_at"]),
        "pending": record["fired_at"] is None,
    }


def _status_event(record: Any) -> dict[str, Any]:
    try:
        event = json.loads(record["value"])
    except ValueError:
        event = {}
    data = event.get("data") or {}
    return {
        "outbox_id": record["id"],
        "type": event.get("type"),
        "id": event.get("id"),
        "workflow_id": data.get("workflowId"),
        "line_item_id": data.get("lineItemId"),
        "state": data.get("state"),
        "previous_state": data.get("previousState"),
        "sequence": data.get("sequence"),
        "error_code": (data.get("error") or {}).get("code"),
        "created_at": _iso(record["created_at"]),
        "published_at": _iso(record["published_at"]),
    }


def _audit(record: Any) -> dict[str, Any]:
    return {
        "id": record["id"],
        "actor": record["actor"],
        "action": record["action"],
        "reason": record["reason"],
        "workflow_ids": [str(w) for w in record["workflow_ids"]],
        "filter": record["filter"],
        "plan": record["plan"],
        "outcome": record["outcome"],
        "created_at": _iso(record["created_at"]),
        "completed_at": _iso(record["completed_at"]),
    }


async def _workflow_parts(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> dict[str, Any]:
    transitions = await read_models.transitions_of_workflow(conn, workflow_id)
    calls = await read_models.calls_of_workflow(conn, workflow_id)
    timers = await read_models.timers_of_workflow(conn, workflow_id)
    return {
        "transitions": [
            {
                "sequence": t["sequence"],
                "event": t["event"],
                "from_state": t["from_state"] or None,
                "to_state": t["to_state"],
                "cause": t["cause"],
                "details": redact(t["details"]),
                "occurred_at": _iso(t["occurred_at"]),
            }
            for t in transitions
        ],
        "provider_calls": [_call(c) for c in calls],
        "timers": [_timer(t) for t in timers],
    }


def _detail(record: Any) -> dict[str, Any]:
    return {
        **summary(record),
        "definition_version": record["definition_version"],
        "sequence": record["sequence"],
        "error": redact(record["error"]),
        "spec": redact(record["spec"]),
        "context": redact(record["context"]),
        "holds_secrets": record["holds_secrets"],
    }


async def _order_parts(conn: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    order = await read_models.order_detail(conn, order_id)
    if order is None:
        raise NotFound(f"no order {order_id!r}", order_id=order_id)
    calls = await read_models.calls_of_order(conn, order_id)
    timers = await read_models.timers_of_order(conn, order_id)
    events = await read_models.status_events_of_order(conn, order_id)
    return {
        "order": {
            "order_id": order["order_id"],
            "provider_order_id": order["provider_order_id"],
            "state": order["state"],
            "status_sequence": order["status_sequence"],
            "generation": order["generation"],
            "customer": redact(order["customer"]),
            "metadata": redact(order["metadata"]),
            "submitted_at": _iso(order["submitted_at"]),
            "cancelled_at": _iso(order["cancelled_at"]),
            "created_at": _iso(order["created_at"]),
            "updated_at": _iso(order["updated_at"]),
        },
        "order_calls": [_call(c) for c in calls],
        "order_timers": [_timer(t) for t in timers],
        "status_events": [_status_event(e) for e in events],
    }


async def _audits(conn: asyncpg.Connection, workflow_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    return [_audit(r) for r in await audit.audits_touching(conn, workflow_ids)]


async def show_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> dict[str, Any]:
    """One line item's story: its row, transitions, calls (its own and its order's), timers,
    the status events it emitted, and operator actions on it."""
    record = await read_models.workflow_detail(conn, workflow_id)
    if record is None:
        raise NotFound(f"no workflow {workflow_id}", workflow_id=str(workflow_id))
    order = await _order_parts(conn, record["order_id"])
    mine = str(workflow_id)
    return {
        "kind": "workflow",
        "workflow": _detail(record),
        **await _workflow_parts(conn, workflow_id),
        "order": order["order"],
        "order_calls": order["order_calls"],
        "status_events": [e for e in order["status_events"] if e["workflow_id"] == mine],
        "audit": await _audits(conn, [workflow_id]),
    }


async def show_order(conn: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    """A whole CRM order: the order row, every line item's story, order-level calls and events."""
    parts = await _order_parts(conn, order_id)
    records = await read_models.workflow_details_of_order(conn, order_id)
    workflows = []
    for record in records:
        workflows.append({**_detail(record), **await _workflow_parts(conn, record["workflow_id"])})
    return {
        "kind": "order",
        **parts,
        "workflows": workflows,
        "audit": await _audits(conn, [r["workflow_id"] for r in records]),
    }


async def show(conn: asyncpg.Connection, ident: str) -> dict[str, Any]:
    """`ident` is a workflow id (UUID) or a CRM order id; a UUID that is no workflow is tried as
    an order id too (CRM order ids are free text)."""
    text = ident.strip()
    try:
        workflow_id = uuid.UUID(text)
    except ValueError:
        return await show_order(conn, text)
    try:
        return await show_workflow(conn, workflow_id)
    except NotFound:
        try:
            return await show_order(conn, text)
        except NotFound as exc:
            raise NotFound(f"no workflow or order {text!r}", ident=text) from exc
