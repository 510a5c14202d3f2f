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
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from orchestrator import faults
from orchestrator.connect import ConnectClient, Outcome, PreparedRequest, ProviderError, Requests
from orchestrator.engine._calls import (
    KEY_WINDOW,
    KEY_WINDOW_MARGIN,
    AlreadyDone,
    CallOutcome,
    KeyWindowPassed,
    prepare_intent,
    record_outcome,
    send,
)
from orchestrator.engine._clock import Clock
from orchestrator.engine._jeopardy import JeopardyChange, JeopardyRules, decide_jeopardy, jeopardy_delay
from orchestrator.engine._plan import (
    Call,
    OrderCall,
    OrderItem,
    Plan,
    Poll,
    Snapshot,
    Wait,
    decide_from_snapshot,
    find_subscription_id,
    lapsed_leases,
    lease_expires_at,
    plan_item,
    plan_order,
    settle_call,
)
from orchestrator.engine._reconcile import Action, ConnectReader, call_facts, check_effect, request_facts
from orchestrator.engine._reconcile import decide as decide_call
from orchestrator.engine._transition import Chain, Journal, Move
from orchestrator.events import JeopardyStatus, LineItemState
from orchestrator.logs import get_logger
from orchestrator.machines import Transitioned, is_settled
from orchestrator.store import provider_calls
from orchestrator.store import workflows as store
from orchestrator.store.rows import OrderRow, WorkflowRow
from orchestrator.store.timers import TimerKind, schedule, schedule_steps

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


