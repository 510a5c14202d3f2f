"""The operator audit trail: who did what, when, why, to which workflows, the plan and the outcome.

The row is written before the action runs (so an action that dies half-way still leaves its
intent) and completed with the outcome afterwards. What is kept passes through `redact` first:
the trail is shown to people (`workflows show`, the console).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.events import redact
from orchestrator.store import audit


async def begin(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    actor: str,
    action: str,
    reason: str,
    workflow_ids: list[uuid.UUID],
    filter_: dict[str, Any] | None,
    plan: dict[str, Any] | None,
    now: datetime,
) -> int:
    return await audit.insert_audit(
        conn,
        actor=actor,
        action=action,
        reason=reason,
        workflow_ids=workflow_ids,
        filter_=redact(filter_) if filter_ is not None else None,
        plan=redact(plan) if plan is not None else None,
        now=now,
    )


async def finish(
    conn: asyncpg.Connection | asyncpg.Pool, audit_id: int, *, outcome: dict[str, Any], now: datetime
) -> None:
    await audit.complete_audit(conn, audit_id, outcome=redact(outcome), now=now)
