"""The one way a workflow changes state: fire the machine, apply the move to the row, and write the
row, its history, its status event, the order's derived state and the next timers together.

Every path goes through `Journal.transition`: a step's outcome, a CRM amendment or cancellation,
an operator's cancel or replay. Callers hold the order's and the workflow's row locks (order
first) and an open transaction; nothing here commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.events import (
    AmendmentOutcome,
    JeopardyStatus,
    LineItemAmended,
    LineItemJeopardy,
    LineItemNotice,
    LineItemState,
    LineItemStateChanged,
    OrderState,
    OrderStateChanged,
    StepError,
    encode_status_event,
)
from orchestrator.logs import get_logger
from orchestrator.machines import (
    ORDER_STEP_STATES,
    PORTING_STATES,
    Outcome,
    Transitioned,
    apply_event,
    derive_order_state,
    is_settled,
)
from orchestrator.store import workflows as store
from orchestrator.store.rows import Change, OutboxMessage, WorkflowRow
from orchestrator.store.timers import TimerKind, schedule

log = get_logger(__name__)

STATUS_SOURCE = "urn:provisioning-orchestrator"
# History events of notices (see `Journal._notice`): no machine edge, the state stays.
AMENDED, JEOPARDY = "amended", "jeopardy"
NOTICE_EVENTS = frozenset({AMENDED, JEOPARDY})
_NOTICE_DETAILS = {
    AMENDED: {"change", "outcome", "reason"},
    JEOPARDY: {"reason", "status", "since", "expected_by"},
}


@dataclass(frozen=True)
class Amended:
    """What became of a CRM amendment that only the provider could settle: reported with the move."""

    change: str
    refused: str | None = None  # why, when the provider refused it


@dataclass(frozen=True)
class Move:
    """Fire `event` on the machine; set `context` fields (None forgets one); `error` for `fail`.
    An empty `event` only records context (e.g. a subscription id learned). `amended`: tell the
    CRM what became of its amendment, after the move."""

    event: str
    context: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    amended: Amended | None = None


class Chain:
    """How many more steps a chain may run before it hands back to the scheduler (fairness: one
    busy workflow must not keep a step slot from the others)."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class Journal:
    """Writes state changes with everything that must share their transaction."""

    def __init__(self, *, status_topic: str) -> None:
        self._status_topic = status_topic

    def change(
        self,
        row: WorkflowRow,
        *,
        event: str,
        previous: str,
        cause: str,
        now: datetime,
        details: dict[str, Any],
    ) -> Change:
        """The history row and status event of `row` having moved from `previous` ("" at birth)."""
        record = encode_status_event(
            data=_line_item_status(row, previous=previous or None, sequence=row.sequence + 1, now=now),
            source=STATUS_SOURCE,
        )
        message = OutboxMessage(self._status_topic, record.key, record.value, record.headers)
        return Change(event, previous, cause, details, now, message)

    async def _notice(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        data: type[LineItemNotice],
        *,
        event: str,
        cause: str,
        now: datetime,
        next_step_at: datetime | None,
        **fields: Any,
    ) -> None:
        """Save `row` with a status event that reports on it without moving it (an amendment's
        fate, jeopardy). The event takes the next number of the item's sequence, and its history
        row stays in the item's state (from = to), so the history and the status stream stay
        gap-free."""
        notice = data(
            order_id=row.order_id,
            line_item_id=row.line_item_id,
            workflow_id=str(row.workflow_id),
            sequence=row.sequence + 1,
            occurred_at=now,
            **fields,
        )
        record = encode_status_event(data=notice, source=STATUS_SOURCE)
        message = OutboxMessage(self._status_topic, record.key, record.value, record.headers)
        details = notice.model_dump(mode="json", include=_NOTICE_DETAILS[event], exclude_none=True)
        change = Change(event, row.current, cause, details, now, message)
        await store.save(conn, row, change=change, next_step_at=next_step_at)

    async def amended(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        *,
        change: str,
        reason: str | None = None,
        cause: str,
        now: datetime,
        next_step_at: datetime | None = None,
    ) -> None:
        """Tell the CRM what became of its amendment: applied, or refused with `reason`. Saves the row."""
        await self._notice(
            conn, row, LineItemAmended, event=AMENDED, cause=cause, now=now, next_step_at=next_step_at,
            change=change, outcome=AmendmentOutcome.REFUSED if reason else AmendmentOutcome.APPLIED,
            reason=reason,
        )  # fmt: skip

    async def jeopardy(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        *,
        reason: str,
        since: datetime,
        expected_by: datetime,
        status: JeopardyStatus,
        cause: str,
        now: datetime,
        next_step_at: datetime | None = None,
    ) -> None:
        """Raise or clear jeopardy on the line item. Saves the row."""
        await self._notice(
            conn, row, LineItemJeopardy, event=JEOPARDY, cause=cause, now=now, next_step_at=next_step_at,
            state=LineItemState(row.current), reason=reason, since=since, expected_by=expected_by,
            status=status,
        )  # fmt: skip

    async def received(
        self, conn: asyncpg.Connection, rows: list[WorkflowRow], *, cause: str, now: datetime
    ) -> None:
        """New workflows in their first state, each with its `received` event and first step."""
        changes = []
        for row in rows:
            row.sequence = 0
            changes.append(
                (row, self.change(row, event="received", previous="", cause=cause, now=now, details={}))
            )
        await store.insert_received(conn, changes)

    @staticmethod
    def fire(row: WorkflowRow, move: Move) -> Outcome:
        """The machine's half: the event on `row` (no I/O). On `Transitioned` the row holds its new
        state, context and counters; `commit` writes them."""
        previous = row.current
        if move.event == "fail":
            row.resume_state = previous
            row.error = move.error
            log.warning(
                "workflow failed: it waits for an operator",
                workflow_id=str(row.workflow_id),
                order_id=row.order_id,
                line_item_id=row.line_item_id,
                state=previous,
                error=move.error,
            )
        outcome = apply_event(
            line_item_type=row.line_item_type,
            definition_version=row.definition_version,
            model=row,
            event=move.event,
        )
        if not isinstance(outcome, Transitioned):
            return outcome
        row.context.update(move.context)
        row.attempts = 0
        row.context.polls = 0
        if previous == LineItemState.FAILED and row.current != LineItemState.FAILED:
            row.error = None
            row.resume_state = None
        if row.current == LineItemState.ACTIVATED and row.secrets:
            row.secrets = None  # porting credentials are kept no longer than the port needs
        return outcome

    async def commit(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        outcome: Transitioned,
        *,
        now: datetime,
        cause: str,
        step_due: datetime,
        details: dict[str, Any] | None = None,
        chain: Chain | None = None,
        wake_order: bool = False,
    ) -> bool:
        """The database's half of an accepted transition. The next step is due at `step_due` unless
        the workflow is settled. True: it is due now and, `chain` allowing, the caller runs it in
        this transaction (no timer is written for it)."""
        settled = is_settled(row.current)
        here = not settled and chain is not None and chain.take()
        next_step_at = None if settled or here else step_due
        change = None
        if outcome.changed:
            await self._left(conn, row, outcome.source, cause=cause, now=now)
            change = self.change(
                row, event=outcome.event, previous=outcome.source, cause=cause, now=now, details=details or {}
            )
        await store.save(conn, row, change=change, next_step_at=next_step_at)
        if settled or is_settled(outcome.source):
            # Between two unsettled states the order stays `in_progress`: nothing to derive.
            await self.refresh_order(conn, row.order_id, now=now)
        if wake_order or row.current in ORDER_STEP_STATES:
            await schedule(conn, kind=TimerKind.ORDER_STEP, order_id=row.order_id, due_at=step_due)
        return here

    async def _left(
        self, conn: asyncpg.Connection, row: WorkflowRow, source: str, *, cause: str, now: datetime
    ) -> None:
        """`row` is leaving `source`: jeopardy raised there is cleared by this milestone, its notice
        written first and in `source` (the sequence before the state change's). Entering a port
        from elsewhere starts its clock (`port_since`)."""
        if row.current not in PORTING_STATES:
            row.context.port_since = None
        elif source not in PORTING_STATES:
            row.context.port_since = now.isoformat()
        raised = row.context.jeopardy
        if raised is None:
            return
        row.context.jeopardy = None
        moved, row.state = row.state, source
        try:
            await self.jeopardy(
                conn,
                row,
                reason=str(raised["reason"]),
                since=datetime.fromisoformat(raised["since"]),
                expected_by=datetime.fromisoformat(raised["expected_by"]),
                status=JeopardyStatus.CLEARED,
                cause=cause,
                now=now,
            )
        finally:
            row.state = moved

    async def transition(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        move: Move,
        *,
        now: datetime,
        cause: str,
        step_due: datetime | None = None,
        details: dict[str, Any] | None = None,
        chain: Chain | None = None,
        wake_order: bool = False,
    ) -> Outcome:
        """`fire`, then `commit` if the machine accepted. A refusal writes nothing: the caller
        decides what it means (a late event to ignore, an amendment to record, a 409)."""
        outcome = self.fire(row, move)
        if isinstance(outcome, Transitioned):
            await self.commit(
                conn,
                row,
                outcome,
                now=now,
                cause=cause,
                step_due=step_due or now,
                details=details,
                chain=chain,
                wake_order=wake_order,
            )
        return outcome

    async def refresh_order(
        self, conn: asyncpg.Connection, order_id: str, *, now: datetime
    ) -> OrderState | None:
        """Recompute the order's derived state from its items; emit an order event if it changed.
        Locks the order row, so the order's own sequence stays gap-free."""
        order = await store.lock_order_states(conn, order_id)
        if order is None or not order["states"]:
            return None
        states: list[str] = list(order["states"])
        derived = derive_order_state(states)
        first = order["status_sequence"] == 0
        if order["state"] == derived.value and not first:
            return derived
        sequence = order["status_sequence"] + 1
        data = OrderStateChanged(
            order_id=order_id,
            state=derived,
            previous_state=None if first else OrderState(order["state"]),
            sequence=sequence,
            occurred_at=now,
            line_item_counts={LineItemState(state): n for state, n in Counter(states).items()},
            line_item_total=len(states),
        )
        record = encode_status_event(data=data, source=STATUS_SOURCE)
        message = OutboxMessage(self._status_topic, record.key, record.value, record.headers)
        await store.save_order_state(conn, order_id, state=derived.value, sequence=sequence, message=message)
        return derived


