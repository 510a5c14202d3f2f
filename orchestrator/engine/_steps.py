"""Runs one step of one workflow (or of an order) under the step protocol.

Transaction 1 locks the row, plans, and stores the call's intent. The provider is called with no
transaction open. Transaction 2 locks the row again, stores the outcome, and — if nobody changed
the workflow meanwhile — applies the transition with its history row, status event and next timer.
If the workflow did change (a cancel or an amendment arrived during the call), the outcome is kept
and the step is planned again from the new state, with what the call established merged in.

While a step leads straight to another, the next one runs at once in transaction 2 (a chain): the
outcome of call k and the intent of call k+1 commit together, and no timer is written in between.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from orchestrator import faults
from orchestrator.connect import ConnectClient, PreparedRequest, canonical_json
from orchestrator.engine._calls import (
    AlreadyDone,
    CallOutcome,
    KeyWindowPassed,
    mark_call,
    prepare_intent,
    record_outcome,
    send,
)
from orchestrator.engine._clock import Clock
from orchestrator.engine._journal import (
    ORDER_STEP,
    STEP,
    lock_workflow,
    refresh_order_state,
    save_changed,
    save_workflow,
    schedule,
)
from orchestrator.engine._plan import (
    Call,
    Move,
    Plan,
    Poll,
    Snapshot,
    Wait,
    decide_from_snapshot,
    find_subscription_id,
    order_key,
    plan_item,
)
from orchestrator.engine._reconcile import Action, ConnectReader, call_facts, check_effect
from orchestrator.engine._reconcile import decide as decide_call
from orchestrator.engine._rows import ORDER_COLUMNS, OrderRow, WorkflowRow
from orchestrator.logs import get_logger
from orchestrator.machines import Transitioned, apply_event, is_settled

log = get_logger(__name__)


@dataclass(frozen=True)
class RetryRules:
    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 60.0

    def delay(self, attempts: int, retry_after_s: float | None) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(attempts - 1, 0))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto
        return max(delay, retry_after_s or 0.0)


class _Chain:
    """How many more steps a chain may run before it hands back to the scheduler (fairness: one
    busy workflow must not keep a step slot from the others)."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass(frozen=True)
class _Send:
    """A stored intent to send, and the row version it was planned from."""

    plan: Call
    request: PreparedRequest
    version: int


@dataclass(frozen=True)
class _Read:
    """Provider reads to make, for `row` as it was planned (its version included)."""

    plan: Poll
    row: WorkflowRow


@dataclass(frozen=True)
class _Reconcile:
    plan: Call
    intent: KeyWindowPassed


_Io = _Send | _Read | _Reconcile


