"""The operator audit trail: who did what, when, why, to which workflows, the plan and the outcome.

The row is written before the action runs (so an action that dies half-way still leaves its
intent) and completed with the outcome afterwards.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.events import redact


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
    audit_id: int = await conn.fetchval(
        """INSERT INTO operator_audit (actor, action, reason, workflow_ids, filter, plan, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
        actor,
        action,
        reason,
        workflow_ids,
        redact(filter_) if filter_ is not None else None,
        redact(plan) if plan is not None else None,
        now,
    )
    return audit_id


async def finish(
    conn: asyncpg.Connection | asyncpg.Pool, audit_id: int, *, outcome: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        "UPDATE operator_audit SET outcome = $2, completed_at = $3 WHERE id = $1",
        audit_id,
        redact(outcome),
        now,
    )
