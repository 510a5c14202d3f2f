"""Provider progress on the sandbox clock: orders, leases, scheduled activation, ports, cancellation."""

from __future__ import annotations

from typing import Any

import httpx

from orchestrator.sandbox import SandboxControl

CUSTOMER = {"customerId": "cust-1"}
PORTING = {"details": {"accountNumber": "ACC-1", "passcode": "1234", "firstName": "Ada", "lastName": "L"}}


async def _order(http: httpx.AsyncClient, *items: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post("/orders", json={"customer": CUSTOMER, "lineItems": list(items)})
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def _submit_and_complete(
    http: httpx.AsyncClient, control: SandboxControl, order_id: str
) -> dict[str, Any]:
    assert (await http.post(f"/orders/{order_id}/submit", json={})).status_code == 200
    await control.advance(1)
    order: dict[str, Any] = (await http.get(f"/orders/{order_id}")).json()
    assert order["state"] == "COMPLETED"
    return order


async def _sub(http: httpx.AsyncClient, sub_id: str) -> dict[str, Any]:
    result: dict[str, Any] = (await http.get(f"/subscriptions/{sub_id}")).json()
    return result


async def test_order_goes_pending_to_completed_and_links_subscriptions(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    order = await _order(http)
    assert order["state"] == "PENDING"  # no line items yet: not valid
    added = await http.post(
        f"/orders/{order['orderId']}/line-items",
        json={"type": "SUBSCRIPTION", "lineItemId": "li-1", "productOfferingId": "plan"},
    )
    assert added.status_code == 201
    assert (await http.get(f"/orders/{order['orderId']}")).json()["state"] == "CONFIGURED"
    submitted = (await http.post(f"/orders/{order['orderId']}/submit", json={})).json()
    assert submitted["state"] == "SUBMITTED"
    await control.advance(0.2)
    assert (await http.get(f"/orders/{order['orderId']}")).json()["state"] == "PROCESSING"
    done = await _submit_done(http, control, order["orderId"])
    [created] = done["createdEntities"]["subscriptions"]
    assert created["createdByLineItem"] == "li-1"
    sub = await _sub(http, created["subscriptionId"])
    assert sub["status"] == "ACTIVATED"
    assert sub["msisdn"].startswith("+4670")


async def _submit_done(http: httpx.AsyncClient, control: SandboxControl, order_id: str) -> dict[str, Any]:
    await control.advance(1)
    result: dict[str, Any] = (await http.get(f"/orders/{order_id}")).json()
    return result


async def test_submit_of_empty_order_is_412_and_of_completed_order_is_409(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    empty = await _order(http)
    refused = await http.post(f"/orders/{empty['orderId']}/submit", json={})
    assert refused.status_code == 412
    order = await _order(http, {"type": "EXTERNAL_ITEM", "lineItemId": "e"})
    await _submit_and_complete(http, control, order["orderId"])
    again = await http.post(f"/orders/{order['orderId']}/submit", json={})
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_state"


async def test_leased_number_is_used_and_an_expired_lease_is_refused(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    lease = (await http.post("/inventory/lease-numbers", json={"types": ["CELL"], "count": 2})).json()
    first, second = (n["msisdn"] for n in lease["numbers"])
    item = {
        "type": "SUBSCRIPTION",
        "lineItemId": "a",
        "productOfferingId": "p",
        "msisdn": first,
        "leaseToken": lease["leaseToken"],
    }
    order = await _order(http, item)
    done = await _submit_and_complete(http, control, order["orderId"])
    assert done["createdEntities"]["subscriptions"][0]["msisdn"] == first

    late = await _order(http, {**item, "msisdn": second})
    await control.advance(3600)
    refused = await http.post(f"/orders/{late['orderId']}/submit", json={})
    assert refused.status_code == 412
    assert refused.json()["details"][0]["code"] == "lease_expired"
    added_late = await http.post(f"/orders/{late['orderId']}/line-items", json={**item, "lineItemId": "b"})
    assert added_late.status_code == 400
    assert [e["data"]["released"] for e in await control.ledger(effect="lease.expired")] == [[second]]


async def test_lease_unavailable_scenario(http: httpx.AsyncClient, control: SandboxControl) -> None:
    await control.scenario(leaseAvailable=False)
    answer = await http.post("/inventory/lease-numbers", json={"types": ["CELL"], "count": 1})
    assert answer.status_code == 409
    assert answer.json()["code"] == "numbers_unavailable"


async def test_scheduled_activation_waits_for_the_date(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    item = {
        "type": "SUBSCRIPTION",
        "lineItemId": "s",
        "productOfferingId": "p",
        "scheduleActivationAt": "2030-01-20",
    }
    order = await _submit_and_complete(http, control, (await _order(http, item))["orderId"])
    sub_id = order["createdEntities"]["subscriptions"][0]["subscriptionId"]
    sub = await _sub(http, sub_id)
    assert sub["status"] == "PENDING"
    assert sub["pendingStatus"] == {"status": "ACTIVATED", "scheduledAt": "2030-01-20"}
    await control.advance(4 * 86400)  # 19 January
    assert (await _sub(http, sub_id))["status"] == "PENDING"
    await control.advance(86400)
    activated = await _sub(http, sub_id)
    assert activated["status"] == "ACTIVATED"
    assert activated["activatedAt"] == "2030-01-20T00:00:00.000Z"


async def _port_order(http: httpx.AsyncClient, control: SandboxControl, msisdn: str, *, temp: bool) -> str:
    item = {
        "type": "SUBSCRIPTION",
        "lineItemId": "p",
        "productOfferingId": "p",
        "msisdn": msisdn,
        "porting": PORTING,
        "tempNumber": temp,
    }
    order = await _submit_and_complete(http, control, (await _order(http, item))["orderId"])
    sub_id: str = order["createdEntities"]["subscriptions"][0]["subscriptionId"]
    return sub_id


async def test_port_without_temp_number_completes_and_activates(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    await control.port_plan("+46701111111", outcome="COMPLETED", delay_s=60)
    sub_id = await _port_order(http, control, "+46701111111", temp=False)
    assert (await _sub(http, sub_id))["status"] == "PENDING"
    porting = (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()
    assert porting["status"] == "PENDING"
    assert porting["details"]["passcode"] == "****"
    await control.advance(1)
    assert (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()["status"] == "IN_PROGRESS"
    await control.advance(1)
    scheduled = (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()
    assert scheduled["status"] == "SCHEDULED"
    assert scheduled["scheduledAt"] is not None
    await control.advance(60)
    sub = await _sub(http, sub_id)
    assert (sub["status"], sub["msisdn"]) == ("ACTIVATED", "+46701111111")
    types = [e["type"] for e in await control.events() if e["entityId"] == sub_id]
    assert "subscription.portIn.created" in types
    assert "subscription.portIn.completed" in types


async def test_port_with_temp_number_swaps_to_the_ported_number(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    sub_id = await _port_order(http, control, "+46702222222", temp=True)
    early = await _sub(http, sub_id)
    assert early["status"] == "ACTIVATED"
    temp = early["msisdn"]
    assert temp != "+46702222222"
    assert early["pendingMsisdn"]["msisdn"] == "+46702222222"
    await control.advance(10)
    late = await _sub(http, sub_id)
    assert late["msisdn"] == "+46702222222"
    assert late["pendingMsisdn"] is None
    [swap] = await control.ledger(effect="msisdn.swapped")
    assert swap["data"] == {"fromMsisdn": temp, "toMsisdn": "+46702222222"}


async def test_failed_port_keeps_temp_number_and_corrected_details_request_it_again(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    await control.port_plan("+46703333333", outcome="FAILED")
    sub_id = await _port_order(http, control, "+46703333333", temp=True)
    fixed = await http.post(f"/subscriptions/{sub_id}/in-porting", json={"details": {"passcode": "9999"}})
    assert fixed.status_code == 200
    await control.advance(10)
    assert (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()["status"] == "FAILED"
    sub = await _sub(http, sub_id)
    assert sub["status"] == "ACTIVATED"
    assert sub["msisdn"] != "+46703333333"
    assert [e["type"] for e in await control.events(event_type="subscription.portIn.failed")]
    # Corrected details on the failed port request it again, on the same subscription.
    await control.port_plan("+46703333333", outcome="COMPLETED", delay_s=0)
    again = await http.post(f"/subscriptions/{sub_id}/in-porting", json={"details": {"passcode": "1"}})
    assert again.status_code == 200
    assert (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()["status"] == "PENDING"
    [requested] = await control.ledger(effect="port.requested_again")
    assert requested["entityId"] == sub_id
    await control.advance(10)
    assert (await _sub(http, sub_id))["msisdn"] == "+46703333333"
    # A completed port takes no more details.
    done = await http.post(f"/subscriptions/{sub_id}/in-porting", json={"details": {"passcode": "2"}})
    assert done.status_code == 409


async def test_stuck_port_never_finishes(http: httpx.AsyncClient, control: SandboxControl) -> None:
    await control.port_plan("+46704444444", outcome="STUCK")
    sub_id = await _port_order(http, control, "+46704444444", temp=False)
    await control.advance(3600)
    assert (await http.get(f"/subscriptions/{sub_id}/in-porting")).json()["status"] == "IN_PROGRESS"
    assert (await _sub(http, sub_id))["status"] == "PENDING"


async def test_order_and_subscription_cancellation(http: httpx.AsyncClient, control: SandboxControl) -> None:
    cart = await _order(http, {"type": "EXTERNAL_ITEM", "lineItemId": "e"})
    cancelled = await http.post(f"/orders/{cart['orderId']}/cancel", json={})
    assert cancelled.json()["state"] == "CANCELLED"
    assert (await http.post(f"/orders/{cart['orderId']}/cancel", json={})).status_code == 409

    item = {"type": "SUBSCRIPTION", "lineItemId": "s", "productOfferingId": "p"}
    order = await _submit_and_complete(http, control, (await _order(http, item))["orderId"])
    sub_id = order["createdEntities"]["subscriptions"][0]["subscriptionId"]
    body = {"when": "CancelNextDay", "reason": "NO_NEED"}
    scheduled = (await http.post(f"/subscriptions/{sub_id}/cancel", json=body)).json()
    assert scheduled["pendingStatus"] == {"status": "CANCELLED", "scheduledAt": "2030-01-16"}
    assert (await http.post(f"/subscriptions/{sub_id}/cancel", json=body)).status_code == 409
    await control.advance(86400)
    sub = await _sub(http, sub_id)
    assert sub["status"] == "CANCELLED"
    assert len(await control.ledger(effect="subscription.cancelled")) == 1


async def test_unknown_resources_and_bad_bodies(http: httpx.AsyncClient) -> None:
    assert (await http.get("/orders/nope")).status_code == 404
    assert (await http.get("/subscriptions/rid_nope")).json()["code"] == "not_found"
    bad = await http.post("/orders", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    missing = await http.post("/orders", json={"lineItems": []})
    assert missing.json()["details"][0]["property"] == "customer"
    assert (
        await http.post("/inventory/lease-numbers", json={"types": ["CELL"], "count": 11})
    ).status_code == 400


async def test_reference_id_lookup(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/subscriptions", json={"productOfferingId": "p", "customerId": "c", "referenceId": "crm-42"}
    )
    assert created.status_code == 201
    by_ref = (await http.get("/subscriptions/rid_crm-42")).json()
    assert by_ref["subscriptionId"] == created.json()["subscriptionId"]