class StepRunner:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        client: ConnectClient,
        clock: Clock,
        status_topic: str,
        retry: RetryRules | None = None,
        step_timeout_s: float | None = None,
        chain_steps: int = 16,
    ) -> None:
        self._pool = pool
        self._client = client
        self._clock = clock
        self._status_topic = status_topic
        self._retry = retry or RetryRules()
        self._step_timeout_s = step_timeout_s
        self._chain_steps = chain_steps

    # --- line item workflows ---

    async def run_workflow_step(self, workflow_id: uuid.UUID, order_id: str | None = None) -> None:
        """Run the workflow's next step and, while each one leads straight to another, the ones
        after it (up to `chain_steps`), each outcome sharing its transaction with the next intent.

        `order_id`, when the caller knows it (the scheduler's claim does), saves a lookup. The
        scheduler's claim on this workflow's timer stays ours for the whole chain, so a crash
        anywhere in it hands the workflow to the next claimant exactly as a crash in one step
        would; a chained step therefore needs no timer of its own.
        """
        # Every log line of this step carries its ids. The scheduler runs each step in a task of its
        # own, whose copy of the context ends with it, so the binding cannot leak into other steps.
        structlog.contextvars.bind_contextvars(workflow_id=str(workflow_id))
        chain = _Chain(self._chain_steps)
        # A connection is held per transaction, never across a provider call: with slow calls the
        # pool would otherwise need a connection per step slot, idle for the call's duration.
        async with self._pool.acquire() as conn:
            if order_id is None:
                order_id = await conn.fetchval(
                    "SELECT order_id FROM workflows WHERE workflow_id = $1", workflow_id
                )
                if order_id is None:
                    return
            async with conn.transaction():
                locked = await _lock(conn, order_id, workflow_id)
                if locked is None:
                    return
                order, row = locked
                structlog.contextvars.bind_contextvars(order_id=row.order_id, line_item_id=row.line_item_id)
                io = await self._advance(conn, order, row, chain)
                if isinstance(io, _Send):
                    faults.reach("step.before_intent_commit")
        while io is not None:
            io = await self._perform(order_id, workflow_id, io, chain)

    async def _advance(
        self, conn: asyncpg.Connection, order: OrderRow, row: WorkflowRow, chain: _Chain
    ) -> _Io | None:
        """Under the locks: apply plans that need no I/O until one does (returned) or none is due."""
        while True:
            now = self._clock.now()
            plan = plan_item(row, order, now=now)
            if isinstance(plan, Move | Wait):
                if not await self._apply(conn, row, plan, now=now, cause="step", chain=chain):
                    return None
                continue
            if isinstance(plan, Poll):
                return _Read(plan=plan, row=row)
            prepared = await prepare_intent(
                conn,
                workflow_id=row.workflow_id,
                order_id=row.order_id,
                step=plan.step,
                generation=row.generation,
                request=plan.request,
                now=now,
            )
            if isinstance(prepared, AlreadyDone):
                if not await self._apply(
                    conn, row, plan.on_success(prepared.body), now=now, cause=plan.step, chain=chain
                ):
                    return None
                continue
            if isinstance(prepared, KeyWindowPassed):
                return _Reconcile(plan=plan, intent=prepared)
            return _Send(plan=plan, request=prepared.request, version=row.version)

    async def _perform(self, order_id: str, workflow_id: uuid.UUID, io: _Io, chain: _Chain) -> _Io | None:
        """The I/O of one step with no transaction open (it may take seconds), then its outcome and
        the chain's next intent in one transaction."""
        if isinstance(io, _Reconcile):
            async with self._pool.acquire() as conn:
                await self._key_window_passed(conn, workflow_id, io.plan, io.intent)
            return None
        if isinstance(io, _Read):
            return await self._after_read(order_id, workflow_id, io, chain)
        return await self._after_send(order_id, workflow_id, io, chain)

    async def _after_read(
        self, order_id: str, workflow_id: uuid.UUID, io: _Read, chain: _Chain
    ) -> _Io | None:
        snapshot = await self._read(io.plan, io.row)
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await _lock(conn, order_id, workflow_id)
            if locked is None:
                return None
            order, row = locked
            if row.version != io.row.version:
                await schedule(conn, kind=STEP, workflow_id=workflow_id, due_at=self._clock.now())
                return None
            now = self._clock.now()
            decision = decide_from_snapshot(row, snapshot, now=now)
            nxt = None
            if await self._apply(conn, row, decision, now=now, cause="poll", chain=chain):
                nxt = await self._advance(conn, order, row, chain)
            if isinstance(nxt, _Send):
                faults.reach("step.before_intent_commit")
        return nxt

    async def _after_send(
        self, order_id: str, workflow_id: uuid.UUID, io: _Send, chain: _Chain
    ) -> _Io | None:
        async with self._sent(io.request) as (conn, outcome, now):
            locked = await _lock(conn, order_id, workflow_id)
            if locked is None:
                return None
            order, row = locked
            if row.version != io.version:
                # A cancel or an amendment arrived during the call: the outcome is kept and the
                # step planned again from the new state, knowing what the call established (an
                # item added must be updated or removed now, not added again or forgotten).
                learned = io.plan.on_success(outcome.body()) if outcome.error is None else None
                if isinstance(learned, Move) and learned.context:
                    row.context.update({k: v for k, v in learned.context.items() if v is not None})
                    await save_workflow(conn, row, next_step_at=now)
                else:
                    await schedule(conn, kind=STEP, workflow_id=workflow_id, due_at=now)
                return None
            nxt = None
            judged = self._judge(row, io.plan.step, outcome, io.plan)
            if await self._apply(conn, row, judged, now=now, cause=io.plan.step, chain=chain):
                nxt = await self._advance(conn, order, row, chain)
            faults.reach("step.before_outcome_commit")
            if isinstance(nxt, _Send):
                faults.reach("step.before_intent_commit")
        faults.reach("step.after_outcome_commit")
        return nxt

    @contextlib.asynccontextmanager
    async def _sent(
        self, request: PreparedRequest
    ) -> AsyncIterator[tuple[asyncpg.Connection, CallOutcome, datetime]]:
        """Send a stored intent (no transaction open), then open the transaction that records its
        outcome; the caller applies the outcome in it."""
        faults.reach("step.after_intent_commit")
        outcome = await send(self._client, request, timeout_s=self._step_timeout_s)
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock.now()
            assert request.idempotency_key is not None
            await record_outcome(conn, key=request.idempotency_key, outcome=outcome, now=now)
            yield conn, outcome, now

    def _judge(self, row: WorkflowRow, step: str, outcome: CallOutcome, plan: Call) -> Move | Wait:
        error = outcome.error
        if error is None:
            return plan.on_success(outcome.body())
        row.attempts += 1
        if error.retryable and row.attempts < self._retry.max_attempts:
            log.info(
                "step will retry",
                step=step,
                code=error.code,
                attempts=row.attempts,
                workflow_id=str(row.workflow_id),
            )
            return Wait(self._retry.delay(row.attempts, error.retry_after_s))
        if row.current == "cancelling":
            # `cancelling` cannot fail (no such edge): a refused undo would strand the item there. Keep
            # the answer for the operator and plan again later from fresh state (e.g. the order was
            # submitted meanwhile, so the subscription is what must be cancelled now).
            row.context["compensation_error"] = {"step": step, **error.to_dict()}
            return Wait(self._retry.max_delay_s)
        details = error.to_dict()
        return Move(
            "fail",
            error={
                "code": error.code if not error.retryable else f"{error.code}_exhausted",
                "message": error.message,
                "retryable": error.retryable,
                "step": step,
                "provider": details,
            },
        )

    async def _key_window_passed(
        self, conn: asyncpg.Connection, workflow_id: uuid.UUID, plan: Call, intent: KeyWindowPassed
    ) -> None:
        """The stored call's key is past the provider's window, so re-sending it could apply the
        effect twice. Read provider state first: skip the call if the effect is there, re-key the
        workflow if it is not, and stop for an operator if it cannot be told."""
        key = intent.request.idempotency_key
        record = await conn.fetchrow("SELECT * FROM provider_calls WHERE idempotency_key = $1", key)
        row_before = await conn.fetchrow(
            "SELECT w.line_item_id, o.provider_order_id FROM workflows w JOIN orders o USING (order_id) "
            "WHERE w.workflow_id = $1",
            workflow_id,
        )
        if record is None or row_before is None:
            return
        facts = call_facts(record, row_before["line_item_id"])
        reader = ConnectReader(self._client, timeout_s=self._step_timeout_s)
        evidence = await check_effect(reader, facts, provider_order_id=row_before["provider_order_id"])
        now = self._clock.now()
        decision = decide_call(facts, evidence, now=now)
        cause = f"reconcile:{plan.step}"
        async with conn.transaction():
            await lock_order(conn, record["order_id"])
            row = await lock_workflow(conn, workflow_id)
            if row is None:
                return
            log.warning(
                "key window passed: reconciled by reading provider state",
                workflow_id=str(workflow_id), step=plan.step, action=decision.action.value, why=decision.why,
            )  # fmt: skip
            if decision.action is Action.SKIP:
                await conn.execute(
                    "UPDATE provider_calls SET status = 'skipped', response_body = $2, completed_at = $3 "
                    "WHERE idempotency_key = $1",
                    key, evidence.body, now,
                )  # fmt: skip
                await self._apply(conn, row, plan.on_success(evidence.body), now=now, cause=cause)
            elif decision.action is Action.REKEY:
                await mark_call(conn, key=str(key), status="rekeyed", now=now)
                row.generation += 1
                await self._apply(conn, row, Wait(0), now=now, cause=cause)
            else:
                message = f"{plan.step} was first sent at {intent.first_sent_at.isoformat()}: {decision.why}"
                error = {
                    "code": "key_window_passed",
                    "message": message,
                    "retryable": False,
                    "step": plan.step,
                }
                await self._apply(conn, row, Move("fail", error=error), now=now, cause=plan.step)

    async def _read(self, plan: Poll, row: WorkflowRow) -> Snapshot:
        """GETs only: safe to repeat, so no intent is stored. A failed read is an empty snapshot."""
        order: dict[str, Any] | None = None
        subscription: dict[str, Any] | None = None
        porting: dict[str, Any] | None = None
        subscription_id = plan.subscription_id
        if subscription_id is None:
            order = await self._get(f"/orders/{plan.provider_order_id}")
            subscription_id = find_subscription_id(order, row.line_item_id)
        if subscription_id is not None:
            subscription = await self._get(f"/subscriptions/{subscription_id}")
            if plan.porting and subscription is not None:
                porting = await self._get(f"/subscriptions/{subscription_id}/in-porting")
        return Snapshot(order=order, subscription=subscription, porting=porting)

    async def _get(self, path: str) -> dict[str, Any] | None:
        outcome = await send(
            self._client, PreparedRequest(method="GET", path=path), timeout_s=self._step_timeout_s
        )
        if outcome.error is not None:
            log.info("provider read failed", path=path, code=outcome.error.code)
            return None
        body = outcome.body()
        return body if isinstance(body, dict) else None

    async def _apply(
        self,
        conn: asyncpg.Connection,
        row: WorkflowRow,
        plan: Plan,
        *,
        now: datetime,
        cause: str,
        chain: _Chain | None = None,
    ) -> bool:
        """Apply a Move or Wait decided under the row lock, in the caller's transaction.

        True: the next step is due now and, `chain` allowing, the caller runs it in this
        transaction (no timer is written for it). False: a timer, an event or nothing wakes it.
        """
        if isinstance(plan, Wait):
            if cause == "poll":
                row.context["polls"] = int(row.context.get("polls", 0)) + 1
            due = None if plan.delay_s is None else now + timedelta(seconds=plan.delay_s)
            await save_workflow(conn, row, next_step_at=due)
            return False
        assert isinstance(plan, Move)
        if not plan.event:  # context only (e.g. a subscription id learned)
            row.context.update(plan.context)
            here = chain is not None and chain.take()
            await save_workflow(conn, row, next_step_at=None if here else now)
            return here
        if plan.event == "fail":
            row.resume_state = row.current
            row.error = plan.error
            log.warning(
                "workflow failed: it waits for an operator",
                workflow_id=str(row.workflow_id),
                order_id=row.order_id,
                line_item_id=row.line_item_id,
                state=row.current,
                error=plan.error,
            )
        previous = row.current
        outcome = apply_event(
            line_item_type=row.line_item_type,
            definition_version=row.definition_version,
            model=row,
            event=plan.event,
        )
        if not isinstance(outcome, Transitioned):
            log.warning(
                "transition refused",
                workflow_id=str(row.workflow_id),
                state=previous,
                machine_event=plan.event,
            )
            await save_workflow(conn, row)
            return False
        row.context.update({k: v for k, v in plan.context.items() if v is not None})
        for key in [k for k, v in plan.context.items() if v is None]:
            row.context.pop(key, None)
        row.attempts = 0
        row.context.pop("polls", None)
        if row.current == "activated" and row.secrets:
            row.secrets = None  # porting credentials are kept no longer than the port needs
        settled = is_settled(row.current)
        here = not settled and chain is not None and chain.take()
        next_step_at = None if settled or here else now
        if outcome.changed:
            await save_changed(
                conn,
                row,
                event=plan.event,
                previous=previous,
                cause=cause,
                now=now,
                status_topic=self._status_topic,
                details={"error": plan.error} if plan.error else None,
                next_step_at=next_step_at,
            )
        else:
            await save_workflow(conn, row, next_step_at=next_step_at)
        if settled or is_settled(previous):
            # Between two unsettled states the order stays `in_progress`: nothing to derive (the
            # caller holds the order's lock either way).
            await refresh_order_state(conn, row.order_id, now=now, status_topic=self._status_topic)
        # The order step reacts to its items: all added → submit; all cancelled → cancel the order;
        # a failed item may unblock the others' submission. Other moves give it nothing to do.
        if row.current in ("awaiting_submission", "failed", "cancelled"):
            await schedule(conn, kind=ORDER_STEP, order_id=row.order_id, due_at=now)
        return here

    # --- orders ---

    async def run_order_step(self, order_id: str) -> None:
        """Create the provider order, then submit it once every live item is in it."""
        structlog.contextvars.unbind_contextvars("workflow_id", "line_item_id")
        structlog.contextvars.bind_contextvars(order_id=order_id)
        async with self._pool.acquire() as conn, conn.transaction():
            order = await lock_order(conn, order_id)
            if order is None:
                return
            items = await conn.fetch(
                "SELECT workflow_id, state, context FROM workflows WHERE order_id = $1", order_id
            )
            now = self._clock.now()
            call = _plan_order(order, items)
            if call is None:
                return
            step, request = call
            prepared = await prepare_intent(
                conn,
                workflow_id=None,
                order_id=order_id,
                step=step,
                generation=order.generation,
                request=request,
                now=now,
            )
            if isinstance(prepared, AlreadyDone):
                await self._order_success(conn, order, step, prepared.body, now=now)
                return
            if isinstance(prepared, KeyWindowPassed):
                log.error("order call past its key window", order_id=order_id, step=step)
                return
            faults.reach("step.before_intent_commit")
        async with self._sent(prepared.request) as (conn, outcome, now):
            order = await lock_order(conn, order_id)
            assert order is not None
            if outcome.error is None:
                await self._order_success(conn, order, step, outcome.body(), now=now)
            elif outcome.error.retryable:
                attempts = await conn.fetchval(
                    "SELECT attempts FROM provider_calls WHERE idempotency_key = $1",
                    prepared.request.idempotency_key,
                )
                delay = self._retry.delay(attempts, outcome.error.retry_after_s)
                await schedule(
                    conn, kind=ORDER_STEP, order_id=order_id, due_at=now + timedelta(seconds=delay)
                )
                if attempts >= self._retry.max_attempts:
                    await self._fail_items(conn, order_id, step, outcome, now=now)
            else:
                await self._fail_items(conn, order_id, step, outcome, now=now)
            faults.reach("step.before_outcome_commit")
        faults.reach("step.after_outcome_commit")

    async def _order_success(
        self, conn: asyncpg.Connection, order: OrderRow, step: str, body: Any, *, now: datetime
    ) -> None:
        if step == "create_order":
            provider_id = (body or {}).get("orderId")
            await conn.execute(
                "UPDATE orders SET provider_order_id = $2, updated_at = now() WHERE order_id = $1",
                order.order_id,
                provider_id,
            )
        elif step == "submit_order":
            await conn.execute("UPDATE orders SET submitted_at = $2 WHERE order_id = $1", order.order_id, now)
            for record in await conn.fetch(
                "SELECT workflow_id FROM workflows WHERE order_id = $1 AND state = 'awaiting_submission' "
                "ORDER BY workflow_id",
                order.order_id,
            ):
                row = await lock_workflow(conn, record["workflow_id"])
                assert row is not None
                await self._apply(conn, row, Move("order_submitted"), now=now, cause="submit_order")
        elif step == "cancel_order":
            await conn.execute("UPDATE orders SET cancelled_at = $2 WHERE order_id = $1", order.order_id, now)
        # Wake every item: they may have been waiting for the provider order to exist.
        for record in await conn.fetch(
            "SELECT workflow_id FROM workflows WHERE order_id = $1 ORDER BY workflow_id", order.order_id
        ):
            await schedule(conn, kind=STEP, workflow_id=record["workflow_id"], due_at=now)

    async def _fail_items(
        self, conn: asyncpg.Connection, order_id: str, step: str, outcome: CallOutcome, *, now: datetime
    ) -> None:
        assert outcome.error is not None
        error = {
            "code": outcome.error.code,
            "message": outcome.error.message,
            "retryable": outcome.error.retryable,
            "step": step,
            "provider": outcome.error.to_dict(),
        }
        for record in await conn.fetch(
            "SELECT workflow_id, state FROM workflows WHERE order_id = $1 ORDER BY workflow_id", order_id
        ):
            if is_settled(record["state"]) or record["state"] == "cancelling":
                continue
            row = await lock_workflow(conn, record["workflow_id"])
            assert row is not None
            await self._apply(conn, row, Move("fail", error=error), now=now, cause=step)