@dataclass(frozen=True)
class _Send:
    """A stored intent to send, and the row version it was planned from."""

    plan: Call
    request: PreparedRequest
    version: int
    line_item_id: str


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
        jeopardy: JeopardyRules | None = None,
        lease_margin_s: float = 300.0,
    ) -> None:
        self._pool = pool
        self._client = client
        self._clock = clock
        self._journal = Journal(status_topic=status_topic)
        self._retry = retry or RetryRules()
        self._step_timeout_s = step_timeout_s
        self._chain_steps = chain_steps
        self._jeopardy = jeopardy or JeopardyRules()
        self._lease_margin_s = lease_margin_s

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
        chain = Chain(self._chain_steps)
        # A connection is held per transaction, never across a provider call: with slow calls the
        # pool would otherwise need a connection per step slot, idle for the call's duration.
        async with self._pool.acquire() as conn:
            if order_id is None:
                order_id = await store.order_id_of(conn, workflow_id)
                if order_id is None:
                    return
            async with conn.transaction():
                locked = await store.lock_order_and_workflow(conn, order_id, workflow_id)
                if locked is None:
                    return
                order, row = locked
                structlog.contextvars.bind_contextvars(order_id=row.order_id, line_item_id=row.line_item_id)
                io = await self._advance(conn, order, row, chain)
                if isinstance(io, _Send):
                    faults.reach("step.before_intent_commit", io.plan.step)
        while io is not None:
            io = await self._perform(order_id, workflow_id, io, chain)

    async def _advance(
        self, conn: asyncpg.Connection, order: OrderRow, row: WorkflowRow, chain: Chain
    ) -> _Io | None:
        """Under the locks: apply plans that need no I/O until one does (returned) or none is due."""
        while True:
            now = self._clock.now()
            # The lease check stands down while the order's submit is on its way (one read, and
            # only for an item with a lease, waiting for the submit).
            submitting = (
                row.current == LineItemState.AWAITING_SUBMISSION
                and lease_expires_at(row) is not None
                and await provider_calls.submission_started(conn, row.order_id)
            )
            plan = plan_item(row, order, now=now, lease_margin_s=self._lease_margin_s, submitting=submitting)
            if row.context.settle_first:
                left_over = await self._left_over(conn, row, plan)
                if left_over is not None:
                    return left_over
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
            return _Send(
                plan=plan, request=prepared.request, version=row.version, line_item_id=row.line_item_id
            )

    async def _left_over(self, conn: asyncpg.Connection, row: WorkflowRow, plan: Plan) -> _Send | None:
        """After a cancel or an amendment: a call left unanswered (its worker died mid-call) that
        the plan does not send again itself, to settle first under its own key; None once there is
        none (the flag is then dropped with the row's next save)."""
        planned = plan.request.idempotency_key if isinstance(plan, Call) else None
        now = self._clock.now()
        for stored in await provider_calls.unanswered_calls(conn, row.workflow_id):
            first = stored["first_sent_at"]
            if stored["idempotency_key"] == planned or (
                first is not None and now - first > KEY_WINDOW - KEY_WINDOW_MARGIN
            ):
                continue  # sent by the plan anyway; or too old to send again safely (left for `show`)
            request = PreparedRequest(
                method=stored["method"],
                path=stored["path"],
                body=stored["body"],
                idempotency_key=stored["idempotency_key"],
            )
            log.info("settling a call left unanswered before a change", step=stored["step"])
            return _Send(
                plan=settle_call(stored["step"], request),
                request=request,
                version=row.version,
                line_item_id=row.line_item_id,
            )
        row.context.settle_first = False
        return None

    async def _perform(self, order_id: str, workflow_id: uuid.UUID, io: _Io, chain: Chain) -> _Io | None:
        """The I/O of one step with no transaction open (it may take seconds), then its outcome and
        the chain's next intent in one transaction."""
        if isinstance(io, _Reconcile):
            async with self._pool.acquire() as conn:
                await self._key_window_passed(conn, workflow_id, io.plan, io.intent)
            return None
        if isinstance(io, _Read):
            return await self._after_read(order_id, workflow_id, io, chain)
        return await self._after_send(order_id, workflow_id, io, chain)

    async def _after_read(self, order_id: str, workflow_id: uuid.UUID, io: _Read, chain: Chain) -> _Io | None:
        snapshot = await self._read(io.plan, io.row)
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await store.lock_order_and_workflow(conn, order_id, workflow_id)
            if locked is None:
                return None
            order, row = locked
            if row.version != io.row.version:
                await schedule(conn, kind=TimerKind.STEP, workflow_id=workflow_id, due_at=self._clock.now())
                return None
            now = self._clock.now()
            decision = decide_from_snapshot(row, snapshot, now=now)
            nxt = None
            if await self._apply(conn, row, decision, now=now, cause="poll", chain=chain):
                nxt = await self._advance(conn, order, row, chain)
            if isinstance(nxt, _Send):
                faults.reach("step.before_intent_commit", nxt.plan.step)
        return nxt

    async def _after_send(self, order_id: str, workflow_id: uuid.UUID, io: _Send, chain: Chain) -> _Io | None:
        conflict = (io.plan.step, io.line_item_id)
        async with self._sent(io.request, step=io.plan.step, conflict=conflict) as (conn, outcome, now):
            locked = await store.lock_order_and_workflow(conn, order_id, workflow_id)
            if locked is None:
                return None
            order, row = locked
            if outcome.superseded:
                # The attempt that settled the call has applied it (or will, under this lock):
                # plan again from what it left.
                await schedule(conn, kind=TimerKind.STEP, workflow_id=workflow_id, due_at=now)
                return None
            if row.version != io.version:
                # A cancel or an amendment arrived during the call: the outcome is kept and the
                # step planned again from the new state, knowing what the call established (an
                # item added must be updated or removed now, not added again or forgotten).
                learned = io.plan.on_success(outcome.body()) if outcome.error is None else None
                if isinstance(learned, Move) and learned.context:
                    row.context.update({k: v for k, v in learned.context.items() if v is not None})
                    await store.save(conn, row, next_step_at=now)
                else:
                    await schedule(conn, kind=TimerKind.STEP, workflow_id=workflow_id, due_at=now)
                return None
            nxt = None
            if outcome.reconciled:
                # A 409 whose effect the provider shows after all (e.g. the request was applied
                # and then refused as a repeat): recorded as `skipped`, the read as its answer.
                judged: Move | Wait = io.plan.on_success(outcome.reconciled_body)
            elif outcome.error and not outcome.error.retryable and io.plan.on_refused is not None:
                judged = io.plan.on_refused(outcome.error)
            else:
                judged = self._judge(row, io.plan.step, outcome) or io.plan.on_success(outcome.body())
            if await self._apply(conn, row, judged, now=now, cause=io.plan.step, chain=chain):
                nxt = await self._advance(conn, order, row, chain)
            faults.reach("step.before_outcome_commit", io.plan.step)
            if isinstance(nxt, _Send):  # the chain's next intent shares this transaction
                faults.reach("step.before_intent_commit", nxt.plan.step)
        faults.reach("step.after_outcome_commit", io.plan.step)
        return nxt

    @contextlib.asynccontextmanager
    async def _sent(
        self, request: PreparedRequest, *, step: str, conflict: tuple[str, str] | None = None
    ) -> AsyncIterator[tuple[asyncpg.Connection, CallOutcome, datetime]]:
        """Send a stored intent (no transaction open), then open the transaction that records its
        outcome; the caller applies the outcome in it. With `conflict`, a 409 (the provider's
        `invalid_state`) is checked against provider state before that transaction opens."""
        faults.reach("step.after_intent_commit", step)
        outcome = await send(self._client, request, step=step, timeout_s=self._step_timeout_s)
        if conflict is not None and outcome.error is not None and outcome.error.outcome is Outcome.RECONCILE:
            outcome = await self._read_conflict(request, *conflict, outcome)
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock.now()
            assert request.idempotency_key is not None
            if not await record_outcome(conn, key=request.idempotency_key, outcome=outcome, now=now):
                log.info(
                    "a late answer to a call already settled by another attempt: ignored",
                    idempotency_key=request.idempotency_key,
                    status=outcome.response.status if outcome.response else None,
                )
                outcome = replace(outcome, superseded=True)
            yield conn, outcome, now

    async def _read_conflict(
        self, request: PreparedRequest, step: str, line_item_id: str, outcome: CallOutcome
    ) -> CallOutcome:
        """Read whether a refused call's effect is there anyway (GETs only). A refusal stays a
        refusal unless the provider shows the effect."""
        assert outcome.error is not None
        facts = request_facts(request, step=step, line_item_id=line_item_id, error_code=outcome.error.code)
        reader = ConnectReader(self._client, timeout_s=self._step_timeout_s)
        evidence = await check_effect(reader, facts, provider_order_id=None)
        log.info(
            "provider refused with a state conflict: read its state",
            step=step, present=evidence.present, note=evidence.note,
        )  # fmt: skip
        if not evidence.present:
            return outcome
        return replace(outcome, reconciled=True, reconciled_body=evidence.body)

    def _judge(self, row: WorkflowRow, step: str, outcome: CallOutcome) -> Move | Wait | None:
        """What a failed call means for the workflow: retry later, or fail it. None: it succeeded."""
        error = outcome.error
        if error is None:
            return None
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
        if row.current == LineItemState.CANCELLING:
            # `cancelling` cannot fail (no such edge): a refused undo would strand the item there. Keep
            # the answer for the operator and plan again later from fresh state (e.g. the order was
            # submitted meanwhile, so the subscription is what must be cancelled now).
            row.context.compensation_error = {"step": step, **error.to_dict()}
            return Wait(self._retry.max_delay_s)
        return Move("fail", error=_failure(error, step))

    async def _key_window_passed(
        self, conn: asyncpg.Connection, workflow_id: uuid.UUID, plan: Call, intent: KeyWindowPassed
    ) -> None:
        """The stored call's key is past the provider's window, so re-sending it could apply the
        effect twice. Read provider state first: skip the call if the effect is there, re-key the
        workflow if it is not, and stop for an operator if it cannot be told."""
        key = intent.request.idempotency_key
        assert key is not None
        record = await provider_calls.stored_call(conn, key)
        row_before = await store.line_item_and_provider_order(conn, workflow_id)
        if record is None or row_before is None:
            return
        facts = call_facts(record, row_before["line_item_id"])
        reader = ConnectReader(self._client, timeout_s=self._step_timeout_s)
        evidence = await check_effect(reader, facts, provider_order_id=row_before["provider_order_id"])
        now = self._clock.now()
        decision = decide_call(facts, evidence, now=now)
        cause = f"reconcile:{plan.step}"
        async with conn.transaction():
            locked = await store.lock_order_and_workflow(conn, record["order_id"], workflow_id)
            if locked is None:
                return
            _, row = locked
            log.warning(
                "key window passed: reconciled by reading provider state",
                workflow_id=str(workflow_id), step=plan.step, action=decision.action.value, why=decision.why,
            )  # fmt: skip
            if decision.action is Action.SKIP:
                await provider_calls.settle(conn, key, status="skipped", now=now, answer=evidence.body)
                await self._apply(conn, row, plan.on_success(evidence.body), now=now, cause=cause)
            elif decision.action is Action.REKEY:
                await provider_calls.settle(conn, key, status="rekeyed", now=now)
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
            order = await self._get(Requests.get_order(plan.provider_order_id))
            subscription_id = find_subscription_id(order, row.line_item_id)
        if subscription_id is not None:
            subscription = await self._get(Requests.get_subscription(subscription_id))
            if plan.porting and subscription is not None:
                porting = await self._get(Requests.get_in_porting(subscription_id))
        return Snapshot(order=order, subscription=subscription, porting=porting)

    async def _get(self, request: PreparedRequest) -> dict[str, Any] | None:
        outcome = await send(self._client, request, step="poll", timeout_s=self._step_timeout_s)
        if outcome.error is not None:
            log.info("provider read failed", path=request.path, code=outcome.error.code)
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
        chain: Chain | None = None,
    ) -> bool:
        """Apply a Move or Wait decided under the row lock, in the caller's transaction.

        True: the next step is due now and, `chain` allowing, the caller runs it in this
        transaction (no timer is written for it). False: a timer, an event or nothing wakes it.
        """
        if isinstance(plan, Wait):
            if cause == "poll":
                row.context.polls += 1
                # The poll left the item where it was: is its wait overdue (or over)?
                change = decide_jeopardy(row, now=now, rules=self._jeopardy)
                if change is not None:
                    await self._jeopardy_notice(conn, row, change, plan, now=now)
                    return False
                plan = Wait(jeopardy_delay(row, plan.delay_s))
            due = None if plan.delay_s is None else now + timedelta(seconds=plan.delay_s)
            await store.save(conn, row, next_step_at=due)
            return False
        assert isinstance(plan, Move)
        if not plan.event:  # context only (e.g. a subscription id learned)
            row.context.update(plan.context)
            here = chain is not None and chain.take()
            if plan.amended is not None:
                await self._journal.amended(
                    conn, row, change=plan.amended.change, reason=plan.amended.refused,
                    cause=cause, now=now, next_step_at=None if here else now,
                )  # fmt: skip
            else:
                await store.save(conn, row, next_step_at=None if here else now)
            return here
        outcome = self._journal.fire(row, plan)
        if not isinstance(outcome, Transitioned):
            log.warning(
                "transition refused",
                workflow_id=str(row.workflow_id),
                state=row.current,
                machine_event=plan.event,
            )
            await store.save(conn, row)
            return False
        details = {"error": plan.error} if plan.error else None
        here = await self._journal.commit(
            conn, row, outcome, now=now, cause=cause, step_due=now, details=details, chain=chain
        )
        if plan.amended is not None:
            await self._journal.amended(
                conn, row, change=plan.amended.change, reason=plan.amended.refused, cause=cause, now=now
            )
        return here

    async def _jeopardy_notice(
        self, conn: asyncpg.Connection, row: WorkflowRow, change: JeopardyChange, wait: Wait, *, now: datetime
    ) -> None:
        """Raise or clear jeopardy (kept in the context, so each is said once) with the next poll."""
        jeopardy = change.jeopardy
        row.context.jeopardy = jeopardy.to_context() if change.status == "raised" else None
        log.warning(
            "line item in jeopardy" if change.status == "raised" else "jeopardy cleared",
            workflow_id=str(row.workflow_id), state=row.current, reason=jeopardy.reason,
            since=jeopardy.since.isoformat(), expected_by=jeopardy.expected_by.isoformat(),
        )  # fmt: skip
        delay = jeopardy_delay(row, wait.delay_s)
        await self._journal.jeopardy(
            conn,
            row,
            reason=jeopardy.reason,
            since=jeopardy.since,
            expected_by=jeopardy.expected_by,
            status=JeopardyStatus(change.status),
            cause="poll",
            now=now,
            next_step_at=None if delay is None else now + timedelta(seconds=delay),
        )

    # --- orders ---

    async def run_order_step(self, order_id: str) -> None:
        """Create the provider order, then submit it once every live item is in it.

        One run at a time per order: other workers do not claim its step while this one holds it,
        and the scheduler runs a step asked for meanwhile after this one (engine/_scheduler.py);
        should an answer still come late, `record_outcome` keeps it from undoing a settled call."""
        structlog.contextvars.unbind_contextvars("workflow_id", "line_item_id")
        structlog.contextvars.bind_contextvars(order_id=order_id)
        async with self._pool.acquire() as conn, conn.transaction():
            order = await store.lock_order(conn, order_id)
            if order is None:
                return
            items = [
                OrderItem(
                    state=r["state"],
                    item_added=bool((r["context"] or {}).get("item_added")),
                    line_item_id=r["line_item_id"],
                    workflow_id=str(r["workflow_id"]),
                    generation=r["generation"],
                )
                for r in await store.order_items(conn, order_id)
            ]
            now = self._clock.now()
            call = plan_order(order, items)
            if call is None:
                return
            step, request = call.step, call.request
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
                await self._order_success(conn, order, call, prepared.body, now=now)
                return
            if not isinstance(prepared, KeyWindowPassed):
                faults.reach("step.before_intent_commit", step)
        if isinstance(prepared, KeyWindowPassed):
            await self._order_key_window_passed(order_id, call, prepared)
            return
        # A 409 on an order call (e.g. a submit the provider already took) is read like an item's.
        conflict = (step, call.item.line_item_id if call.item else "")
        async with self._sent(prepared.request, step=step, conflict=conflict) as (conn, outcome, now):
            order = await store.lock_order(conn, order_id)
            assert order is not None
            if outcome.superseded:
                pass  # the attempt that settled the call applied it
            elif outcome.reconciled:
                await self._order_success(conn, order, call, outcome.reconciled_body, now=now)
            elif outcome.error is None or (step == "remove_failed_item" and outcome.error.status == 404):
                await self._order_success(conn, order, call, outcome.body(), now=now)
            elif outcome.error.retryable:
                assert prepared.request.idempotency_key is not None
                attempts = await provider_calls.call_attempts(conn, prepared.request.idempotency_key)
                delay = self._retry.delay(attempts, outcome.error.retry_after_s)
                await schedule(
                    conn, kind=TimerKind.ORDER_STEP, order_id=order_id, due_at=now + timedelta(seconds=delay)
                )
                if attempts >= self._retry.max_attempts:
                    await self._fail_items(
                        conn, order_id, step, _failure(outcome.error, step, exhausted=False), now=now
                    )
            elif step == "submit_order" and (lapsed := lapsed_leases(outcome.error.provider_details)):
                await self._leases_lapsed(conn, order, lapsed, prepared.request, outcome.error, now=now)
            else:
                await self._fail_items(
                    conn, order_id, step, _failure(outcome.error, step, exhausted=False), now=now
                )
            faults.reach("step.before_outcome_commit", step)
        faults.reach("step.after_outcome_commit", step)

    async def _leases_lapsed(
        self,
        conn: asyncpg.Connection,
        order: OrderRow,
        lapsed: set[str],
        request: PreparedRequest,
        error: ProviderError,
        *,
        now: datetime,
    ) -> None:
        """The provider refused the submit because some items' leases lapsed (its clock, not the
        CRM's `leaseExpiresAt`, decides): those items fail, the order step takes them out of the
        cart and submits their siblings under a new key (the refused one would replay the 412)."""
        failure = {
            **_failure(error, "submit_order", exhausted=False),
            "code": "lease_expired",
            "message": "the provider reports the number lease lapsed before the order was submitted; "
            "send crm.order.line_item.updated with a fresh lease",
        }
        for record in await store.order_items(conn, order.order_id, state=LineItemState.AWAITING_SUBMISSION):
            if record["line_item_id"] in lapsed:
                row = await store.lock_workflow(conn, record["workflow_id"])
                assert row is not None
                await self._apply(conn, row, Move("fail", error=failure), now=now, cause="submit_order")
        assert request.idempotency_key is not None
        await _rekey_order(conn, order, request.idempotency_key, now=now)
        log.warning(
            "leases lapsed at the provider: those items fail, the rest go on", line_items=sorted(lapsed)
        )

    async def _order_success(
        self, conn: asyncpg.Connection, order: OrderRow, call: OrderCall, body: Any, *, now: datetime
    ) -> None:
        step = call.step
        if step == "remove_failed_item":
            assert call.item is not None
            row = await store.lock_workflow(conn, uuid.UUID(call.item.workflow_id))
            assert row is not None
            row.context.item_added = False  # out of the cart: the siblings can be submitted
            await store.save(conn, row)
            await schedule(conn, kind=TimerKind.ORDER_STEP, order_id=order.order_id, due_at=now)
            return
        if step == "create_order":
            await store.set_provider_order_id(conn, order.order_id, (body or {}).get("orderId"))
        elif step == "submit_order":
            await store.set_submitted(conn, order.order_id, at=now)
            for record in await store.order_items(
                conn, order.order_id, state=LineItemState.AWAITING_SUBMISSION
            ):
                row = await store.lock_workflow(conn, record["workflow_id"])
                assert row is not None
                await self._apply(conn, row, Move("order_submitted"), now=now, cause="submit_order")
        elif step == "cancel_order":
            await store.set_cancelled(conn, order.order_id, at=now)
        # Wake every item: they may have been waiting for the provider order to exist.
        items = await store.order_items(conn, order.order_id)
        await schedule_steps(conn, [r["workflow_id"] for r in items], due_at=now)

    async def _order_key_window_passed(self, order_id: str, call: OrderCall, intent: KeyWindowPassed) -> None:
        """An order call's key is past the provider's window: as for an item's call, read provider
        state first. Skip it if the effect is there, re-key the order if it is not; if it cannot be
        told, fail the live items visibly (`key_window_passed`) instead of leaving them waiting."""
        step, key = call.step, intent.request.idempotency_key
        assert key is not None
        async with self._pool.acquire() as conn:
            record = await provider_calls.stored_call(conn, key)
            before = await store.load_order(conn, order_id)
        if record is None or before is None:
            return
        facts = call_facts(record, None)
        reader = ConnectReader(self._client, timeout_s=self._step_timeout_s)
        evidence = await check_effect(reader, facts, provider_order_id=before.provider_order_id)
        now = self._clock.now()
        decision = decide_call(facts, evidence, now=now)
        log.warning(
            "order key window passed: reconciled by reading provider state",
            order_id=order_id, step=step, action=decision.action.value, why=decision.why,
        )  # fmt: skip
        async with self._pool.acquire() as conn, conn.transaction():
            order = await store.lock_order(conn, order_id)
            if order is None or order.generation != record["generation"]:
                return  # re-keyed meanwhile (an operator's replay): the next order step decides
            if decision.action is Action.SKIP:
                await provider_calls.settle(conn, key, status="skipped", now=now, answer=evidence.body)
                await self._order_success(conn, order, call, evidence.body, now=now)
            elif decision.action is Action.REKEY:
                await _rekey_order(conn, order, key, now=now)
            else:
                message = f"{step} was first sent at {intent.first_sent_at.isoformat()}: {decision.why}"
                error = {"code": "key_window_passed", "message": message, "retryable": False, "step": step}
                await self._fail_items(conn, order_id, step, error, now=now)

    async def _fail_items(
        self, conn: asyncpg.Connection, order_id: str, step: str, error: dict[str, Any], *, now: datetime
    ) -> None:
        for record in await store.order_items(conn, order_id):
            if is_settled(record["state"]) or record["state"] == LineItemState.CANCELLING:
                continue
            row = await store.lock_workflow(conn, record["workflow_id"])
            assert row is not None
            await self._apply(conn, row, Move("fail", error=error), now=now, cause=step)


async def _rekey_order(conn: asyncpg.Connection, order: OrderRow, key: str, *, now: datetime) -> None:
    """The order's call under `key` is superseded: its next step runs now, under keys of a new generation."""
    await provider_calls.settle(conn, key, status="rekeyed", now=now)
    await store.set_order_generation(conn, order.order_id, order.generation + 1)
    await schedule(conn, kind=TimerKind.ORDER_STEP, order_id=order.order_id, due_at=now)


def _failure(error: ProviderError, step: str, *, exhausted: bool = True) -> dict[str, Any]:
    """A workflow's `error` for a provider failure. A retryable code that ran out of attempts is
    reported as `<code>_exhausted` (an item's own step; the order step keeps the code)."""
    code = f"{error.code}_exhausted" if exhausted and error.retryable else error.code
    return {
        "code": code,
        "message": error.message,
        "retryable": error.retryable,
        "step": step,
        "provider": error.to_dict(),
    }
