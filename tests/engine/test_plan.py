"""The engine's pure decisions: what a line item does next, from its row and provider snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.engine import (
    Call,
    Move,
    OrderItem,
    Poll,
    Snapshot,
    Wait,
    decide_from_snapshot,
    lapsed_leases,
    plan_item,
    plan_order,
    step_key,
)
from orchestrator.store.rows import OrderRow, WorkflowContext, WorkflowRow

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _row(state: str, spec: dict[str, Any], **context: Any) -> WorkflowRow:
    return WorkflowRow(
        workflow_id=uuid.UUID(int=7), order_id="o-1", line_item_id="li-1", line_item_type="SUBSCRIPTION",
        definition_version=1, state=state, spec={"type": "SUBSCRIPTION", "lineItemId": "li-1", **spec},
        secrets=None, context=WorkflowContext(**context), generation=0, sequence=1, version=1,
        resume_state=None, error=None, attempts=0,
    )  # fmt: skip


def _order(provider_order_id: str | None = "po-1", submitted: bool = False) -> OrderRow:
    return OrderRow(
        order_id="o-1", customer={"customerId": "c-1"}, metadata={}, provider_order_id=provider_order_id,
        state="in_progress", status_sequence=1, generation=0, submitted_at=NOW if submitted else None,
        cancelled_at=None,
    )  # fmt: skip


def test_assigned_number_waits_for_the_provider_order_then_adds_itself() -> None:
    row = _row("received", {"productOfferingId": "plan"})
    assert plan_item(row, _order(provider_order_id=None), now=NOW) == Wait(None)
    plan = plan_item(row, _order(), now=NOW)
    assert isinstance(plan, Call)
    assert plan.step == "add_item"
    assert plan.request.path == "/orders/po-1/line-items"
    assert plan.request.idempotency_key == step_key(row, "add_item")
    assert plan.on_success({}) == Move("item_added", context={"item_added": True})


def test_the_same_step_always_gets_the_same_key_and_bytes() -> None:
    first = plan_item(_row("received", {"productOfferingId": "plan", "msisdn": None}), _order(), now=NOW)
    again = plan_item(_row("received", {"msisdn": None, "productOfferingId": "plan"}), _order(), now=NOW)
    assert isinstance(first, Call)
    assert isinstance(again, Call)
    assert (first.request.idempotency_key, first.request.body) == (
        again.request.idempotency_key,
        again.request.body,
    )


def test_a_valid_lease_is_confirmed_and_an_expired_one_fails_with_a_clear_code() -> None:
    spec = {"msisdn": "+46700000001", "leaseToken": "lease-1"}
    valid = _row("received", {**spec, "leaseExpiresAt": (NOW + timedelta(hours=1)).isoformat()})
    assert plan_item(valid, _order(), now=NOW) == Move("lease_confirmed", context={"msisdn": "+46700000001"})
    expired = _row("number_leased", {**spec, "leaseExpiresAt": (NOW - timedelta(minutes=1)).isoformat()})
    plan = plan_item(expired, _order(), now=NOW)
    assert isinstance(plan, Move)
    assert plan.event == "fail"
    assert plan.error is not None
    assert plan.error["code"] == "lease_expired"


def test_the_crm_only_lease_expiry_is_not_sent_to_the_provider() -> None:
    spec = {
        "msisdn": "+46700000001",
        "leaseToken": "lease-1",
        "leaseExpiresAt": (NOW + timedelta(hours=1)).isoformat(),
    }
    plan = plan_item(_row("number_leased", spec), _order(), now=NOW)
    assert isinstance(plan, Call)
    assert plan.request.body is not None
    assert b"leaseExpiresAt" not in plan.request.body
    assert b"lease-1" in plan.request.body


def test_submitted_items_poll_the_provider() -> None:
    plan = plan_item(_row("submitted", {}), _order(submitted=True), now=NOW)
    assert plan == Poll(provider_order_id="po-1", subscription_id=None, porting=False)


def test_activation_is_deferred_until_the_scheduled_date() -> None:
    row = _row("submitted", {"scheduleActivationAt": "2026-12-01"}, subscription_id="s-1")
    snap = Snapshot(order=None, subscription={"subscriptionId": "s-1", "status": "PENDING"}, porting=None)
    decision = decide_from_snapshot(row, snap, now=NOW)
    assert decision == Move(
        "activation_deferred", context={"subscription_id": "s-1", "scheduled_activation_date": "2026-12-01"}
    )


def test_temp_number_then_the_ported_number() -> None:
    spec = {"msisdn": "+46701111111", "porting": {"details": {}}, "tempNumber": True}
    pending = _row("porting_pending", spec, subscription_id="s-1")
    on_temp = Snapshot(
        order=None, subscription={"subscriptionId": "s-1", "status": "ACTIVATED", "msisdn": "+46709999999"},
        porting={"status": "IN_PROGRESS"},
    )  # fmt: skip
    moved = decide_from_snapshot(pending, on_temp, now=NOW)
    assert isinstance(moved, Move)
    assert moved.event == "temp_number_activated"
    assert moved.context["temporary_msisdn"] == "+46709999999"
    assert moved.context["ported_msisdn"] == "+46701111111"
    temp = _row("temp_number_active", spec, subscription_id="s-1")
    ported = Snapshot(
        order=None, subscription={"subscriptionId": "s-1", "status": "ACTIVATED", "msisdn": "+46701111111"},
        porting={"status": "COMPLETED"},
    )  # fmt: skip
    done = decide_from_snapshot(temp, ported, now=NOW)
    assert isinstance(done, Move)
    assert done.event == "activate"
    assert done.context["msisdn"] == "+46701111111"


def test_a_failed_port_fails_the_workflow_with_port_failed() -> None:
    row = _row(
        "porting_pending", {"msisdn": "+46701111111", "porting": {"details": {}}}, subscription_id="s-1"
    )
    snap = Snapshot(
        order=None, subscription={"subscriptionId": "s-1", "status": "PENDING"}, porting={"status": "FAILED"}
    )
    decision = decide_from_snapshot(row, snap, now=NOW)
    assert isinstance(decision, Move)
    assert decision.event == "fail"
    assert decision.error is not None
    assert decision.error["code"] == "port_failed"


def test_cancelling_a_live_subscription_cancels_it_at_the_provider() -> None:
    row = _row("cancelling", {}, subscription_id="s-1", cancel_reason="NO_NEED")
    plan = plan_item(row, _order(submitted=True), now=NOW)
    assert isinstance(plan, Call)
    assert plan.step == "cancel_subscription"
    assert plan.request.path == "/subscriptions/s-1/cancel"
    assert plan.on_success({}) == Move("compensated")


def test_cancelling_before_anything_reached_the_provider_needs_no_call() -> None:
    assert plan_item(_row("cancelling", {}), _order(provider_order_id=None), now=NOW) == Move("compensated")


def _lease(minutes: float) -> dict[str, Any]:
    expires = (NOW + timedelta(minutes=minutes)).isoformat()
    return {"msisdn": "+46700000001", "leaseToken": "lease-1", "leaseExpiresAt": expires}


def test_a_lease_within_the_safety_margin_counts_as_lapsed_unless_the_submit_is_on_its_way() -> None:
    waiting = _row("awaiting_submission", _lease(4), item_added=True)
    plan = plan_item(waiting, _order(), now=NOW, lease_margin_s=300)
    assert isinstance(plan, Move)
    assert (plan.event, (plan.error or {}).get("code")) == ("fail", "lease_expired")
    # The submit is on its way: its answer decides, not our clock.
    assert plan_item(waiting, _order(), now=NOW, lease_margin_s=300, submitting=True) == Wait(None)
    # Outside the margin: wake when the margin begins.
    later = _row("awaiting_submission", _lease(10), item_added=True)
    assert plan_item(later, _order(), now=NOW, lease_margin_s=300) == Wait(300.0)
    # Before the item is added, the margin applies too: no point putting it in the cart.
    plan = plan_item(_row("received", _lease(4)), _order(), now=NOW, lease_margin_s=300)
    assert isinstance(plan, Move)
    assert plan.event == "fail"


def test_an_item_failed_in_the_cart_is_removed_before_its_siblings_are_submitted() -> None:
    order = _order()
    failed = OrderItem(state="failed", item_added=True, line_item_id="li/1", workflow_id="w-1", generation=2)
    waiting = OrderItem(state="awaiting_submission", item_added=True, line_item_id="li-2", workflow_id="w-2")
    call = plan_order(order, [failed, waiting])
    assert call is not None
    assert (call.step, call.item) == ("remove_failed_item", failed)
    assert (call.request.method, call.request.path) == ("DELETE", "/orders/po-1/line-items/li%2F1")
    assert call.request.idempotency_key == "wf-w-1-remove_item-g2"  # the item's own removal key
    removed = OrderItem(state="failed", item_added=False, line_item_id="li/1", workflow_id="w-1")
    submit = plan_order(order, [removed, waiting])
    assert submit is not None
    assert submit.step == "submit_order"
    # Nothing left to submit: the failed item stays where it is, for the operator.
    assert plan_order(order, [failed]) is None


def test_the_lapsed_leases_a_refused_submit_names() -> None:
    details = [
        {"code": "lease_expired", "property": "lineItems[li-1].leaseToken", "message": "lease expired"},
        {"code": "lease_invalid", "property": "lineItems[li [2]].leaseToken", "message": "not found"},
        {"code": "required", "property": "customer.email", "message": "missing"},
    ]
    assert lapsed_leases(details) == {"li-1", "li [2]"}
    assert lapsed_leases([]) == set()
