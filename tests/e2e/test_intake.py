"""What the CRM can send besides a plain order: duplicates, garbage, amendments, cancellations."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orchestrator.sandbox import RunningSandbox, SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.conftest import SANDBOX_KEY
from tests.e2e.support import (
    StatusEvents,
    TopicReader,
    crm_event,
    effects,
    lease_number,
    order_submitted,
    porting,
    publish,
    subscription,
)


async def test_the_same_event_twice_changes_nothing(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    event = crm_event(
        "crm.order.submitted", order_submitted("o-dup", subscription("li-1")), event_id="evt-dup-1"
    )
    await publish(settings, "o-dup", event)
    await publish(settings, "o-dup", event)
    await status.until_settled("o-dup", 1)
    # A third copy after completion must not restart anything either.
    await publish(settings, "o-dup", event)
    marker = crm_event("crm.order.submitted", order_submitted("o-marker", subscription("li-1")))
    await publish(settings, "o-marker", marker)  # same partition order is not guaranteed: wait for it
    await status.until_settled("o-marker", 1)
    assert status.states("o-dup", "li-1") == ["received", "awaiting_submission", "submitted", "activated"]
    ids = [e["id"] for e in status.events("o-dup")]
    assert len(ids) == len(set(ids))
    ledger = await control.ledger(kind="effect")
    assert len([e for e in effects(ledger, "order.created")]) == 2  # o-dup and o-marker, once each


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        ("o-bad", b"{not json", [("content-type", b"application/cloudevents+json")], "malformed_json"),
        (
            "o-bad",
            crm_event("crm.order.exploded", {"orderId": "o-bad"}),
            [("content-type", b"application/cloudevents+json")],
            "unknown_event_type",
        ),
        (
            "o-bad",
            crm_event("crm.order.submitted", {"orderId": "o-bad", "lineItems": [{"type": "SUBSCRIPTION"}]}),
            [("content-type", b"application/cloudevents+json")],
            "invalid_data",
        ),
        (
            "o-bad",
            crm_event(
                "crm.order.submitted",
                order_submitted(
                    "o-bad", {"type": "HOVERCRAFT", "lineItemId": "li-1", "productOfferingId": "x"}
                ),
            ),
            [("content-type", b"application/cloudevents+json")],
            "unknown_line_item_type",
        ),
        (
            "o-never",
            crm_event(
                "crm.order.line_item.updated", {"orderId": "o-never", "lineItem": subscription("li-1")}
            ),
            [("content-type", b"application/cloudevents+json")],
            "unknown_order",
        ),
    ],
    ids=[
        "malformed-json",
        "unknown-type",
        "missing-fields",
        "unknown-line-item-type",
        "update-unknown-order",
    ],
)
async def test_bad_input_goes_to_the_dlq_and_the_next_event_is_processed(
    settings: Settings,
    worker: Worker,
    status: StatusEvents,
    dlq: TopicReader,
    key: str,
    value: bytes,
    headers: list[tuple[str, bytes]],
    reason: str,
) -> None:
    await publish(settings, key, value, headers)
    await publish(
        settings, key, crm_event("crm.order.submitted", order_submitted(key, subscription("li-ok")))
    )
    await dlq.wait_for(lambda: len(dlq.records) >= 1, timeout_s=30, what="a DLQ record")
    await status.until_settled(key, 1)
    record = dlq.records[0]
    dlq_headers = dict(record.headers)
    assert record.value == value  # the original, untouched
    assert record.key == key.encode()
    assert dlq_headers["dlq_reason"].decode() == reason
    assert dlq_headers["dlq_error"]
    assert dlq_headers["dlq_source_topic"].decode() == settings.kafka.orders_topic
    assert {"dlq_source_partition", "dlq_source_offset"} <= set(dlq_headers)
    assert status.states(key, "li-ok")[-1] == "activated"


async def test_an_expired_lease_fails_and_an_amendment_with_a_fresh_lease_resumes_it(
    settings: Settings, worker: Worker, status: StatusEvents, sandbox: RunningSandbox, control: SandboxControl
) -> None:
    stale = await lease_number(sandbox.base_url, SANDBOX_KEY)
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    number = stale["numbers"][0]["msisdn"]
    item = subscription("li-1", msisdn=number, leaseToken=stale["leaseToken"], leaseExpiresAt=past)
    await publish(settings, "o-relea", crm_event("crm.order.submitted", order_submitted("o-relea", item)))
    await status.until_settled("o-relea", 1)
    failed = status.line_items("o-relea")["li-1"][-1]
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "lease_expired"

    fresh = await lease_number(sandbox.base_url, SANDBOX_KEY)
    renewed = subscription(
        "li-1",
        msisdn=fresh["numbers"][0]["msisdn"],
        leaseToken=fresh["leaseToken"],
        leaseExpiresAt=fresh["expiresAt"],
    )
    update = crm_event("crm.order.line_item.updated", {"orderId": "o-relea", "lineItem": renewed})
    await publish(settings, "o-relea", update)
    await status.wait_for(
        lambda: status.states("o-relea", "li-1")[-1] == "activated",
        timeout_s=60,
        what="the amended item to activate",
    )
    assert status.states("o-relea", "li-1") == [
        "received",
        "failed",
        "received",
        "number_leased",
        "awaiting_submission",
        "submitted",
        "activated",
    ]
    assert status.line_items("o-relea")["li-1"][-1]["msisdn"] == fresh["numbers"][0]["msisdn"]
    assert len(effects(await control.ledger(kind="effect"), "order.submitted")) == 1


async def test_cancelling_a_pending_port_cancels_the_subscription_once(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551239001"
    await control.port_plan(ported, outcome="STUCK")
    item = subscription("li-1", msisdn=ported, porting=porting())
    await publish(settings, "o-cancel", crm_event("crm.order.submitted", order_submitted("o-cancel", item)))
    await status.wait_for(
        lambda: "porting_pending" in status.states("o-cancel", "li-1"), timeout_s=30, what="porting_pending"
    )
    cancel = crm_event("crm.order.cancelled", {"orderId": "o-cancel", "reason": "NO_NEED"})
    await publish(settings, "o-cancel", cancel)
    await status.until_settled("o-cancel", 1)
    assert status.states("o-cancel", "li-1")[-3:] == ["porting_pending", "cancelling", "cancelled"]
    assert status.order_states("o-cancel")[-1] == "cancelled"
    ledger = await control.ledger(kind="effect")
    assert len([e for e in ledger if e["effect"].startswith("subscription.cancel")]) == 1


async def test_cancelling_some_line_items_leaves_the_others_running(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    stuck = "+15551239002"
    await control.port_plan(stuck, outcome="STUCK")
    data = order_submitted(
        "o-part", subscription("li-port", msisdn=stuck, porting=porting()), subscription("li-2")
    )
    await publish(settings, "o-part", crm_event("crm.order.submitted", data))
    await status.wait_for(
        lambda: "porting_pending" in status.states("o-part", "li-port"), timeout_s=30, what="porting_pending"
    )
    cancel = crm_event(
        "crm.order.cancelled", {"orderId": "o-part", "reason": "NO_NEED", "lineItemIds": ["li-port"]}
    )
    await publish(settings, "o-part", cancel)
    await status.until_settled("o-part", 2)
    assert status.states("o-part", "li-port")[-1] == "cancelled"
    assert status.states("o-part", "li-2")[-1] == "activated"
    assert status.order_states("o-part")[-1] == "partially_activated"


async def test_porting_secrets_are_erased_once_the_port_is_done(
    settings: Settings, worker: Worker, status: StatusEvents
) -> None:
    item = subscription("li-1", msisdn="+15551239003", porting=porting(account="SECRET-ACCOUNT-77"))
    await publish(settings, "o-secret", crm_event("crm.order.submitted", order_submitted("o-secret", item)))
    await status.until_settled("o-secret", 1)
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        row = await conn.fetchrow("SELECT spec::text, secrets FROM workflows WHERE order_id = 'o-secret'")
    finally:
        await conn.close()
    assert row["secrets"] is None
    assert "SECRET-ACCOUNT-77" not in row["spec"]
    assert all("SECRET-ACCOUNT-77" not in json.dumps(e) for e in status.events("o-secret"))


async def test_a_cancellation_after_activation_is_refused_and_kept_on_the_workflow(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """Too late to undo: the subscription stays live, nothing is sent to the provider, and the
    workflow keeps the refusal (so the operator, and the reliability oracle, can tell a late
    cancellation from a lost one)."""
    await publish(
        settings, "o-late", crm_event("crm.order.submitted", order_submitted("o-late", subscription("li-1")))
    )
    await status.until_settled("o-late", 1)
    cancel_id = "evt-late-cancel"
    cancel = crm_event("crm.order.cancelled", {"orderId": "o-late", "reason": "NO_NEED"}, event_id=cancel_id)
    await publish(settings, "o-late", cancel)
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        for _ in range(100):
            context = json.loads(
                await conn.fetchval("SELECT context::text FROM workflows WHERE order_id = 'o-late'")
            )
            if context.get("refused_cancellations"):
                break
            await asyncio.sleep(0.1)
        state = await conn.fetchval("SELECT state FROM workflows WHERE order_id = 'o-late'")
    finally:
        await conn.close()
    [refused] = context.get("refused_cancellations") or [None]
    assert refused is not None, f"the late cancellation left no trace: {context}"
    assert refused["cause"] == f"crm:{cancel_id}"
    assert refused["state"] == "activated"
    assert state == "activated"
    assert status.states("o-late", "li-1")[-1] == "activated"
    ledger = await control.ledger(kind="effect")
    assert not [e for e in ledger if e["effect"].startswith(("subscription.cancel", "order.cancel"))]
