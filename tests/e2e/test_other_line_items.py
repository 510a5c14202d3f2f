"""The engine does not assume subscriptions: other line item types ride the same order through
their own machines (LICENSE activates; one-off items such as EXTERNAL_ITEM complete)."""

from __future__ import annotations

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import StatusEvents, crm_event, effects, order_submitted, publish, subscription


async def test_an_order_mixing_a_subscription_a_license_and_an_external_item(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    items = [
        subscription("li-sub"),
        {
            "type": "LICENSE",
            "lineItemId": "li-lic",
            "productOfferingId": "office-suite",
            "subscriptionLineItemId": "li-sub",
        },
        {
            "type": "EXTERNAL_ITEM",
            "lineItemId": "li-ext",
            "description": "SIM card shipping",
            "amount": "4.90",
            "currency": "SEK",
        },
    ]
    await publish(settings, "o-mixed", crm_event("crm.order.submitted", order_submitted("o-mixed", *items)))
    await status.until_settled("o-mixed", 3)
    assert status.states("o-mixed", "li-sub") == ["received", "awaiting_submission", "submitted", "activated"]
    assert status.states("o-mixed", "li-lic") == ["received", "awaiting_submission", "submitted", "activated"]
    assert status.states("o-mixed", "li-ext") == ["received", "awaiting_submission", "submitted", "completed"]
    changes = [
        e["data"] for e in status.events("o-mixed") if e["type"] == "provisioning.line_item.state_changed"
    ]
    types = {data["lineItemId"]: data["lineItemType"] for data in changes}
    assert types == {"li-sub": "SUBSCRIPTION", "li-lic": "LICENSE", "li-ext": "EXTERNAL_ITEM"}
    assert status.order_states("o-mixed")[-1] == "activated"
    ledger = await control.ledger(kind="effect")
    assert len(effects(ledger, "line_item.added")) == 3
    assert len(effects(ledger, "order.submitted")) == 1
