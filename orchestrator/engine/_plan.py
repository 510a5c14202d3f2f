"""What a workflow should do next: pure decisions from its row, its order and provider snapshots.

No I/O here, so every rule is unit-testable; `_steps.py` runs the plans under the row lock. Every
provider request is built by `connect.Requests`, which escapes ids into path segments and keeps
idempotency keys within the provider's limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from orchestrator.connect import PreparedRequest, ProviderError, Requests, bounded_key
from orchestrator.engine._transition import Amended, Move
from orchestrator.events import LineItemState
from orchestrator.machines import ONE_OFF_ITEM_TYPES, POLLING_STATES, PORTING_STATES, is_settled
from orchestrator.store.rows import OrderRow, WorkflowRow

# CRM-only fields that are not part of the Connect line item shape.
CRM_ONLY_FIELDS = frozenset({"leaseExpiresAt"})

S = LineItemState


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `delay_s` from now (a poll), or until poked (delay None)."""

    delay_s: float | None


@dataclass(frozen=True)
class Call:
    """A provider call with an idempotency key; `on_success` turns the answer into a Move, and
    `on_refused`, when given, a permanent refusal (else the workflow fails)."""

    step: str
    request: PreparedRequest
    on_success: Callable[[Any], Move | Wait]
    on_refused: Callable[[ProviderError], Move | Wait] | None = None


@dataclass(frozen=True)
class Poll:
    """Read provider state (order, subscription, porting) and decide with `decide_from_snapshot`."""

    provider_order_id: str
    subscription_id: str | None
    porting: bool


Plan = Move | Wait | Call | Poll


def step_key(row: WorkflowRow, step: str) -> str:
    """Deterministic idempotency key: the same (workflow, step, generation) always maps to it."""
    return bounded_key(f"wf-{row.workflow_id}-{step}-g{row.generation}")


def order_key(order: OrderRow, step: str) -> str:
    """As `step_key`, for the order's own calls. CRM order ids are free text of any length; past
    the provider's 256 characters the key is shortened deterministically (`bounded_key`)."""
    return bounded_key(f"order-{order.order_id}-{step}-g{order.generation}")


def provider_line_item(row: WorkflowRow) -> dict[str, Any]:
    """The Connect line item: the CRM's shape minus CRM-only fields, with secrets restored."""
    body = {k: v for k, v in row.spec.items() if k not in CRM_ONLY_FIELDS}
    if row.secrets and "porting" in row.secrets:
        body["porting"] = row.secrets["porting"]
    return body


def lease_expires_at(row: WorkflowRow) -> datetime | None:
    """When the CRM says the number's lease lapses (None: no lease, or no time given)."""
    expires = row.spec.get("leaseExpiresAt") if row.spec.get("leaseToken") else None
    return None if expires is None else datetime.fromisoformat(expires)


def lease_expired(row: WorkflowRow, now: datetime, *, margin_s: float = 0.0) -> bool:
    """The lease lapses within `margin_s` of `now` (or has): too late to count on it."""
    expires = lease_expires_at(row)
    return expires is not None and expires - timedelta(seconds=margin_s) <= now


def _fail(
    code: str,
    message: str,
    step: str,
    *,
    context: dict[str, Any] | None = None,
    amended: Amended | None = None,
) -> Move:
    error = {"code": code, "message": message, "retryable": False, "step": step}
    return Move("fail", context or {}, error, amended=amended)


