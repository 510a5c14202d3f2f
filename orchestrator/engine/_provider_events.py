"""Provider webhooks (from `connect.events.v1`) as hints: each one makes the affected workflows
poll the provider now.

Webhooks arrive twice, late and out of order, so their content is never trusted as state: the
step that runs next reads the provider (GET) and decides. That makes duplicates and reordering
harmless by construction; the inbox still drops exact redeliveries so they cost nothing.
"""

from __future__ import annotations

import asyncpg

from orchestrator import faults
from orchestrator.engine._clock import Clock
from orchestrator.engine._errors import EventRejected
from orchestrator.events import ProviderWebhookEvent
from orchestrator.logs import get_logger
from orchestrator.machines import POLLING_STATES
from orchestrator.store import workflows as store
from orchestrator.store.inbox import Delivery, record_once
from orchestrator.store.timers import schedule_steps

log = get_logger(__name__)
SOURCE = "connect"


class ProviderEventIntake:
    """Applies decoded provider webhooks."""

    def __init__(self, *, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock

    async def apply(self, event: ProviderWebhookEvent, *, delivery: Delivery) -> None:
        data = event.data
        order = data.get("order") if isinstance(data.get("order"), dict) else {}
        # Ids are text; anything else in a webhook (a number, a list) matches no workflow and must
        # not reach the query as a parameter of the wrong type (that would stall the partition).
        subscription_id = _text(data.get("subscriptionId"))
        provider_order_id = _text(data.get("orderId")) or _text((order or {}).get("orderId"))
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                fresh = await record_once(
                    conn, source=SOURCE, event_id=event.event_id, event_type=event.type, delivery=delivery
                )
                if not fresh:
                    return
                # Only workflows whose next step polls: the others (adding their item, waiting for
                # submission) are moved by their own calls and the order step, so a poke would only
                # make them plan again and find nothing to do (under load, a step and a claim each).
                targets = await store.poll_targets(
                    conn,
                    subscription_id=subscription_id,
                    provider_order_id=provider_order_id,
                    states=sorted(POLLING_STATES),
                )
                await schedule_steps(conn, targets, due_at=self._clock.now())
                faults.reach("intake.before_commit", "webhook")
        except asyncpg.DataError as exc:  # e.g. NUL in a text field: this record fails so forever
            raise EventRejected("invalid_webhook", str(exc)[:500]) from exc
        faults.reach("intake.after_commit", "webhook")
        log.debug("provider event", type=event.type, event_id=event.event_id, workflows=len(targets))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
