"""`operator_audit`: one row per operator action, written before the action runs and completed with
its outcome afterwards (so an action that dies half-way still leaves its intent).

Redaction is the caller's job (`orchestrator.ops`): this module stores what it is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

# Every column, named: a column added later is shown to operators only once someone decides it may be.
_AUDIT_COLUMNS = "id, actor, action, reason, workflow_ids, filter, plan, outcome, created_at, completed_at"


async def insert_audit(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    actor: str,
    action: str,
    reason: str,
    workflow_ids: Sequence[uuid.UUID],
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
        list(workflow_ids),
        filter_,
        plan,
        now,
    )
    return audit_id


async def complete_audit(
    conn: asyncpg.Connection | asyncpg.Pool, audit_id: int, *, outcome: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        "UPDATE operator_audit SET outcome = $2, completed_at = $3 WHERE id = $1", audit_id, outcome, now
    )


async def audits_touching(conn: asyncpg.Connection, workflow_ids: Sequence[uuid.UUID]) -> list[Any]:
    """Every action that named any of `workflow_ids`, oldest first."""
    rows: list[Any] = await conn.fetch(
        f"SELECT {_AUDIT_COLUMNS} FROM operator_audit WHERE workflow_ids && $1::uuid[] ORDER BY id",
        list(workflow_ids),
    )
    return rows