def plan_item(  # noqa: PLR0911 - one rule per state
    row: WorkflowRow,
    order: OrderRow,
    *,
    now: datetime,
    lease_margin_s: float = 0.0,
    submitting: bool = False,
) -> Plan:
    """The next step of a line item workflow in its current state.

    `lease_margin_s`: a lease that lapses within this margin is treated as lapsed (the provider's
    clock and the submit's own time must not decide). `submitting`: the order's submit is on its
    way, so no lease check applies (the submit's answer decides)."""
    state = row.current
    if state in (S.RECEIVED, S.NUMBER_LEASED):
        return _plan_cart(row, order, now=now, lease_margin_s=lease_margin_s)
    if state == S.AWAITING_SUBMISSION:
        expires = lease_expires_at(row)
        if expires is None or submitting:
            return Wait(None)  # the order step submits once every item is in
        if lease_expired(row, now, margin_s=lease_margin_s):
            return _fail(
                "lease_expired",
                f"the number lease lapses at {expires.isoformat()}, within {lease_margin_s:g} s, before "
                "the order could be submitted; send crm.order.line_item.updated with a fresh lease",
                "lease_check",
            )
        # Wake when the margin begins: if the order is still not submitted then, fail clearly
        # (the order step then takes the item out of the provider order and submits the rest).
        return Wait(max(0.0, (expires - timedelta(seconds=lease_margin_s) - now).total_seconds()))
    if state in PORTING_STATES and row.context.subscription_id:
        porting = _porting_call(row)
        if porting is not None:
            return porting
    if state in POLLING_STATES and state != S.CANCELLING:
        assert order.provider_order_id is not None
        return Poll(
            provider_order_id=order.provider_order_id,
            subscription_id=row.context.subscription_id,
            porting=bool(row.spec.get("porting")),
        )
    if state == S.CANCELLING:
        return _plan_compensation(row, order)
    return Wait(None)  # activated, completed, cancelled, failed: nothing until an operator acts


def _plan_cart(row: WorkflowRow, order: OrderRow, *, now: datetime, lease_margin_s: float) -> Plan:
    """Before submission: confirm a lease, then put the item in the provider order (or update it there)."""
    state = row.current
    if lease_expired(row, now, margin_s=lease_margin_s):
        return _fail(
            "lease_expired",
            f"the number lease for {row.spec.get('msisdn')} expired at {row.spec.get('leaseExpiresAt')} "
            "before the order could be submitted; send crm.order.line_item.updated with a fresh lease",
            "lease_check",
        )
    if state == S.RECEIVED and row.spec.get("leaseToken"):
        return Move("lease_confirmed", context={"msisdn": row.spec.get("msisdn")})
    if order.provider_order_id is None:
        return Wait(None)  # the order step creates the provider order, then pokes us
    if order.submitted_at is not None:
        return _fail(
            "order_already_submitted",
            "the provider order was submitted before this line item could be added",
            "add_item",
        )
    body = provider_line_item(row)
    if row.context.item_added:
        request = Requests.update_line_item(
            order.provider_order_id,
            body,
            line_item_id=row.line_item_id,
            idempotency_key=step_key(row, "update_item"),
        )
        return Call("update_item", request, lambda _: Move("item_added", context={"item_added": True}))
    request = Requests.add_line_item(order.provider_order_id, body, idempotency_key=step_key(row, "add_item"))
    return Call("add_item", request, lambda _: Move("item_added", context={"item_added": True}))


# What a call, once answered, establishes about the line item whatever happened since it was sent
# (a cancel or an amendment meanwhile): the context to keep from a settled left-over call.
SETTLED_FACTS: dict[str, dict[str, Any]] = {
    "add_item": {"item_added": True},
    "update_item": {"item_added": True},
    "remove_item": {"item_added": False},
}


def settle_call(step: str, request: PreparedRequest) -> Call:
    """A call left unanswered by a worker that died, to send again under its key only to learn
    what it did: its answer changes the context (`SETTLED_FACTS`), never the state; a refusal
    means it did nothing."""
    facts = SETTLED_FACTS.get(step, {})
    return Call(step, request, lambda _: Move("", context=facts), on_refused=lambda _: Move("", context={}))


PORTING_DETAILS = "porting_details"
KEEP_TEMPORARY_NUMBER = "keep_temporary_number"
_PORTING_SENT = {"porting_update_due": None, "port_request_due": None}


