"""Model-based: hypothesis drives one line item's pure engine (the planner in engine/_plan.py and the
state machines) through arbitrary interleavings of CRM events (amend, cancel), the order step
(provider order created, submitted), timer firings with any provider answer, provider snapshots
(webhooks arrive duplicated, late and out of order, and each one only makes the next poll read
*some* provider state — so arbitrary snapshot sequences cover them) and a moving clock.

It applies decisions through the engine's own pure half, `Journal.fire` (what `StepRunner._apply`
runs before it writes), and checks after every rule:

- only edges declared by the machine class are ever taken (read from the class's states, not
  through `try_event`);
- a terminal state (`activated`, `completed`, `cancelled`) never changes again;
- the planner never proposes an event the machine refuses (the engine would log and stop: the
  item would be stranded);
- a step never asks to run again at once without changing anything (a hot loop against the
  provider), and an unsettled item never waits for a poke nobody will send.

The interleavings come from TEST_SEED (tests/seeds.py): a failure replays with the seed it prints.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator.connect import ProviderStateConflict, ProviderUnavailable
from orchestrator.engine import (
    Call,
    CallOutcome,
    Journal,
    Move,
    Plan,
    Poll,
    Snapshot,
    StepRunner,
    Wait,
    decide_from_snapshot,
    plan_item,
)
from orchestrator.machines import TERMINAL_STATES, Transitioned, is_settled, machine_for
from orchestrator.store.rows import OrderRow, WorkflowContext, WorkflowRow

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PORTED = "+15550001111"
TEMPORARY = "+15550002222"
# Unsettled states in which waiting for a poke is correct: the order step pokes every item after it
# creates the provider order and submits it once every live item is in.
POKED_BY_ORDER_STEP = frozenset({"received", "number_leased", "awaiting_submission"})
# Only `_judge` is used: how the engine turns a provider's error into a decision (pure).
JUDGE = StepRunner(pool=None, client=None, clock=None, status_topic="unused")  # type: ignore[arg-type]


def _spec(kind: str) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "SUBSCRIPTION", "lineItemId": "li-1", "productOfferingId": "plan-a"}
    if kind == "leased":
        expires = (START + timedelta(hours=1)).isoformat()
        base |= {"msisdn": "+15550003333", "leaseToken": "lease-1", "leaseExpiresAt": expires}
    elif kind in ("port", "temp_port"):
        base |= {"msisdn": PORTED, "porting": {"details": {"accountNumber": "****"}}}
        if kind == "temp_port":
            base["tempNumber"] = True
    elif kind == "scheduled":
        base["scheduleActivationAt"] = (START.date() + timedelta(days=3)).isoformat()
    elif kind in ("LICENSE", "TOP_UP"):
        base = {"type": kind, "lineItemId": "li-1", "productOfferingId": "x"}
    return base


def _edges(line_item_type: str) -> set[tuple[str, str, str]]:
    machine = machine_for(line_item_type)
    return {(s.id, t.event, t.target.id) for s in machine.states for t in s.transitions}


snapshots = st.builds(
    Snapshot,
    order=st.none()
    | st.fixed_dictionaries(
        {
            "state": st.sampled_from(["SUBMITTED", "PROCESSING", "COMPLETED", "CANCELLED", "EXPIRED"]),
            "createdEntities": st.fixed_dictionaries(
                {
                    "subscriptions": st.lists(
                        st.just({"createdByLineItem": "li-1", "subscriptionId": "sub-1"}), max_size=1
                    )
                }
            ),
        }
    ),
    subscription=st.none()
    | st.fixed_dictionaries(
        {
            "subscriptionId": st.just("sub-1"),
            "status": st.sampled_from(["PENDING", "ACTIVATED", "CANCELLED"]),
            "msisdn": st.sampled_from([None, PORTED, TEMPORARY]),
        }
    ),
    porting=st.none()
    | st.fixed_dictionaries(
        {"status": st.sampled_from(["PENDING", "IN_PROGRESS", "SCHEDULED", "COMPLETED", "FAILED"])}
    ),
)
answers = st.sampled_from(["success", "retryable", "permanent"])


class OneLineItem(RuleBasedStateMachine):
    row: WorkflowRow
    order: OrderRow

    @initialize(
        kind=st.sampled_from(["assigned", "leased", "port", "temp_port", "scheduled", "LICENSE", "TOP_UP"])
    )
    def start(self, kind: str) -> None:
        spec = _spec(kind)
        machine = machine_for(spec["type"])
        self.row = WorkflowRow(
            workflow_id=uuid.UUID(int=1),  # one item per run: a fixed id keeps examples reproducible
            order_id="o-1",
            line_item_id="li-1",
            line_item_type=spec["type"],
            definition_version=int(machine.DEFINITION_VERSION),
            state=str(machine.initial_state.value),
            spec=spec,
            secrets=None,
            context=WorkflowContext(),
            generation=0,
            sequence=1,
            version=0,
            resume_state=None,
            error=None,
            attempts=0,
        )
        self.order = OrderRow(
            order_id="o-1",
            customer={},
            metadata={},
            provider_order_id=None,
            state="in_progress",
            status_sequence=1,
            generation=0,
            submitted_at=None,
            cancelled_at=None,
        )
        self.now = START
        self.edges = _edges(spec["type"])
        self.terminal: str | None = None

    # --- what the engine does with a decision (StepRunner._apply) ---------------------------------

    def _fire(self, move: Move, *, planned: bool) -> bool:
        before = self.row.current
        outcome = Journal.fire(self.row, move)
        event = move.event
        if not isinstance(outcome, Transitioned):
            assert not planned, f"the planner proposed {event!r} in {before!r} and the machine refused it"
            return False
        assert (before, event, self.row.current) in self.edges, (before, event, self.row.current)
        if outcome.changed:
            self.row.sequence += 1
        return True

    def _apply(self, plan: Plan) -> None:
        if isinstance(plan, Wait):
            return
        assert isinstance(plan, Move)
        if not plan.event:
            assert plan.context, "a Move without event or context changes nothing"
            self.row.context.update(plan.context)
            return
        self._fire(plan, planned=True)

    # --- rules ----------------------------------------------------------------------------------

    @rule(offering=st.sampled_from(["plan-b", "plan-c"]))
    def crm_amends(self, offering: str) -> None:
        if self._fire(Move("amend"), planned=False):
            self.row.spec = {**self.row.spec, "productOfferingId": offering}
            self.row.generation += 1

    @rule()
    def crm_cancels(self) -> None:
        if self.row.current != "cancelling":  # the intake leaves a cancelling item alone
            self._fire(Move("cancel"), planned=False)

    @rule()
    def order_step_creates_the_provider_order(self) -> None:
        if self.order.provider_order_id is None:
            self.order.provider_order_id = "P-1"

    @rule()
    def order_step_submits(self) -> None:
        if (
            self.order.provider_order_id
            and self.order.submitted_at is None
            and self.row.current == "awaiting_submission"
        ):
            self.order.submitted_at = self.now
            self._fire(Move("order_submitted"), planned=True)

    @rule(seconds=st.sampled_from([1, 600, 3600, 2 * 86400, 5 * 86400]))
    def clock_moves(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(answer=answers, snapshot=snapshots)
    def timer_fires(self, answer: str, snapshot: Snapshot) -> None:
        if is_settled(self.row.current) and self.row.current != "failed":
            plan = plan_item(self.row, self.order, now=self.now)
            assert isinstance(plan, Wait), f"a terminal item planned {plan}"
            return
        if self.row.current == "failed":
            return  # waits for an operator; resume is theirs, not the engine's
        waiting = ("submitted", "porting_pending", "temp_number_active", "activation_scheduled")
        if self.row.current in waiting and self.order.provider_order_id is None:
            return  # cannot happen: submitted implies a provider order
        if self.row.current == "cancelling" and self.order.submitted_at and not self.order.provider_order_id:
            return
        plan = plan_item(self.row, self.order, now=self.now)
        decision = self._decide(plan, answer, snapshot)
        if isinstance(decision, Wait):
            assert decision.delay_s != 0, (
                f"{self.row.current}: run again at once with nothing changed (hot loop)"
            )
            if decision.delay_s is None:
                assert self.row.current in POKED_BY_ORDER_STEP, (
                    f"{self.row.current} waits for a poke that never comes"
                )
        self._apply(decision)

    def _decide(self, plan: Plan, answer: str, snapshot: Snapshot) -> Move | Wait:
        if isinstance(plan, Call):
            if answer == "success":
                return plan.on_success({"ok": True})
            error = (
                ProviderUnavailable("injected")
                if answer == "retryable"
                else ProviderStateConflict("injected")
            )
            outcome = CallOutcome(response=None, error=error, latency_ms=0)
            return JUDGE._judge(self.row, plan.step, outcome) or plan.on_success(None)  # the engine's verdict
        if isinstance(plan, Poll):
            return decide_from_snapshot(self.row, snapshot, now=self.now)
        return plan

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def terminal_states_are_stable(self) -> None:
        if not hasattr(self, "row"):
            return
        if self.terminal is not None:
            assert self.row.current == self.terminal, f"left terminal {self.terminal} for {self.row.current}"
        elif self.row.current in TERMINAL_STATES:
            self.terminal = self.row.current


OneLineItem.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "200")),  # deeper: MODEL_EXAMPLES=5000
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOneLineItem = OneLineItem.TestCase


def test_regression_cancelling_after_submission_learns_the_subscription_then_cancels_it() -> None:
    """Found by the model (hot-loop invariant): cancelling a submitted item whose subscription id was
    not yet known answered Wait(0) without storing the id, so the step polled the provider again at
    once, forever. The decision must carry the id so that the next plan cancels the subscription."""
    state = OneLineItem()
    state.start(kind="assigned")
    state.order_step_creates_the_provider_order()
    state.timer_fires(answer="success", snapshot=Snapshot(None, None, None))  # item added
    state.order_step_submits()
    state.crm_cancels()
    assert state.row.current == "cancelling"
    created = {"createdByLineItem": "li-1", "subscriptionId": "sub-1"}
    found = Snapshot(
        order={"state": "COMPLETED", "createdEntities": {"subscriptions": [created]}},
        subscription={"subscriptionId": "sub-1", "status": "ACTIVATED", "msisdn": None},
        porting=None,
    )
    state.timer_fires(answer="success", snapshot=found)
    plan = plan_item(state.row, state.order, now=state.now)
    assert isinstance(plan, Call), plan
    assert plan.step == "cancel_subscription"


def test_regression_a_refused_compensation_does_not_strand_the_item_in_cancelling() -> None:
    """Found by the model: a permanent error on a compensation call (remove_item after the order was
    submitted meanwhile: 409) was judged `fail`, which `cancelling` refuses; the engine logged it and
    scheduled nothing, so the item stayed in `cancelling` forever. Now it keeps the provider's
    answer and plans again later."""
    state = OneLineItem()
    state.start(kind="assigned")
    state.order_step_creates_the_provider_order()
    state.timer_fires(answer="success", snapshot=Snapshot(None, None, None))  # item added
    state.crm_cancels()
    state.timer_fires(answer="permanent", snapshot=Snapshot(None, None, None))  # remove_item refused
    assert state.row.current == "cancelling"
    assert state.row.context.compensation_error["step"] == "remove_item"