_ON_TEMPORARY_NUMBER = frozenset(
    {LineItemState.TEMP_NUMBER_ACTIVE, LineItemState.FAILED, LineItemState.CANCELLING}
)


def _line_item_status(
    row: WorkflowRow, *, previous: str | None, sequence: int, now: datetime
) -> LineItemStateChanged:
    ctx = row.context
    # While the customer is live on a temporary number, every event says so, a failed port's too.
    temporary = ctx.temporary_msisdn if row.state in _ON_TEMPORARY_NUMBER else None
    error = None
    if row.state == LineItemState.FAILED and row.error is not None:
        error = StepError(
            code=row.error.get("code", "unknown"),
            message=row.error.get("message", ""),
            retryable=bool(row.error.get("retryable", False)),
            step=row.error.get("step", "unknown"),
        )
    return LineItemStateChanged(
        order_id=row.order_id,
        line_item_id=row.line_item_id,
        line_item_type=row.line_item_type,
        workflow_id=str(row.workflow_id),
        state=row.current,
        previous_state=previous,
        sequence=sequence,
        occurred_at=now,
        msisdn=ctx.msisdn,
        temporary_msisdn=temporary,
        ported_msisdn=ctx.ported_msisdn if temporary else None,
        subscription_id=ctx.subscription_id,
        scheduled_activation_date=ctx.scheduled_activation_date
        if row.state == LineItemState.ACTIVATION_SCHEDULED
        else None,
        error=error,
    )
