"""Each subscription path end to end: real Kafka, real Postgres, the sandbox over HTTP. Asserts the
exact state sequence on the status topic and that each provider effect happened exactly once."""

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
    porting,
    publish,
    subscription,
)


def _once_each(ledger: list[dict[str, object]]) -> None:
    """No effect was applied twice under one idempotency key."""
    keyed = Counter(
        (e["effect"], e["idempotencyKey"])
        for e in ledger
        if e.get("kind") == "effect" and e.get("idempotencyKey")
    )
    assert [k for k, n in keyed.items() if n > 1] == []


async def test_provider_assigned_number(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    await publish(
        settings,
        "o-assigned",
        crm_event("crm.order.submitted", order_submitted("o-assigned", subscription("li-1"))),
    )
    await status.until_settled("o-assigned", 1)
    assert status.states("o-assigned", "li-1") == [
        "received",
        "awaiting_submission",
        "submitted",
        "activated",
    ]
    final = status.line_items("o-assigned")["li-1"][-1]
    assert final["msisdn"] is not None
    assert final["subscriptionId"] is not None
    assert [e["sequence"] for e in status.line_items("o-assigned")["li-1"]] == [1, 2, 3, 4]
    assert status.order_states("o-assigned") == ["in_progress", "activated"]
    ledger = await control.ledger(kind="effect")
    _once_each(ledger)
    assert len(effects(ledger, "order.created")) == 1
    assert len(effects(ledger, "line_item.added")) == 1
    assert len(effects(ledger, "order.submitted")) == 1


async def test_pool_number_with_lease(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl, sandbox: RunningSandbox
) -> None:
    lease = await lease_number(sandbox.base_url, SANDBOX_KEY)
    number = lease["numbers"][0]["msisdn"]
    item = subscription(
        "li-1", msisdn=number, leaseToken=lease["leaseToken"], leaseExpiresAt=lease["expiresAt"]
    )
    await publish(settings, "o-lease", crm_event("crm.order.submitted", order_submitted("o-lease", item)))
    await status.until_settled("o-lease", 1)
    assert status.states("o-lease", "li-1") == [
        "received",
        "number_leased",
        "awaiting_submission",
        "submitted",
        "activated",
    ]
    assert status.line_items("o-lease")["li-1"][-1]["msisdn"] == number
    ledger = await control.ledger(kind="effect")
    _once_each(ledger)
    assert len(effects(ledger, "subscription.activated")) == 1


async def test_port_in_without_temporary_number(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551230001"
    item = subscription("li-1", msisdn=ported, porting=porting())
    await publish(settings, "o-port", crm_event("crm.order.submitted", order_submitted("o-port", item)))
    await status.until_settled("o-port", 1)
    assert status.states("o-port", "li-1") == [
        "received",
        "awaiting_submission",
        "submitted",
        "porting_pending",
        "activated",
    ]
    final = status.line_items("o-port")["li-1"][-1]
    assert final["msisdn"] == ported
    assert final["temporaryMsisdn"] is None
    _once_each(await control.ledger(kind="effect"))
    # The porting credentials went to the provider but never into a status event.
    assert all("ACC-123456" not in str(event) for event in status.events("o-port"))


async def test_port_in_with_temporary_number(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551230002"
    # Hold the port until the temporary number has been reported: on a loaded machine the port
    # could otherwise complete before the engine's first look, and the provider would rightly
    # show only the ported number.
    await control.port_plan(ported, outcome="STUCK")
    item = subscription("li-1", msisdn=ported, porting=porting(), tempNumber=True)
    await publish(settings, "o-temp", crm_event("crm.order.submitted", order_submitted("o-temp", item)))
    await status.wait_for(
        lambda: "temp_number_active" in status.states("o-temp", "li-1"),
        timeout_s=60,
        what="temp_number_active",
    )
    await control.port_plan(ported, outcome="COMPLETED", delay_s=0)
    await status.until_settled("o-temp", 1)
    events = status.line_items("o-temp")["li-1"]
    assert [e["state"] for e in events] == [
        "received",
        "awaiting_submission",
        "submitted",
        "porting_pending",
        "temp_number_active",
        "activated",
    ]
    on_temp = events[-2]
    assert on_temp["portedMsisdn"] == ported
    assert on_temp["temporaryMsisdn"] not in (None, ported)
    assert on_temp["msisdn"] == on_temp["temporaryMsisdn"]
    assert events[-1]["msisdn"] == ported
    _once_each(await control.ledger(kind="effect"))


async def test_failed_port_lands_in_failed_with_a_stable_code(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551230003"
    await control.port_plan(ported, outcome="FAILED")
    item = subscription("li-1", msisdn=ported, porting=porting())
    await publish(
        settings, "o-portfail", crm_event("crm.order.submitted", order_submitted("o-portfail", item))
    )
    await status.until_settled("o-portfail", 1)
    events = status.line_items("o-portfail")["li-1"]
    assert [e["state"] for e in events][-2:] == ["porting_pending", "failed"]
    assert events[-1]["error"]["code"] == "port_failed"
    assert events[-1]["error"]["step"] == "porting"
    assert status.order_states("o-portfail")[-1] == "failed"


async def test_two_line_items_share_one_provider_order(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    data = order_submitted("o-two", subscription("li-1"), subscription("li-2"))
    await publish(settings, "o-two", crm_event("crm.order.submitted", data))
    await status.until_settled("o-two", 2)
    for item in ("li-1", "li-2"):
        assert status.states("o-two", item) == ["received", "awaiting_submission", "submitted", "activated"]
    ledger = await control.ledger(kind="effect")
    assert len(effects(ledger, "order.created")) == 1
    assert len(effects(ledger, "order.submitted")) == 1
    assert len(effects(ledger, "line_item.added")) == 2
