"""Provider webhooks (from `connect.events.v1`) as hints: each one makes the affected workflows
poll the provider now.

Webhooks arrive twice, late and out of order, so their content is never trusted as state: the
step that runs next reads the provider (GET) and decides. That makes duplicates and reordering
harmless by construction; the inbox still drops exact redeliveries so they cost nothing.
"""

from __future__ import annotations

import json

import asyncpg
from pydantic import ValidationError

from orchestrator.engine._clock import Clock
from orchestrator.engine._journal import STEP, schedule
from orchestrator.engine._plan import POLLING_STATES
from orchestrator.events import ProviderWebhookEvent
from orchestrator.kafka import ConsumedRecord, DeadLetter
from orchestrator.logs import get_logger

log = get_logger(__name__)
SOURCE = "connect"


class ProviderEventIntake:
    def __init__(self, *, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def __call__(self, record: ConsumedRecord) -> None:
        try:
            event = ProviderWebhookEvent.model_validate(json.loads(record.value or b""))
        except (ValueError, ValidationError, RecursionError) as exc:  # RecursionError: absurd nesting
            raise DeadLetter(reason="invalid_webhook", error=str(exc)[:500]) from exc
        data = event.data
        order = data.get("order") if isinstance(data.get("order"), dict) else {}
        # Ids are text; anything else in a webhook (a number, a list) matches no workflow and must
        # not reach the query as a parameter of the wrong type (that would stall the partition).
        subscription_id = _text(data.get("subscriptionId"))
        provider_order_id = _text(data.get("orderId")) or _text((order or {}).get("orderId"))
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await conn.fetchval(
                    """INSERT INTO inbox (source, event_id, event_type, topic, partition, "offset")
                       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1""",
                    SOURCE,
                    event.event_id,
                    event.type,
                    record.topic,
                    record.partition,
                    record.offset,
                )
                if not fresh:
                    return
                # Only workflows whose next step polls: the others (adding their item, waiting for
                # submission) are moved by their own calls and the order step, so a poke would only
                # make them plan again and find nothing to do (under load, a step and a claim each).
                # A subscription's event pokes its own workflow, and those of its order that do not
                # know their subscription yet (it may be theirs), not its siblings.
                # Two index lookups, not one OR across the join: with 100k workflows waiting, the OR
                # scanned every workflow in a polling state for each webhook (87 ms at 15k).
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
                    list(POLLING_STATES),
                )
                now = self._clock.now()
                for row in rows:
                    await schedule(conn, kind=STEP, workflow_id=row["workflow_id"], due_at=now)
        except asyncpg.DataError as exc:  # e.g. NUL in a text field: this record fails so forever
            raise DeadLetter(reason="invalid_webhook", error=str(exc)[:500]) from exc
        log.debug("provider event", type=event.type, event_id=event.event_id, workflows=len(rows))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
