"""CRM order events in: validated, deduplicated through the inbox, applied in one transaction.

Each record's effect (new workflows, an amendment, a cancellation), its inbox row, its status
events and its timers commit together; the consumer commits the Kafka offset only afterwards. A
redelivered event finds its inbox row and changes nothing. Anything invalid becomes a DeadLetter
with a stable reason, and the consumer moves on.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.engine._clock import Clock
from orchestrator.engine._journal import (
    ORDER_STEP,
    insert_received,
    lock_workflow,
    record_change,
    refresh_order_state,
    save_workflow,
    schedule,
)
from orchestrator.engine._rows import WorkflowRow
from orchestrator.events import (
    CrmEvent,
    InvalidEventError,
    LineItem,
    LineItemUpdatedEvent,
    OrderCancelledEvent,
    OrderSubmittedEvent,
    decode_crm_event,
    line_item_payload,
)
from orchestrator.kafka import ConsumedRecord, DeadLetter
from orchestrator.logs import get_logger
from orchestrator.machines import Transitioned as _Moved
from orchestrator.machines import TransitionNotAllowed, apply_event, initial_state, machine_for

log = get_logger(__name__)


def split_secrets(item: LineItem) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The line item for storage and display (secrets redacted) and the secrets kept apart, so
    they can be erased once the port is done and never reach a status event or the console."""
    spec = line_item_payload(item, reveal_secrets=False)
    revealed = line_item_payload(item, reveal_secrets=True)
    porting = revealed.get("porting")
    return spec, ({"porting": porting} if porting else None)