def amendment_change(row: WorkflowRow, spec: dict[str, Any], secrets: dict[str, Any] | None) -> str:
    """What a CRM amendment changes, as the `change` its `amended` event reports: the porting
    details, the number's lease, the activation date, or (anything else) the line item."""
    if (secrets or {}).get("porting") != (row.secrets or {}).get("porting") and secrets:
        return PORTING_DETAILS
    lease = ("leaseToken", "leaseExpiresAt", "msisdn")
    if any(spec.get(k) != row.spec.get(k) for k in lease) and spec.get("leaseToken"):
        return "lease"
    if spec.get("scheduleActivationAt") != row.spec.get("scheduleActivationAt"):
        return "schedule"
    return "line_item"


def port_rejected(row: WorkflowRow) -> bool:
    """Failed because the donor rejected the port, with the subscription in place: corrected
    details (or an operator's replay) request the port again on that subscription."""
    return (
        row.current == S.FAILED
        and (row.error or {}).get("code") == "port_failed"
        and row.resume_state in PORTING_STATES
        and row.context.subscription_id is not None
    )


def porting_details(row: WorkflowRow) -> dict[str, Any]:
    """The porting details the CRM last sent (kept with the secrets until the port is done)."""
    return dict(((row.secrets or {}).get("porting") or {}).get("details") or {})