def _plan_order(order: OrderRow, items: list[Any]) -> tuple[str, PreparedRequest] | None:
    states = [item["state"] for item in items]
    live = [s for s in states if not is_settled(s) and s != "cancelling"]
    if order.provider_order_id is None:
        if not live:
            return None
        body = {
            "customer": order.customer,
            "lineItems": [],
            "metadata": {**order.metadata, "crmOrderId": order.order_id},
        }
        key = order_key(order, "create_order")
        return "create_order", PreparedRequest(
            method="POST", path="/orders", body=canonical_json(body), idempotency_key=key
        )
    if order.submitted_at is None and live and all(s == "awaiting_submission" for s in live):
        key = order_key(order, "submit_order")
        return "submit_order", PreparedRequest(
            method="POST",
            path=f"/orders/{order.provider_order_id}/submit",
            body=canonical_json({}),
            idempotency_key=key,
        )
    added = [item for item in items if (item["context"] or {}).get("item_added")]
    if (
        order.submitted_at is None
        and order.cancelled_at is None
        and added
        and all(s == "cancelled" for s in states)
    ):
        key = order_key(order, "cancel_order")
        return "cancel_order", PreparedRequest(
            method="POST",
            path=f"/orders/{order.provider_order_id}/cancel",
            body=canonical_json({"reason": "CRM order cancelled"}),
            idempotency_key=key,
        )
    return None


async def _lock(
    conn: asyncpg.Connection, order_id: str, workflow_id: uuid.UUID
) -> tuple[OrderRow, WorkflowRow] | None:
    # Locks are always taken order first, then workflow, everywhere: no deadlocks.
    order = await lock_order(conn, order_id)
    row = await lock_workflow(conn, workflow_id) if order is not None else None
    return None if order is None or row is None else (order, row)


async def lock_order(conn: asyncpg.Connection, order_id: str) -> OrderRow | None:
    record = await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE", order_id
    )
    return OrderRow.from_record(record) if record else None
