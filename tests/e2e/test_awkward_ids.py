"""CRM ids are free text: they reach the provider's URL paths and our idempotency keys, so ids
that a path or a key cannot hold as they are must still provision, end to end through the real
stack (Kafka, Postgres, the sandbox over HTTP)."""

from __future__ import annotations

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import StatusEvents, crm_event, effects, order_submitted, publish, subscription

ACTIVATED = ["received", "awaiting_submission", "submitted", "activated"]


async def test_line_item_ids_with_path_characters_are_provisioned(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """`/`, `?`, `#` and spaces would add path levels, a query or a fragment if sent unescaped.
    A line item id reaches a provider path when its item is updated or removed from the cart, so
    the order's submit is refused once (both items fail with it); then the CRM cancels one item
    (removed: DELETE .../line-items/{id}) and amends the other (PUT .../line-items/{id}), which is
    then submitted and activated."""
    order_id = "o-awkward ids/1"
    kept, dropped = "li/1?x=2#frag ment", "li 2/../3"
    await control.faults({"match": "POST /orders/*/submit", "kind": "error", "status": 400, "times": 1})
    data = order_submitted(order_id, subscription(kept), subscription(dropped))
    await publish(settings, order_id, crm_event("crm.order.submitted", data))
    await status.wait_for(
        lambda: [status.states(order_id, i)[-1:] for i in (kept, dropped)] == [["failed"], ["failed"]],
        timeout_s=30,
        what="both items to fail with the refused submit",
    )
    cancel = {"orderId": order_id, "reason": "NO_NEED", "lineItemIds": [dropped]}
    await publish(settings, order_id, crm_event("crm.order.cancelled", cancel))
    await status.wait_for(
        lambda: status.states(order_id, dropped)[-1:] == ["cancelled"], timeout_s=30, what="the removal"
    )
    amended = subscription(kept, productOfferingId="mobile-plan-plus")
    await publish(
        settings,
        order_id,
        crm_event("crm.order.line_item.updated", {"orderId": order_id, "lineItem": amended}),
    )
    await status.wait_for(
        lambda: status.states(order_id, kept)[-1:] == ["activated"], timeout_s=60, what="the amended item"
    )
    assert status.states(order_id, kept)[-5:] == [
        "failed",
        "received",
        "awaiting_submission",
        "submitted",
        "activated",
    ]
    assert status.states(order_id, dropped)[-3:] == ["failed", "cancelling", "cancelled"]
    ledger = await control.ledger(kind="effect")
    assert [e["data"]["lineItemId"] for e in effects(ledger, "line_item.removed")] == [dropped]
    assert [e["data"]["lineItemId"] for e in effects(ledger, "line_item.updated")] == [kept]
    answers = [r["status"] for r in await control.ledger(kind="request") if r["method"] in ("PUT", "DELETE")]
    assert len(answers) == 2, answers
    assert all(200 <= status < 300 for status in answers), answers


async def test_an_order_id_of_255_characters_is_provisioned(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """255 characters is the most the CRM contract allows; `order-<id>-submit_order-g0` is then
    longer than the provider's 256-character key limit, so the key must be shortened, stably."""
    order_id = "o-" + "x" * 248 + "-long"
    assert len(order_id) == 255
    await publish(
        settings, order_id, crm_event("crm.order.submitted", order_submitted(order_id, subscription("li-1")))
    )
    await status.until_settled(order_id, 1)
    assert status.states(order_id, "li-1") == ACTIVATED
    assert status.order_states(order_id) == ["in_progress", "activated"]
    requests = await control.ledger(kind="request")
    keys = [
        r["idempotencyKey"]
        for r in requests
        if (r.get("idempotencyKey") or "").startswith(f"order-{order_id[:40]}")
    ]
    assert len(keys) >= 2, "create and submit reached the provider under the order's keys"
    assert all(len(k) <= 256 for k in keys), [len(k) for k in keys]
    assert all(r["status"] < 400 for r in requests if r.get("idempotencyKey") in keys)