def porting_digest(details: dict[str, Any]) -> str:
    """A short digest of porting details, to tell whether a retry sends what the donor rejected
    without keeping the details themselves any longer than the port needs them."""
    canonical = json.dumps(details, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _porting_call(row: WorkflowRow) -> Call | None:
    """Send the CRM's corrected porting details: to the port in progress (`update_porting`), or
    as a new request of the port the donor rejected (`retry_port`, same subscription, no new
    order). Both use the provider's in-porting update, under a key of the amendment's generation."""
    ctx = row.context
    if not (ctx.port_request_due or ctx.porting_update_due):
        return None
    assert ctx.subscription_id is not None
    step = "retry_port" if ctx.port_request_due else "update_porting"
    request = Requests.update_in_porting(
        ctx.subscription_id, {"details": porting_details(row)}, idempotency_key=step_key(row, step)
    )

    def refused(error: ProviderError) -> Move:
        reason = f"the provider refused the porting details: {error.message}"
        if step == "retry_port":  # the port stays rejected: back to failed, as before the retry
            return _fail(
                "port_failed", reason, step, context=_PORTING_SENT, amended=Amended(PORTING_DETAILS, reason)
            )
        return Move("", _PORTING_SENT, amended=Amended(PORTING_DETAILS, reason))

    return Call(
        step,
        request,
        lambda _: Move("", {**_PORTING_SENT, "rejected_porting": None}, amended=Amended(PORTING_DETAILS)),
        on_refused=refused,
    )


def _plan_compensation(row: WorkflowRow, order: OrderRow) -> Plan:
    """Undo what the provider has for this item. A lease needs nothing: it lapses by itself."""
    subscription_id = row.context.subscription_id
    if subscription_id:
        # The CRM's reasons are Connect's own enum, so they pass straight through.
        body = {
            "when": "CancelNextDay",
            "reason": row.context.cancel_reason or "OTHER",
            "comment": row.context.cancel_comment or "cancelled by the CRM order",
        }
        request = Requests.cancel_subscription(
            subscription_id, body, idempotency_key=step_key(row, "cancel_subscription")
        )
        return Call("cancel_subscription", request, lambda _: Move("compensated"))
    if order.submitted_at is not None and order.provider_order_id:
        # Submitted: the subscription may exist already; find it before deciding.
        return Poll(provider_order_id=order.provider_order_id, subscription_id=None, porting=False)
    if row.context.item_added and order.provider_order_id:
        request = Requests.remove_line_item(
            order.provider_order_id, row.line_item_id, idempotency_key=step_key(row, "remove_item")
        )
        return Call("remove_item", request, lambda _: Move("compensated"))
    return Move("compensated")


@dataclass(frozen=True)
class Snapshot:
    """Provider state read by a Poll."""

    order: dict[str, Any] | None
    subscription: dict[str, Any] | None
    porting: dict[str, Any] | None


def find_subscription_id(order: dict[str, Any] | None, line_item_id: str) -> str | None:
    entities = (order or {}).get("createdEntities") or {}
    for sub in entities.get("subscriptions") or []:
        if sub.get("createdByLineItem") == line_item_id:
            return str(sub["subscriptionId"])
    return None


def poll_delay(attempt: int) -> float:
    """Fallback polling when no webhook comes: quick at first, then every 30 s."""
    return float(min(30.0, 0.5 * 2 ** min(attempt, 6)))


def decide_from_snapshot(row: WorkflowRow, snap: Snapshot, *, now: datetime) -> Move | Wait:  # noqa: PLR0911
    """Turn what the provider says into the workflow's next move."""
    today = now.date()
    ctx: dict[str, Any] = {}
    if snap.subscription is not None:
        ctx["subscription_id"] = snap.subscription.get("subscriptionId")
    order_state = (snap.order or {}).get("state")
    if row.current == S.CANCELLING:
        if snap.subscription is not None:
            # Remember the id (a context-only Move), so that the next plan cancels the subscription;
            # a bare Wait(0) would forget it and poll again at once, forever.
            return Move("", ctx)
        return Move("compensated") if order_state in ("CANCELLED", "EXPIRED") else _again(row, now)
    if row.line_item_type != "SUBSCRIPTION":
        if order_state == "COMPLETED":
            return Move("complete" if row.line_item_type in ONE_OFF_ITEM_TYPES else "activate")
        return _order_gone(order_state) or _again(row, now)
    if snap.subscription is None:
        return _order_gone(order_state) or _again(row, now)
    if snap.subscription.get("status") == "CANCELLED":
        return _fail("subscription_cancelled", "the provider cancelled the subscription", "poll", context=ctx)
    if snap.porting is not None or row.spec.get("porting"):
        decision = _decide_port(row, snap.subscription, snap.porting, ctx, today=today)
    else:
        decision = _decide_plain(row, snap.subscription, ctx, today=today)
    if decision is not None:
        return decision
    if ctx and not row.context.subscription_id:
        return Move("", ctx)  # remember the subscription id (no transition)
    return _again(row, now)


def _again(row: WorkflowRow, now: datetime) -> Wait:
    """When to look again. Waiting for a date, sleep until it (at most an hour at a time, so a
    moved date is noticed); otherwise back off. A webhook moves the next look to now anyway."""
    delay = poll_delay(row.context.polls)
    wanted = row.context.scheduled_activation_date
    if row.current == S.ACTIVATION_SCHEDULED and wanted:
        until = (datetime.combine(date.fromisoformat(wanted), time.min, tzinfo=UTC) - now).total_seconds()
        delay = max(delay, min(until, 3600.0))
    return Wait(delay)


def _order_gone(order_state: Any) -> Move | None:
    if order_state in ("CANCELLED", "EXPIRED"):
        return _fail("provider_order_" + str(order_state).lower(), f"provider order is {order_state}", "poll")
    return None


def _deferred(row: WorkflowRow, ctx: dict[str, Any], today: date) -> Move | None:
    wanted = row.spec.get("scheduleActivationAt")
    if wanted and date.fromisoformat(wanted) > today and row.current != S.ACTIVATION_SCHEDULED:
        return Move("activation_deferred", context={**ctx, "scheduled_activation_date": wanted})
    return None


def _decide_plain(row: WorkflowRow, sub: dict[str, Any], ctx: dict[str, Any], *, today: date) -> Move | None:
    if sub.get("status") == "ACTIVATED":
        return Move("activate", context={**ctx, "msisdn": sub.get("msisdn")})
    return _deferred(row, ctx, today) if row.current == S.SUBMITTED else None


def _decide_port(
    row: WorkflowRow, sub: dict[str, Any], porting: dict[str, Any] | None, ctx: dict[str, Any], *, today: date
) -> Move | None:
    ported = row.spec.get("msisdn")
    port_status = (porting or {}).get("status")
    status, msisdn = sub.get("status"), sub.get("msisdn")
    if row.current == S.SUBMITTED:
        return Move("port_requested", context=ctx)  # reported even if the port has already failed
    if port_status == "FAILED":
        message = (
            "the provider reports the port-in failed: send crm.order.line_item.updated with corrected "
            "porting details (or, on a temporary number, without porting to keep it), or replay"
        )
        rejected = {**ctx, "rejected_porting": porting_digest(porting_details(row))}
        return _fail("port_failed", message, "porting", context=rejected)
    if port_status == "COMPLETED" and status == "ACTIVATED" and msisdn == ported:
        return Move("activate", context={**ctx, "msisdn": msisdn, "temporary_msisdn": None})
    if (
        row.current == S.PORTING_PENDING
        and row.spec.get("tempNumber")
        and status == "ACTIVATED"
        and msisdn != ported
    ):
        return Move(
            "temp_number_activated",
            context={**ctx, "msisdn": msisdn, "temporary_msisdn": msisdn, "ported_msisdn": ported},
        )
    if row.current == S.PORTING_PENDING and port_status == "COMPLETED":
        return _deferred(row, ctx, today)
    return None


@dataclass(frozen=True)
class OrderItem:
    """What the order step needs to know of one of its line items."""

    state: str
    item_added: bool
    line_item_id: str
    workflow_id: str
    generation: int = 0


@dataclass(frozen=True)
class OrderCall:
    """The order's next provider call; `item`: the line item it concerns, if one."""

    step: str
    request: PreparedRequest
    item: OrderItem | None = None


def lapsed_leases(details: list[dict[str, Any]]) -> set[str]:
    """The line item ids whose lease a refused submit names as lapsed or unknown (the provider
    points at `lineItems[<id>].leaseToken`)."""
    lapsed = set()
    for detail in details:
        found = _LEASE_PROPERTY.fullmatch(str(detail.get("property") or ""))
        if found and detail.get("code") in ("lease_expired", "lease_invalid"):
            lapsed.add(found.group(1))
    return lapsed


_LEASE_PROPERTY = re.compile(r"lineItems\[(.+)\]\.leaseToken")


def plan_order(order: OrderRow, items: list[OrderItem]) -> OrderCall | None:
    """The order's next provider call: create it once an item is live; take out of the cart an
    item that failed after it was put there (its siblings must not be submitted with it); submit
    once every live item is in; cancel once every item is cancelled and one had been added."""
    states = [item.state for item in items]
    live = [s for s in states if not is_settled(s) and s != S.CANCELLING]
    if order.provider_order_id is None:
        if not live:
            return None
        body = {
            "customer": order.customer,
            "lineItems": [],
            "metadata": {**order.metadata, "crmOrderId": order.order_id},
        }
        return OrderCall(
            "create_order", Requests.create_order(body, idempotency_key=order_key(order, "create_order"))
        )
    stranded = [i for i in items if i.state == S.FAILED and i.item_added]
    if order.submitted_at is None and live and stranded:
        item = stranded[0]
        # The key the item's own removal would use (`step_key`): whichever removes it, the
        # other finds the call done.
        key = bounded_key(f"wf-{item.workflow_id}-remove_item-g{item.generation}")
        request = Requests.remove_line_item(order.provider_order_id, item.line_item_id, idempotency_key=key)
        return OrderCall("remove_failed_item", request, item)
    if order.submitted_at is None and live and all(s == S.AWAITING_SUBMISSION for s in live):
        request = Requests.submit_order(
            order.provider_order_id, {}, idempotency_key=order_key(order, "submit_order")
        )
        return OrderCall("submit_order", request)
    if (
        order.submitted_at is None
        and order.cancelled_at is None
        and any(item.item_added for item in items)
        and all(s == S.CANCELLED for s in states)
    ):
        request = Requests.cancel_order(
            order.provider_order_id,
            {"reason": "CRM order cancelled"},
            idempotency_key=order_key(order, "cancel_order"),
        )
        return OrderCall("cancel_order", request)
    return None