class CrmIntake:
    """The handler the consumer calls for every record of the CRM topic."""

    def __init__(self, *, pool: asyncpg.Pool, status_topic: str, clock: Clock) -> None:
        self._pool = pool
        self._status_topic = status_topic
        self._clock = clock

    async def __call__(self, record: ConsumedRecord) -> None:
        try:
            event = decode_crm_event(key=record.key, value=record.value, headers=record.headers)
        except InvalidEventError as exc:
            raise DeadLetter(reason=exc.reason.value, error=exc.dlq_error) from exc
        source, event_id = event.dedup_key
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                """INSERT INTO inbox (source, event_id, event_type, topic, partition, "offset")
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1""",
                source,
                event_id,
                event.type,
                record.topic,
                record.partition,
                record.offset,
            )
            if not fresh:
                log.info("duplicate event ignored", source=source, event_id=event_id, order_id=event.order_id)
                return
            now = self._clock.now()
            cause = f"crm:{event_id}"
            await self._apply(conn, event, now=now, cause=cause)
            faults.reach("intake.before_commit")
        faults.reach("intake.after_commit")

    async def _apply(self, conn: asyncpg.Connection, event: CrmEvent, *, now: datetime, cause: str) -> None:
        if isinstance(event, OrderSubmittedEvent):
            await self._submitted(conn, event, now=now, cause=cause)
        elif isinstance(event, LineItemUpdatedEvent):
            await self._updated(conn, event, now=now, cause=cause)
        elif isinstance(event, OrderCancelledEvent):
            await self._cancelled(conn, event, now=now, cause=cause)

    async def _submitted(
        self, conn: asyncpg.Connection, event: OrderSubmittedEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        created = await conn.fetchval(
            """INSERT INTO orders (order_id, customer, metadata, state) VALUES ($1, $2, $3, 'in_progress')
               ON CONFLICT DO NOTHING RETURNING 1""",
            data.order_id,
            data.customer.model_dump(mode="json", by_alias=True, exclude_none=True),
            data.metadata or {},
        )
        if not created:
            raise DeadLetter(
                reason="duplicate_order",
                error=f"order {data.order_id} was already submitted under another event id",
            )
        rows = []
        for item in data.line_items:
            spec, secrets = split_secrets(item)
            machine = machine_for(item.type)
            rows.append(
                WorkflowRow(
                    workflow_id=uuid.uuid4(),
                    order_id=data.order_id,
                    line_item_id=item.line_item_id,
                    line_item_type=str(item.type),
                    definition_version=int(machine.DEFINITION_VERSION),
                    state=initial_state(machine),
                    spec=spec,
                    secrets=secrets,
                    context={},
                    generation=0,
                    sequence=0,
                    version=0,
                    resume_state=None,
                    error=None,
                    attempts=0,
                )
            )
        # each with its `received` event and its first step
        await insert_received(conn, rows, cause=cause, now=now, status_topic=self._status_topic)
        await schedule(conn, kind=ORDER_STEP, order_id=data.order_id, due_at=now)
        await refresh_order_state(conn, data.order_id, now=now, status_topic=self._status_topic)
        log.info("order accepted", order_id=data.order_id, line_items=len(data.line_items))

    async def _workflow_ids(
        self, conn: asyncpg.Connection, order_id: str, line_item_ids: list[str] | None
    ) -> list[uuid.UUID]:
        # The order row first: every writer locks order, then workflow (see _steps.py).
        await conn.execute("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
        rows = await conn.fetch(
            "SELECT workflow_id, line_item_id FROM workflows WHERE order_id = $1 ORDER BY line_item_id",
            order_id,
        )
        if not rows:
            raise DeadLetter(reason="unknown_order", error=f"no order {order_id} was ever submitted")
        # Timers are always touched in workflow id order (here, in steps and in provider-event
        # intake), so concurrent transactions cannot deadlock on them.
        if line_item_ids is None:
            return sorted(r["workflow_id"] for r in rows)
        known = {r["line_item_id"]: r["workflow_id"] for r in rows}
        missing = sorted(set(line_item_ids) - set(known))
        if missing:
            raise DeadLetter(
                reason="unknown_line_item", error=f"order {order_id} has no line item(s) {', '.join(missing)}"
            )
        return sorted(known[i] for i in line_item_ids)

    async def _updated(
        self, conn: asyncpg.Connection, event: LineItemUpdatedEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        (workflow_id,) = await self._workflow_ids(conn, data.order_id, [data.line_item.line_item_id])
        row = await lock_workflow(conn, workflow_id)
        assert row is not None
        if str(data.line_item.type) != row.line_item_type:
            raise DeadLetter(
                reason="invalid_data",
                error=f"line item {row.line_item_id} is a {row.line_item_type}; an update cannot change it",
            )
        previous = row.current
        # The order step submits once every item awaits submission; an amendment that moved an item
        # back while that submit is on its way would leave the item outside a submitted order. The
        # order row is locked here and by the order step, so the submit intent is either stored
        # (refuse) or not (amend; the order step then waits for the item again).
        outcome = (
            TransitionNotAllowed(
                event="amend",
                state=previous,
                reason="the provider order is already being submitted: the line item can no longer change",
            )
            if previous in _BEFORE_SUBMISSION and await _submission_started(conn, row.order_id)
            else apply_event(
                line_item_type=row.line_item_type,
                definition_version=row.definition_version,
                model=row,
                event="amend",
            )
        )
        if not isinstance(outcome, _Moved):
            log.warning(
                "amendment refused",
                order_id=row.order_id,
                line_item_id=row.line_item_id,
                state=previous,
                reason=outcome.reason,
            )
            # Kept on the workflow so `workflows show` tells the operator the CRM tried.
            refused = row.context.setdefault("refused_amendments", [])
            refused.append(
                {"cause": cause, "state": previous, "reason": outcome.reason, "at": now.isoformat()}
            )
            await save_workflow(conn, row)
            return
        row.spec, row.secrets = split_secrets(data.line_item)
        row.generation += 1
        row.attempts = 0
        row.error = None
        if outcome.changed:
            row.context.pop("lease_checked", None)
            await record_change(
                conn,
                row,
                event="amend",
                previous=previous,
                cause=cause,
                now=now,
                status_topic=self._status_topic,
            )
        else:
            row.context["porting_update_due"] = True
        await save_with_step(conn, row, now=now)
        await schedule(conn, kind=ORDER_STEP, order_id=row.order_id, due_at=now)
        await refresh_order_state(conn, row.order_id, now=now, status_topic=self._status_topic)

    async def _cancelled(
        self, conn: asyncpg.Connection, event: OrderCancelledEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        ids = await self._workflow_ids(conn, data.order_id, data.line_item_ids)
        for workflow_id in ids:
            row = await lock_workflow(conn, workflow_id)
            assert row is not None
            previous = row.current
            outcome = apply_event(
                line_item_type=row.line_item_type,
                definition_version=row.definition_version,
                model=row,
                event="cancel",
            )
            if isinstance(outcome, _Moved) and outcome.changed:
                row.context["cancel_reason"] = str(data.reason)
                if data.comment:
                    row.context["cancel_comment"] = data.comment
                await record_change(
                    conn,
                    row,
                    event="cancel",
                    previous=previous,
                    cause=cause,
                    now=now,
                    status_topic=self._status_topic,
                    details={"reason": str(data.reason)},
                )
                await save_with_step(conn, row, now=now)
        await refresh_order_state(conn, data.order_id, now=now, status_topic=self._status_topic)


_BEFORE_SUBMISSION = ("received", "number_leased", "awaiting_submission")


async def _submission_started(conn: asyncpg.Connection, order_id: str) -> bool:
    started: bool = await conn.fetchval(
        """SELECT o.submitted_at IS NOT NULL OR EXISTS (
               SELECT 1 FROM provider_calls c
               WHERE c.order_id = o.order_id AND c.step = 'submit_order' AND c.workflow_id IS NULL
                 AND c.status NOT IN ('failed', 'rekeyed'))
           FROM orders o WHERE o.order_id = $1""",
        order_id,
    )
    return started


async def save_with_step(conn: asyncpg.Connection, row: WorkflowRow, *, now: datetime) -> None:
    await save_workflow(conn, row, next_step_at=now)
