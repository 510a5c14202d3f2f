"""CRM order events in: deduplicated through the inbox and applied in one transaction.

Each event's effect (new workflows, an amendment, a cancellation), its inbox row, its status
events and its timers commit together; the consumer commits the Kafka offset only afterwards. A
redelivered event finds its inbox row and changes nothing. An event that cannot apply (an unknown
order, an order submitted twice) raises `EventRejected` with a stable reason, and the edge that
delivered it dead-letters it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.engine._clock import Clock
from orchestrator.engine._errors import EventRejected
from orchestrator.engine._plan import (
    KEEP_TEMPORARY_NUMBER,
    PORTING_DETAILS,
    amendment_change,
    port_rejected,
)
from orchestrator.engine._transition import Journal, Move
from orchestrator.events import (
    CrmEvent,
    LineItem,
    LineItemState,
    LineItemUpdatedEvent,
    OrderCancelledEvent,
    OrderState,
    OrderSubmittedEvent,
    line_item_payload,
)
from orchestrator.logs import get_logger
from orchestrator.machines import (
    BEFORE_SUBMISSION_STATES,
    PORTING_STATES,
    Transitioned,
    initial_state,
    machine_for,
)
from orchestrator.store import provider_calls
from orchestrator.store import workflows as store
from orchestrator.store.inbox import Delivery, record_once
from orchestrator.store.rows import WorkflowContext, WorkflowRow
from orchestrator.store.timers import TimerKind, schedule

log = get_logger(__name__)


def split_secrets(item: LineItem) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The line item for storage and display (secrets redacted) and the secrets kept apart, so
    they can be erased once the port is done and never reach a status event or the console."""
    spec = line_item_payload(item, reveal_secrets=False)
    revealed = line_item_payload(item, reveal_secrets=True)
    porting = revealed.get("porting")
    return spec, ({"porting": porting} if porting else None)


