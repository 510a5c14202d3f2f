"""Replay of failed workflows: a dry-run plan first, then its execution under the row locks.

Planning reads (no locks, no writes): the workflows, their unsettled provider calls (status
intent/retrying/failed, the workflow's own and its order's), what the provider has for each
(`_reconcile.check_effect`), and what the engine would do from the state it resumes in
(`plan_item`). Execution takes, per order, the order row lock then each workflow's row lock (the
engine's order, so no deadlocks), checks that nothing changed since the plan (row versions and
generations), settles the calls as planned, bumps generations, fires the machine's `resume`,
writes history and status events through the engine's journal, and schedules the next steps now.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.engine import (
    Action,
    Call,
    Journal,
    Move,
    Poll,
    ProviderReader,
    Wait,
    call_facts,
    check_effect,
    decide_call,
    order_key,
    plan_item,
    port_rejected,
    porting_details,
    porting_digest,
    step_key,
)
from orchestrator.events import LineItemState
from orchestrator.machines import PORTING_STATES, Transitioned, decide, is_terminal
from orchestrator.ops._errors import ActionRefused, InvalidInput
from orchestrator.ops._filters import WorkflowFilter, known_states
from orchestrator.store import provider_calls, read_models, timers
from orchestrator.store import workflows as store
from orchestrator.store.provider_calls import UNSETTLED
from orchestrator.store.rows import OrderRow, WorkflowRow


@dataclass(frozen=True)
class CallPlan:
    idempotency_key: str
    step: str
    method: str
    path: str
    status: str
    order_level: bool
    action: str
    why: str
    new_key: str | None = None  # under the bumped generation (rekey; or skip alongside a rekey)
    answer: Any = field(default=None, repr=False, compare=False)  # the read that proved a skip


@dataclass
class WorkflowPlan:
    workflow_id: str
    order_id: str
    line_item_id: str
    line_item_type: str
    state: str
    version: int
    error_code: str | None
    replayable: bool
    refused: str | None = None
    resume_to: str | None = None
    generation: int = 0
    generation_after: int = 0
    next_step: dict[str, Any] = field(default_factory=dict)
    calls: list[CallPlan] = field(default_factory=list)
    # A rejected port is requested again (with the details the CRM last sent), not polled again.
    request_port: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class OrderPlan:
    order_id: str
    generation: int
    generation_after: int
    calls: list[CallPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReplayPlan:
    reason: str
    from_state: str | None
    filter: dict[str, Any]
    planned_at: str
    workflows: list[WorkflowPlan]
    orders: list[OrderPlan]

    @property
    def fingerprint(self) -> str:
        """Everything execution depends on; confirming a plan means confirming this."""
        essence = {
            "w": sorted(
                (
                    w.workflow_id,
                    w.version,
                    w.replayable,
                    w.resume_to,
                    w.request_port,
                    w.generation_after,
                    sorted((c.idempotency_key, c.action) for c in w.calls),
                )
                for w in self.workflows
            ),
            "o": sorted(
                (
                    o.order_id,
                    o.generation,
                    o.generation_after,
                    sorted((c.idempotency_key, c.action) for c in o.calls),
                )
                for o in self.orders
            ),
        }
        return hashlib.sha256(json.dumps(essence, default=str).encode()).hexdigest()[:16]

    @property
    def replayable(self) -> list[WorkflowPlan]:
        return [w for w in self.workflows if w.replayable]

    def to_dict(self) -> dict[str, Any]:
        def call(c: CallPlan) -> dict[str, Any]:
            return {k: v for k, v in asdict(c).items() if k != "answer"}

        return {
            "reason": self.reason,
            "from_state": self.from_state,
            "filter": self.filter,
            "planned_at": self.planned_at,
            "fingerprint": self.fingerprint,
            "summary": {
                "workflows": len(self.workflows),
                "replayable": len(self.replayable),
                "refused": len(self.workflows) - len(self.replayable),
                "actions": _action_counts(self),
            },
            "workflows": [{**asdict(w), "calls": [call(c) for c in w.calls]} for w in self.workflows],
            "orders": [{**asdict(o), "calls": [call(c) for c in o.calls]} for o in self.orders],
        }


def _action_counts(plan: ReplayPlan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in [c for w in plan.replayable for c in w.calls] + [c for o in plan.orders for c in o.calls]:
        counts[c.action] = counts.get(c.action, 0) + 1
    return counts


def validate_from_state(from_state: str | None) -> str | None:
    if from_state is None or not from_state.strip():
        return None
    state = from_state.strip()
    if state not in known_states():
        raise InvalidInput(f"from_state: unknown state {state!r}", field="from_state")
    return state


def replay_filter(flt: WorkflowFilter) -> WorkflowFilter:
    """Replay applies to failed workflows, and, with `stuck_longer_than`, to workflows in any state
    short of done that have not moved for that long. Otherwise a filter naming other states is a
    mistake (422)."""
    if flt.is_empty():
        raise InvalidInput("replay needs workflow ids or at least one filter", field="filter")
    if flt.stuck_longer_than is not None:
        return flt  # the query leaves out activated, completed and cancelled
    others = [s for s in flt.states if s != LineItemState.FAILED]
    if others:
        raise InvalidInput(
            f"state: replay applies to failed workflows only, not {', '.join(others)}", field="state"
        )
    return flt if flt.workflow_ids else replace(flt, states=(LineItemState.FAILED.value,))


def describe_next(plan: Any) -> dict[str, Any]:
    """What the engine does first after the resume (pure `plan_item` output, for people)."""
    if isinstance(plan, Call):
        return {
            "kind": "call",
            "step": plan.step,
            "method": plan.request.method,
            "path": plan.request.path,
            "idempotency_key": plan.request.idempotency_key,
        }
    if isinstance(plan, Poll):
        return {"kind": "poll", "step": "poll", "what": "read the provider order/subscription and decide"}
    if isinstance(plan, Move):
        return {"kind": "move", "step": plan.event or "update", "event": plan.event}
    assert isinstance(plan, Wait)
    return {"kind": "wait", "step": "wait", "what": "waits for the order step (create or submit the order)"}


async def _load_order(conn: asyncpg.Connection, order_id: str) -> OrderRow:
    order = await store.load_order(conn, order_id)
    assert order is not None, "workflows reference their order"
    return order


async def _call_plans(
    reader: ProviderReader,
    records: list[Any],
    *,
    line_item_id: str | None,
    provider_order_id: str | None,
    now: datetime,
) -> list[CallPlan]:
    plans = []
    for record in records:
        facts = call_facts(record, line_item_id)
        evidence = await check_effect(reader, facts, provider_order_id=provider_order_id)
        decision = decide_call(facts, evidence, now=now)
        plans.append(
            CallPlan(
                idempotency_key=facts.idempotency_key,
                step=facts.step,
                method=facts.method,
                path=facts.path,
                status=facts.status,
                order_level=not facts.workflow_level,
                action=decision.action.value,
                why=decision.why,
                answer=evidence.body if decision.action is Action.SKIP else None,
            )
        )
    return plans


def _with_new_keys(calls: list[CallPlan], *, bumped: bool, new_key: Callable[[str], str]) -> list[CallPlan]:
    if not bumped:
        return calls
    return [replace(c, new_key=new_key(c.step)) if c.action in ("rekey", "skip") else c for c in calls]


async def plan_replay(
    conn: asyncpg.Connection,
    reader: ProviderReader,
    *,
    selection: list[WorkflowRow],
    from_state: str | None,
    reason: str,
    flt: WorkflowFilter,
    now: datetime,
) -> ReplayPlan:
    """The dry run. Reads only; the provider is asked with GETs."""
    orders: dict[str, OrderPlan] = {}
    order_rows: dict[str, OrderRow] = {}
    for order_id in sorted({row.order_id for row in selection}):
        order = order_rows[order_id] = await _load_order(conn, order_id)
        records = await provider_calls.unsettled_calls(
            conn, order_id=order_id, workflow_id=None, generation=order.generation
        )
        calls = await _call_plans(
            reader, records, line_item_id=None, provider_order_id=order.provider_order_id, now=now
        )
        bumped = any(c.action == "rekey" for c in calls)
        after = replace(order, generation=order.generation + 1) if bumped else order
        orders[order_id] = OrderPlan(
            order_id=order_id,
            generation=order.generation,
            generation_after=after.generation,
            calls=_with_new_keys(calls, bumped=bumped, new_key=functools.partial(order_key, after)),
        )
    workflows = [
        await _plan_workflow(
            conn,
            reader,
            row,
            order=order_rows[row.order_id],
            order_plan=orders[row.order_id],
            from_state=from_state,
            stuck=flt.stuck_longer_than is not None,
            now=now,
        )
        for row in selection
    ]
    await _warn_about_siblings(conn, workflows, orders)
    return ReplayPlan(
        reason=reason,
        from_state=from_state,
        filter=flt.to_dict(),
        planned_at=now.isoformat(),
        workflows=workflows,
        orders=[o for o in orders.values() if o.calls or o.warnings],
    )


async def _plan_workflow(
    conn: asyncpg.Connection,
    reader: ProviderReader,
    row: WorkflowRow,
    *,
    order: OrderRow,
    order_plan: OrderPlan,
    from_state: str | None,
    stuck: bool,
    now: datetime,
) -> WorkflowPlan:
    plan = WorkflowPlan(
        workflow_id=str(row.workflow_id),
        order_id=row.order_id,
        line_item_id=row.line_item_id,
        line_item_type=row.line_item_type,
        state=row.current,
        version=row.version,
        error_code=(row.error or {}).get("code"),
        replayable=False,
        generation=row.generation,
        generation_after=row.generation,
    )
    target: str | None = None  # a stuck workflow steps again where it is
    if row.current != LineItemState.FAILED:
        if not stuck or is_terminal(row.current):
            plan.refused = f"state is {row.current}; only failed or stuck workflows are replayed"
            return plan
    elif (target := from_state or row.resume_state) is None or not isinstance(
        decide(
            line_item_type=row.line_item_type,
            definition_version=row.definition_version,
            state=LineItemState.FAILED.value,
            event="resume",
            resume_state=target,
        ),
        Transitioned,
    ):
        plan.refused = f"the {row.line_item_type} machine does not resume from failed to {target}"
        return plan
    plan.resume_to = target
    records = await provider_calls.unsettled_calls(
        conn, order_id=row.order_id, workflow_id=row.workflow_id, generation=row.generation
    )
    calls = await _call_plans(
        reader,
        records,
        line_item_id=row.line_item_id,
        provider_order_id=order.provider_order_id,
        now=now,
    )
    bumped = any(c.action == "rekey" for c in calls)
    after = replace(
        copy.deepcopy(row), state=target or row.current, generation=row.generation + (1 if bumped else 0)
    )
    if port_rejected(row) and target in PORTING_STATES:
        # Polling the port again would only read its rejection: request it again, under a key
        # of its own.
        plan.request_port = True
        after.context.port_request_due = True
        after.generation = row.generation + 1
        if row.context.rejected_porting == porting_digest(porting_details(row)):
            plan.warnings.append(
                "these are the very porting details the donor rejected: unless the rejection was "
                "not about them, have the CRM send corrected ones (crm.order.line_item.updated)"
            )
    plan.generation_after = after.generation
    plan.calls = _with_new_keys(calls, bumped=bumped, new_key=functools.partial(step_key, after))
    blocked = [c for c in plan.calls + order_plan.calls if c.action == "blocked"]
    if blocked:
        plan.refused = "; ".join(f"{c.step}: {c.why}" for c in blocked)
        return plan
    order_after = replace(order, generation=order_plan.generation_after)
    plan.next_step = describe_next(plan_item(after, order_after, now=now))
    if plan.request_port:
        plan.next_step["what"] = "requests the port again with the porting details the CRM last sent"
    plan.replayable = True
    return plan


async def _warn_about_siblings(
    conn: asyncpg.Connection, workflows: list[WorkflowPlan], orders: dict[str, OrderPlan]
) -> None:
    """An order is submitted once all its live items are in: a failed sibling left out of the
    replay will miss that submission. Say so before the operator confirms."""
    chosen = {w.workflow_id for w in workflows if w.replayable}
    for order_id, order_plan in orders.items():
        siblings = await store.order_items(conn, order_id, state=LineItemState.FAILED)
        left = [s["line_item_id"] for s in siblings if str(s["workflow_id"]) not in chosen]
        if left and any(w.order_id == order_id and w.replayable for w in workflows):
            order_plan.warnings.append(
                f"failed line item(s) {', '.join(sorted(left))} of order {order_id} are not in this replay; "
                "the order may be submitted without them"
            )


@dataclass
class ReplayResult:
    workflow_id: str
    result: str  # resumed | stale | refused
    detail: str
    state: str | None = None
    generation: int | None = None
    calls: list[dict[str, str]] = field(default_factory=list)


async def _settle(conn: asyncpg.Connection, call: CallPlan, *, now: datetime) -> bool:
    """Apply one call decision; False if the call is no longer unsettled (the plan is stale)."""
    if call.action == "resend":
        return await provider_calls.call_status(conn, call.idempotency_key) in UNSETTLED
    new_status = "skipped" if call.action == "skip" else "rekeyed"
    changed = await provider_calls.settle(
        conn, call.idempotency_key, status=new_status, now=now, answer=call.answer
    )
    if changed and call.action == "skip" and call.new_key:
        # The generation moves on for another call: the skipped step's new key must count as done too.
        await provider_calls.copy_as_skipped(conn, call.idempotency_key, new_key=call.new_key)
    return changed


async def execute_replay(
    pool: asyncpg.Pool,
    plan: ReplayPlan,
    *,
    actor: str,
    audit_id: int,
    journal: Journal,
    now: Callable[[], datetime],
    rate_per_s: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[ReplayResult]:
    """Carry out `plan` order by order (one transaction each), at most `rate_per_s` workflows a
    second. A workflow that changed since the plan is left alone (`stale`)."""
    results = [
        ReplayResult(workflow_id=w.workflow_id, result="refused", detail=w.refused or "")
        for w in plan.workflows
        if not w.replayable
    ]
    by_order: dict[str, list[WorkflowPlan]] = {}
    for w in plan.replayable:
        by_order.setdefault(w.order_id, []).append(w)
    order_plans = {o.order_id: o for o in plan.orders}
    for index, (order_id, group) in enumerate(sorted(by_order.items())):
        if index:
            await sleep(len(group) / rate_per_s)
        async with pool.acquire() as conn, conn.transaction():
            results.extend(
                await _execute_order(
                    conn,
                    order_id,
                    group,
                    order_plans.get(order_id),
                    plan=plan,
                    actor=actor,
                    audit_id=audit_id,
                    journal=journal,
                    now=now(),
                )
            )
            faults.reach("operator.before_commit", "replay")
        faults.reach("operator.after_commit", "replay")
    return results


async def _execute_order(
    conn: asyncpg.Connection,
    order_id: str,
    group: list[WorkflowPlan],
    order_plan: OrderPlan | None,
    *,
    plan: ReplayPlan,
    actor: str,
    audit_id: int,
    journal: Journal,
    now: datetime,
) -> list[ReplayResult]:
    order = await store.lock_order(conn, order_id)
    assert order is not None
    if order_plan is not None:
        if order.generation != order_plan.generation:
            return [ReplayResult(w.workflow_id, "stale", "the order changed since the plan") for w in group]
        for call in order_plan.calls:
            if not await _settle(conn, call, now=now):
                raise ActionRefused(f"order call {call.idempotency_key} changed since the plan; plan again")
        if order_plan.generation_after != order_plan.generation:
            await store.set_order_generation(conn, order_id, order_plan.generation_after)
    results = []
    for w in sorted(group, key=lambda w: w.workflow_id):
        results.append(
            await _resume_one(conn, w, plan=plan, actor=actor, audit_id=audit_id, journal=journal, now=now)
        )
    return results


async def _resume_one(
    conn: asyncpg.Connection,
    w: WorkflowPlan,
    *,
    plan: ReplayPlan,
    actor: str,
    audit_id: int,
    journal: Journal,
    now: datetime,
) -> ReplayResult:
    row = await store.lock_workflow(conn, uuid.UUID(w.workflow_id))
    if (
        row is None
        or row.current != (LineItemState.FAILED if w.resume_to is not None else w.state)
        or row.version != w.version
        or row.generation != w.generation
    ):
        found = "gone" if row is None else f"{row.current}, version {row.version}"
        return ReplayResult(w.workflow_id, "stale", f"changed since the plan (now {found}); plan again")
    settled = []
    for call in w.calls:
        if not await _settle(conn, call, now=now):
            return ReplayResult(w.workflow_id, "stale", f"call {call.idempotency_key} changed since the plan")
        settled.append({"idempotency_key": call.idempotency_key, "action": call.action})
    row.generation = w.generation_after
    if w.resume_to is None:
        # Stuck, not failed: no state to leave, so no transition; it steps again now (the audit
        # row says who did it and why), and so does its order, whose calls may have been settled.
        due = await timers.db_now(conn)
        await store.save(conn, row, next_step_at=due)
        await timers.schedule(conn, kind=timers.TimerKind.ORDER_STEP, order_id=row.order_id, due_at=due)
    else:
        await _resume(
            conn, row, w, plan=plan, actor=actor, audit_id=audit_id, journal=journal, settled=settled, now=now
        )
    detail = f"steps again in {row.current}" if w.resume_to is None else f"resumed to {row.current}"
    return ReplayResult(
        w.workflow_id, "resumed", detail, state=row.current, generation=row.generation, calls=settled
    )


async def _resume(
    conn: asyncpg.Connection,
    row: WorkflowRow,
    w: WorkflowPlan,
    *,
    plan: ReplayPlan,
    actor: str,
    audit_id: int,
    journal: Journal,
    settled: list[dict[str, str]],
    now: datetime,
) -> None:
    """Fire `resume` from `failed` to the planned state, with the replay's history details."""
    row.resume_state = w.resume_to
    if w.request_port:
        row.context.port_request_due = True
        row.generation = w.generation + 1
    previous_error = row.error
    details = {
        "audit_id": audit_id,
        "reason": plan.reason,
        "previous_error": previous_error,
        "calls": settled,
        "generation": row.generation,
    }
    outcome = await journal.transition(
        conn,
        row,
        Move("resume"),
        now=now,
        cause=f"operator:{actor}",
        step_due=await timers.db_now(conn),
        details=details,
        wake_order=True,
    )
    if not isinstance(outcome, Transitioned):
        raise ActionRefused(f"the machine refused resume for {w.workflow_id}: {outcome.reason}")


async def load_selection(
    conn: asyncpg.Connection, flt: WorkflowFilter, *, now: datetime
) -> list[WorkflowRow]:
    return await read_models.select_workflow_rows(conn, flt.query(now=now))
