"""Read side for operators: `list` (which workflows match) and `show` (the whole story of one
workflow or one order). Everything returned is JSON-ready and redacted: the `workflows.secrets`
column is never read, and request/response bodies pass through `orchestrator.events.redact`.
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
from orchestrator.ops._filters import WorkflowFilter, where_clause

# Never `SELECT *` or `secrets`: the porting credentials must not leave the database this way.
_SUMMARY_COLUMNS = """w.workflow_id, w.order_id, w.line_item_id, w.line_item_type, w.state, w.resume_state,
    w.error, w.attempts, w.generation, w.version, w.created_at, w.updated_at,
    coalesce(w.context ->> 'msisdn', w.spec ->> 'msisdn') AS msisdn"""
_DETAIL_COLUMNS = f"""{_SUMMARY_COLUMNS}, w.definition_version, w.sequence, w.spec, w.context,
    (w.secrets IS NOT NULL) AS holds_secrets"""


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
    where, params = where_clause(flt, now=now)
    rows = await conn.fetch(
        f"SELECT {_SUMMARY_COLUMNS} FROM workflows w {where} "
        f"ORDER BY w.updated_at DESC, w.workflow_id LIMIT {int(flt.limit)}",
        *params,
    )
    counts = await conn.fetch(
        f"SELECT w.state, count(*) AS n FROM workflows w {where} GROUP BY w.state ORDER BY w.state", *params
    )
    by_state = {r["state"]: int(r["n"]) for r in counts}
    return {
        "filter": flt.to_dict(),
        "total": sum(by_state.values()),
        "counts_by_state": by_state,
        "workflows": [summary(r) for r in rows],
    }


async def state_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Workflows per state over the whole table (the console's header, the metrics gauge)."""
    rows = await conn.fetch("SELECT state, count(*) AS n FROM workflows GROUP BY state ORDER BY state")
    return {r["state"]: int(r["n"]) for r in rows}


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
    transitions = await conn.fetch(
        "SELECT sequence, event, from_state, to_state, cause, details, occurred_at FROM transitions "
        "WHERE workflow_id = $1 ORDER BY sequence",
        workflow_id,
    )
    calls = await conn.fetch("SELECT * FROM provider_calls WHERE workflow_id = $1 ORDER BY id", workflow_id)
    timers = await conn.fetch("SELECT * FROM timers WHERE workflow_id = $1 ORDER BY due_at", workflow_id)
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
    order = await conn.fetchrow(
        "SELECT order_id, customer, metadata, provider_order_id, state, status_sequence, generation, "
        "submitted_at, cancelled_at, created_at, updated_at FROM orders WHERE order_id = $1",
        order_id,
    )
    if order is None:
        raise NotFound(f"no order {order_id!r}", order_id=order_id)
    calls = await conn.fetch(
        "SELECT * FROM provider_calls WHERE order_id = $1 AND workflow_id IS NULL ORDER BY id", order_id
    )
    timers = await conn.fetch(
        "SELECT * FROM timers WHERE order_id = $1 AND workflow_id IS NULL ORDER BY due_at", order_id
    )
    events = await conn.fetch(
        "SELECT id, value, created_at, published_at FROM outbox WHERE key = $1 ORDER BY id",
        order_id.encode(),
    )
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
    rows = await conn.fetch(
        "SELECT * FROM operator_audit WHERE workflow_ids && $1::uuid[] ORDER BY id", workflow_ids
    )
    return [_audit(r) for r in rows]


async def show_workflow(conn: asyncpg.Connection, workflow_id: uuid.UUID) -> dict[str, Any]:
    """One line item's story: its row, transitions, calls (its own and its order's), timers,
    the status events it emitted, and operator actions on it."""
    record = await conn.fetchrow(
        f"SELECT {_DETAIL_COLUMNS} FROM workflows w WHERE w.workflow_id = $1", workflow_id
    )
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
    records = await conn.fetch(
        f"SELECT {_DETAIL_COLUMNS} FROM workflows w WHERE w.order_id = $1 ORDER BY w.line_item_id", order_id
    )
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
