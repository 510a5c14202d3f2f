"""A provider webhook is a hint: it moves the next poll of the workflows it may concern to now, and
only theirs. Workflows not in a polling state are moved by their own calls and the order step; a
subscription's event does not poke the subscription's siblings. Real Postgres, the intake called
directly with the records the consumer would hand it.
"""

from __future__ import annotations

import itertools
import json
import uuid

import asyncpg

from orchestrator.engine import CrmIntake, ProviderEventIntake, SystemClock
from orchestrator.kafka import ConsumedRecord
from orchestrator.store import open_pool
from orchestrator.worker import crm_handler, provider_event_handler
from tests.e2e.support import STRUCTURED, crm_event, order_submitted, subscription

_offsets = itertools.count()


def _record(topic: str, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumedRecord:
    return ConsumedRecord(
        topic=topic,
        partition=0,
        offset=next(_offsets),
        key=None,
        value=value,
        headers=headers,
        timestamp_ms=0,
    )


def _webhook(event_type: str, **data: str) -> bytes:
    body = {
        "eventId": str(uuid.uuid4()),
        "type": event_type,
        "occurredAt": "2030-01-01T00:00:00Z",
        "data": data,
    }
    return json.dumps(body).encode()


async def _poked(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT w.line_item_id FROM timers t JOIN workflows w USING (workflow_id) WHERE t.kind = 'step'"
    )
    return {r["line_item_id"] for r in rows}


async def test_a_webhook_pokes_only_the_workflows_it_can_move(migrated_database: str) -> None:
    async with open_pool(migrated_database) as pool:
        items = [subscription(f"li-{n}") for n in range(1, 5)]
        value = crm_event("crm.order.submitted", order_submitted("o-poke", *items))
        await crm_handler(CrmIntake(pool=pool, status_topic="status", clock=SystemClock()))(
            _record("crm", value, tuple(STRUCTURED))
        )
        # li-1 polls for its known subscription, li-2 polls without knowing it yet, li-3 is still
        # adding its item, li-4 polls for another subscription.
        await pool.execute("UPDATE orders SET provider_order_id = 'P-1' WHERE order_id = 'o-poke'")
        for line_item, state, context in [
            ("li-1", "submitted", {"subscription_id": "S-1"}),
            ("li-2", "submitted", {}),
            ("li-3", "received", {}),
            ("li-4", "porting_pending", {"subscription_id": "S-4"}),
        ]:
            await pool.execute(
                "UPDATE workflows SET state = $2, context = $3 "
                "WHERE order_id = 'o-poke' AND line_item_id = $1",
                line_item,
                state,
                context,
            )
        intake = provider_event_handler(ProviderEventIntake(pool=pool, clock=SystemClock()))

        await pool.execute("DELETE FROM timers")
        await intake(
            _record("connect", _webhook("subscription.updated", subscriptionId="S-1", orderId="P-1"))
        )
        assert await _poked(pool) == {"li-1", "li-2"}

        await pool.execute("DELETE FROM timers")
        await intake(_record("connect", _webhook("order.updated", orderId="P-1")))
        assert await _poked(pool) == {"li-1", "li-2", "li-4"}

        await pool.execute("DELETE FROM timers")
        await intake(_record("connect", _webhook("subscription.updated", subscriptionId="S-9")))
        assert await _poked(pool) == set()
