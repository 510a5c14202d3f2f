"""The port-in exception paths end to end (real Kafka, real Postgres, the sandbox over HTTP): a
porting correction while the port is in progress, a port the donor rejected requested again with
corrected details, and a rejected port
resolved by keeping the temporary number (an operator's replay of a rejected port:
`tests/admin/test_port_replay.py`). Every CRM amendment is answered on the status topic by
one `provisioning.line_item.amended` event, in the line item's sequence."""

from __future__ import annotations

from collections import Counter
from typing import Any

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import (
    StatusEvents,
    crm_event,
    effects,
    order_submitted,
    porting,
    publish,
    subscription,
)

AMENDED = "provisioning.line_item.amended"


def _amended(status: StatusEvents, order_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in status.events(order_id) if e["type"] == AMENDED]


def _sequences(status: StatusEvents, order_id: str) -> list[int]:
    """The line item's sequence over all its events (state changes and amendments together)."""
    return [e["data"]["sequence"] for e in status.events(order_id) if e["data"].get("lineItemId")]


async def _until_state(status: StatusEvents, order_id: str, state: str, *, timeout_s: float = 60) -> None:
    await status.wait_for(
        lambda: status.states(order_id, "li-1")[-1:] == [state],
        timeout_s=timeout_s,
        what=f"{order_id} to reach {state}: {status.states(order_id, 'li-1')}",
    )


async def _amend(settings: Settings, order_id: str, item: dict[str, Any]) -> None:
    body = {"orderId": order_id, "lineItem": item}
    await publish(settings, order_id, crm_event("crm.order.line_item.updated", body))


async def _rejected_on_temporary_number(
    settings: Settings, status: StatusEvents, control: SandboxControl, order_id: str, ported: str
) -> None:
    """A port-in with a temporary number, live on it, then rejected by the donor."""
    await control.port_plan(ported, outcome="STUCK")
    item = subscription("li-1", msisdn=ported, porting=porting(passcode="0000"), tempNumber=True)
    await publish(settings, order_id, crm_event("crm.order.submitted", order_submitted(order_id, item)))
    await _until_state(status, order_id, "temp_number_active")
    await control.port_plan(ported, outcome="FAILED")
    await _until_state(status, order_id, "failed")
    failed = status.line_items(order_id)["li-1"][-1]
    assert failed["error"]["code"] == "port_failed"
    # The customer is still live on the temporary number: the failed event says so.
    assert failed["temporaryMsisdn"] not in (None, ported)
    assert (failed["msisdn"], failed["portedMsisdn"]) == (failed["temporaryMsisdn"], ported)


def _one_order_one_subscription(ledger: list[dict[str, Any]]) -> None:
    counts = Counter(e["effect"] for e in ledger)
    assert (counts["order.created"], counts["subscription.created"]) == (1, 1), counts


async def test_a_porting_correction_reaches_the_provider_and_the_port_completes(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551239001"
    await control.port_plan(ported, outcome="STUCK")
    item = subscription("li-1", msisdn=ported, porting=porting(passcode="0000"))
    await publish(settings, "o-fix", crm_event("crm.order.submitted", order_submitted("o-fix", item)))
    await _until_state(status, "o-fix", "porting_pending")

    await _amend(settings, "o-fix", subscription("li-1", msisdn=ported, porting=porting(passcode="4321")))
    await status.wait_for(lambda: _amended(status, "o-fix"), timeout_s=30, what="the amendment's outcome")
    (amended,) = _amended(status, "o-fix")
    assert (amended["change"], amended["outcome"], amended.get("reason")) == (
        "porting_details",
        "applied",
        None,
    )
    updated = effects(await control.ledger(kind="effect"), "port.details_updated")
    (update,) = updated
    assert "passcode" in update["data"]["fields"], update

    await control.port_plan(ported, outcome="COMPLETED", delay_s=0)
    await _until_state(status, "o-fix", "activated")
    assert status.line_items("o-fix")["li-1"][-1]["msisdn"] == ported
    assert _sequences(status, "o-fix") == list(range(1, len(_sequences(status, "o-fix")) + 1))
    assert all("4321" not in str(e) for e in status.events("o-fix")), "no porting secret on the topic"


async def test_a_rejected_port_on_a_temporary_number_is_requested_again_and_activates(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551239002"
    await _rejected_on_temporary_number(settings, status, control, "o-report", ported)
    await control.port_plan(ported, outcome="COMPLETED", delay_s=0)
    corrected = subscription("li-1", msisdn=ported, porting=porting(passcode="4321"), tempNumber=True)
    await _amend(settings, "o-report", corrected)
    await _until_state(status, "o-report", "activated")

    states = status.states("o-report", "li-1")
    assert states[-4:] == ["temp_number_active", "failed", "temp_number_active", "activated"], states
    assert status.line_items("o-report")["li-1"][-1]["msisdn"] == ported
    (amended,) = _amended(status, "o-report")
    assert (amended["change"], amended["outcome"]) == ("porting_details", "applied")
    ledger = await control.ledger(kind="effect")
    _one_order_one_subscription(ledger)
    assert len(effects(ledger, "port.requested_again")) == 1
    assert len(effects(ledger, "port.completed")) == 1
    assert status.order_states("o-report")[-1] == "activated"


async def test_a_rejected_port_is_resolved_by_keeping_the_temporary_number(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551239003"
    await _rejected_on_temporary_number(settings, status, control, "o-keep", ported)
    temporary = status.line_items("o-keep")["li-1"][-1]["temporaryMsisdn"]
    await _amend(settings, "o-keep", subscription("li-1"))  # no porting: keep the number we have
    await _until_state(status, "o-keep", "activated")

    final = status.line_items("o-keep")["li-1"][-1]
    assert (final["msisdn"], final["temporaryMsisdn"], final["portedMsisdn"]) == (temporary, None, None)
    (amended,) = _amended(status, "o-keep")
    assert (amended["change"], amended["outcome"]) == ("keep_temporary_number", "applied")
    ledger = await control.ledger(kind="effect")
    _one_order_one_subscription(ledger)
    assert effects(ledger, "port.requested_again") == []


async def test_an_amendment_after_submit_is_refused_out_loud(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """A new activation date once the order is submitted cannot be applied: the CRM hears so."""
    item = subscription("li-1", scheduleActivationAt="2099-01-01")
    await publish(settings, "o-late", crm_event("crm.order.submitted", order_submitted("o-late", item)))
    await _until_state(status, "o-late", "activation_scheduled")
    await _amend(settings, "o-late", subscription("li-1", scheduleActivationAt="2099-02-01"))
    await status.wait_for(lambda: _amended(status, "o-late"), timeout_s=30, what="the refusal")
    (refused,) = _amended(status, "o-late")
    assert (refused["change"], refused["outcome"]) == ("schedule", "refused")
    assert refused["reason"]
    assert status.states("o-late", "li-1")[-1] == "activation_scheduled"
    assert _sequences(status, "o-late") == list(range(1, len(_sequences(status, "o-late")) + 1))