class CrmIntake:
    """Applies decoded CRM events (`orchestrator.events.decode_crm_event`)."""

    def __init__(self, *, pool: asyncpg.Pool, status_topic: str, clock: Clock) -> None:
        self._pool = pool
        self._journal = Journal(status_topic=status_topic)
        self._clock = clock

    async def apply(self, event: CrmEvent, *, delivery: Delivery) -> None:
        try:
            await self._apply(event, delivery=delivery)
        except asyncpg.DataError as exc:
            # A value the models accept but Postgres cannot hold (a NUL in text or jsonb, a number
            # or date out of range) fails the same way on every retry: retrying would stall the
            # partition behind it forever. Transient errors (connection, serialization) still raise.
            raise EventRejected("invalid_data", f"the database refuses a value: {exc}"[:500]) from exc

    async def _apply(self, event: CrmEvent, *, delivery: Delivery) -> None:
        source, event_id = event.dedup_key
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await record_once(
                conn, source=source, event_id=event_id, event_type=event.type, delivery=delivery
            )
            if not fresh:
                log.info("duplicate event ignored", source=source, event_id=event_id, order_id=event.order_id)
                return
            now = self._clock.now()
            cause = f"crm:{event_id}"
            if isinstance(event, OrderSubmittedEvent):
                await self._submitted(conn, event, now=now, cause=cause)
            elif isinstance(event, LineItemUpdatedEvent):
                await self._updated(conn, event, now=now, cause=cause)
            elif isinstance(event, OrderCancelledEvent):
                await self._cancelled(conn, event, now=now, cause=cause)
            faults.reach("intake.before_commit", event.type)
        faults.reach("intake.after_commit", event.type)

    async def _submitted(
        self, conn: asyncpg.Connection, event: OrderSubmittedEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        created = await store.insert_order(
            conn,
            order_id=data.order_id,
            customer=data.customer.model_dump(mode="json", by_alias=True, exclude_none=True),
            metadata=data.metadata or {},
            state=OrderState.IN_PROGRESS,
        )
        if not created:
            raise EventRejected(
                "duplicate_order", f"order {data.order_id} was already submitted under another event id"
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
                    context=WorkflowContext(),
                    generation=0,
                    sequence=0,
                    version=0,
                    resume_state=None,
                    error=None,
                    attempts=0,
                )
            )
        await self._journal.received(conn, rows, cause=cause, now=now)
        await schedule(conn, kind=TimerKind.ORDER_STEP, order_id=data.order_id, due_at=now, fresh=True)
        await self._journal.refresh_order(conn, data.order_id, now=now)
        log.info("order accepted", order_id=data.order_id, line_items=len(data.line_items))

    async def _workflow_ids(
        self, conn: asyncpg.Connection, order_id: str, line_item_ids: list[str] | None
    ) -> list[uuid.UUID]:
        # The order row first: every writer locks order, then workflow.
        await store.lock_order(conn, order_id)
        rows = await store.order_items(conn, order_id)
        if not rows:
            raise EventRejected("unknown_order", f"no order {order_id} was ever submitted")
        # Timers are always touched in workflow id order (here, in steps and in provider-event
        # intake), so concurrent transactions cannot deadlock on them.
        if line_item_ids is None:
            return [r["workflow_id"] for r in rows]
        known = {r["line_item_id"]: r["workflow_id"] for r in rows}
        missing = sorted(set(line_item_ids) - set(known))
        if missing:
            raise EventRejected(
                "unknown_line_item", f"order {order_id} has no line item(s) {', '.join(missing)}"
            )
        return sorted(known[i] for i in line_item_ids)

    async def _updated(
        self, conn: asyncpg.Connection, event: LineItemUpdatedEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        (workflow_id,) = await self._workflow_ids(conn, data.order_id, [data.line_item.line_item_id])
        row = await store.lock_workflow(conn, workflow_id)
        assert row is not None
        if str(data.line_item.type) != row.line_item_type:
            raise EventRejected(
                "invalid_data",
                f"line item {row.line_item_id} is a {row.line_item_type}; an update cannot change it",
            )
        spec, secrets = split_secrets(data.line_item)
        change = amendment_change(row, spec, secrets)
        if row.current in BEFORE_SUBMISSION_STATES and await provider_calls.submission_started(
            conn, row.order_id
        ):
            # The order step submits once every item awaits submission; an amendment that moved an
            # item back while that submit is on its way would leave it outside a submitted order.
            # The order row is locked here and by the order step, so the submit intent is either
            # stored (refuse) or not (amend; the order step then waits for the item again).
            reason = "the provider order is already being submitted: the line item can no longer change"
            await self._refuse(conn, row, change, reason, cause=cause, now=now)
            return
        if row.current in PORTING_STATES or port_rejected(row):
            await self._amend_port(conn, row, spec, secrets, change, cause=cause, now=now)
            return
        outcome = self._journal.fire(row, Move("amend", context={"settle_first": True}))
        if not isinstance(outcome, Transitioned):
            await self._refuse(conn, row, change, outcome.reason, cause=cause, now=now)
            return
        row.spec, row.secrets = spec, secrets
        row.generation += 1
        await self._journal.commit(conn, row, outcome, now=now, cause=cause, step_due=now, wake_order=True)
        await self._journal.amended(conn, row, change=change, cause=cause, now=now)

    async def _amend_port(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        spec: dict[str, Any],
        secrets: dict[str, Any] | None,
        change: str,
        *,
        cause: str,
        now: datetime,
    ) -> None:
        """An amendment once the subscription exists with a port-in: only its porting details can
        change. Corrected details go to the provider (the step that sends them reports the
        outcome); after a rejected port they request it again. Without porting, a rejected port on
        a temporary number keeps that number for good."""
        rejected = port_rejected(row)
        if rejected and not secrets and row.context.temporary_msisdn:
            keep = Move(
                "keep_temporary_number",
                context={
                    "msisdn": row.context.temporary_msisdn,
                    "temporary_msisdn": None,
                    "ported_msisdn": None,
                },
            )
            row.spec, row.generation = spec, row.generation + 1
            outcome = await self._journal.transition(conn, row, keep, now=now, cause=cause)
            assert isinstance(outcome, Transitioned), outcome
            await self._journal.amended(conn, row, change=KEEP_TEMPORARY_NUMBER, cause=cause, now=now)
            return
        if change != PORTING_DETAILS:
            reason = (
                "the port-in was rejected: send corrected porting details to request it again"
                + (", or no porting to keep the temporary number" if row.context.temporary_msisdn else "")
                if rejected
                else "the subscription exists: only its porting details can change during the port"
            )
            await self._refuse(conn, row, change, reason, cause=cause, now=now)
            return
        row.spec, row.secrets = spec, secrets
        row.generation += 1  # the provider call gets a key of its own
        row.context.settle_first = True
        if not rejected:
            row.context.porting_update_due = True
            await store.save(conn, row, next_step_at=now)
            return
        # Back to where the port failed (waiting for it, or live on the temporary number), with
        # the port to request again first.
        row.context.port_request_due = True
        outcome = await self._journal.transition(conn, row, Move("resume"), now=now, cause=cause)
        assert isinstance(outcome, Transitioned), outcome

    async def _refuse(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        change: str,
        reason: str,
        *,
        cause: str,
        now: datetime,
    ) -> None:
        log.warning(
            "amendment refused",
            order_id=row.order_id,
            line_item_id=row.line_item_id,
            state=row.current,
            reason=reason,
        )
        # Kept on the workflow too, so `workflows show` tells the operator the CRM tried.
        row.context.refused_amendments.append(
            {"cause": cause, "state": row.current, "reason": reason, "at": now.isoformat()}
        )
        await self._journal.amended(conn, row, change=change, reason=reason, cause=cause, now=now)

    async def _cancelled(
        self, conn: asyncpg.Connection, event: OrderCancelledEvent, *, now: datetime, cause: str
    ) -> None:
        data = event.data
        for workflow_id in await self._workflow_ids(conn, data.order_id, data.line_item_ids):
            row = await store.lock_workflow(conn, workflow_id)
            assert row is not None
            if row.current == LineItemState.CANCELLING:
                continue  # already compensating: a second cancel changes nothing
            context = {
                "cancel_reason": str(data.reason),
                "cancel_comment": data.comment or None,
                "settle_first": True,
            }
            outcome = await self._journal.transition(
                conn,
                row,
                Move("cancel", context=context),
                now=now,
                cause=cause,
                details={"reason": str(data.reason)},
            )
            if not isinstance(outcome, Transitioned):
                # Too late (already activated or completed): kept on the workflow, so the operator
                # and the reliability oracle can tell a cancellation that came late from one lost.
                log.warning(
                    "cancellation refused",
                    order_id=row.order_id,
                    line_item_id=row.line_item_id,
                    state=row.current,
                    reason=outcome.reason,
                )
                row.context.refused_cancellations.append(
                    {"cause": cause, "state": row.current, "reason": outcome.reason, "at": now.isoformat()}
                )
                await store.save(conn, row)
