"""The inbox: the dedup key of every consumed event, written in the transaction of its effect."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Delivery:
    """Where a consumed event came from (kept with its inbox row, for operators)."""

    topic: str
    partition: int
    offset: int


async def record_once(
    conn: asyncpg.Connection, *, source: str, event_id: str, event_type: str, delivery: Delivery
) -> bool:
    """True the first time `(source, event_id)` is seen; False for a redelivery (apply nothing)."""
    fresh = await conn.fetchval(
        """INSERT INTO inbox (source, event_id, event_type, topic, partition, "offset")
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1""",
        source,
        event_id,
        event_type,
        delivery.topic,
        delivery.partition,
        delivery.offset,
    )
    return bool(fresh)
