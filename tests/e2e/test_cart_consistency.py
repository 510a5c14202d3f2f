"""Cart consistency end to end (real Kafka, real Postgres, the sandbox over HTTP): a line item
whose number lease lapses at the provider between being added to the provider order and its
submit fails on its own, is taken out of the provider order, and its siblings are submitted and
activate; the order's derived state says it completed partly."""

from __future__ import annotations

from collections import Counter

from orchestrator.sandbox import RunningSandbox, SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.conftest import SANDBOX_KEY
from tests.e2e.support import (
    StatusEvents,
    crm_event,
    effects,
    lease_number,
    order_submitted,
    publish,
    subscription,
)

ACTIVATED = ["received", "awaiting_submission", "submitted", "activated"]
ITEMS = ("li-leased", "li-a", "li-b")


async def test_a_lease_lapsing_at_the_provider_before_submit_fails_only_its_item(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl, sandbox: RunningSandbox
) -> None:
    lease = await lease_number(sandbox.base_url, SANDBOX_KEY)
    number = lease["numbers"][0]["msisdn"]
    # The CRM's `leaseExpiresAt` says the lease is good for an hour; the provider's clock decides.
    leased = subscription(
        "li-leased", msisdn=number, leaseToken=lease["leaseToken"], leaseExpiresAt=lease["expiresAt"]
    )
    data = order_submitted("o-lapse", leased, subscription("li-a"), subscription("li-b"))
    # The provider holds the submit 3 s before processing it; meanwhile its clock moves two hours
    # on, past the lease (our clock does not: the CRM's expiry stays in the future for us).
    await control.faults({"match": "POST /orders/*/submit", "kind": "latency", "latencyMs": 3000, "times": 1})
    await publish(settings, "o-lapse", crm_event("crm.order.submitted", data))
    await status.wait_for(
        lambda: all(status.states("o-lapse", i)[-1:] == ["awaiting_submission"] for i in ITEMS),
        timeout_s=30,
        what="every item in the provider order",
    )
    await control.advance(7200)
    await status.until_settled("o-lapse", 3)

    failed = status.line_items("o-lapse")["li-leased"][-1]
    assert (failed["state"], failed["error"]["code"]) == ("failed", "lease_expired")
    for sibling in ("li-a", "li-b"):
        assert status.states("o-lapse", sibling) == ACTIVATED
    assert status.order_states("o-lapse")[-1] == "partially_activated"
    ledger = await control.ledger(kind="effect")
    removed = effects(ledger, "line_item.removed")
    assert [e["data"]["lineItemId"] for e in removed] == ["li-leased"]
    assert len(effects(ledger, "order.submitted")) == 1
    assert Counter(e["effect"] for e in ledger)["subscription.created"] == 2
