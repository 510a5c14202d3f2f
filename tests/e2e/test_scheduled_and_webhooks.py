"""Activation on a future date (a durable wait, woken by the provider's webhook), and webhooks
delivered twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from orchestrator.sandbox import RunningSandbox, SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.conftest import SANDBOX_KEY, WEBHOOK_KEY
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


def _in_days(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


async def test_scheduled_activation_waits_for_its_date(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    wanted = _in_days(3)
    item = subscription("li-1", scheduleActivationAt=wanted)
    await publish(settings, "o-sched", crm_event("crm.order.submitted", order_submitted("o-sched", item)))
    await status.wait_for(
        lambda: "activation_scheduled" in status.states("o-sched", "li-1"),
        timeout_s=30,
        what="activation_scheduled",
    )
    scheduled = status.line_items("o-sched")["li-1"][-1]
    assert scheduled["scheduledActivationDate"] == wanted
    # The provider's date arrives (its clock moves 4 days); its webhook wakes the waiting workflow.
    await control.advance(4 * 86400)
    await status.until_settled("o-sched", 1, timeout_s=60)
    assert status.states("o-sched", "li-1") == [
        "received",
        "awaiting_submission",
        "submitted",
        "activation_scheduled",
        "activated",
    ]
    assert len(effects(await control.ledger(kind="effect"), "subscription.activated")) == 1


async def test_scheduled_pool_number(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl, sandbox: RunningSandbox
) -> None:
    lease = await lease_number(sandbox.base_url, SANDBOX_KEY)
    item = subscription(
        "li-1",
        msisdn=lease["numbers"][0]["msisdn"],
        leaseToken=lease["leaseToken"],
        leaseExpiresAt=lease["expiresAt"],
        scheduleActivationAt=_in_days(2),
    )
    await publish(
        settings, "o-sched-lease", crm_event("crm.order.submitted", order_submitted("o-sched-lease", item))
    )
    await status.wait_for(
        lambda: "activation_scheduled" in status.states("o-sched-lease", "li-1"),
        timeout_s=30,
        what="scheduled",
    )
    await control.advance(3 * 86400)
    await status.until_settled("o-sched-lease", 1, timeout_s=60)
    assert status.states("o-sched-lease", "li-1") == [
        "received",
        "number_leased",
        "awaiting_submission",
        "submitted",
        "activation_scheduled",
        "activated",
    ]


async def test_scheduled_port_in(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    item = subscription("li-1", msisdn="+15551237001", porting=porting(), scheduleActivationAt=_in_days(5))
    await publish(
        settings, "o-sched-port", crm_event("crm.order.submitted", order_submitted("o-sched-port", item))
    )
    await status.wait_for(
        lambda: "activation_scheduled" in status.states("o-sched-port", "li-1"),
        timeout_s=30,
        what="scheduled",
    )
    await control.advance(6 * 86400)
    await status.until_settled("o-sched-port", 1, timeout_s=60)
    assert status.states("o-sched-port", "li-1") == [
        "received",
        "awaiting_submission",
        "submitted",
        "porting_pending",
        "activation_scheduled",
        "activated",
    ]
    assert date.fromisoformat(status.line_items("o-sched-port")["li-1"][-2]["scheduledActivationDate"])


async def test_a_webhook_delivered_twice_is_taken_once(
    settings: Settings, worker: Worker, status: StatusEvents
) -> None:
    await publish(
        settings, "o-hook", crm_event("crm.order.submitted", order_submitted("o-hook", subscription("li-1")))
    )
    await status.until_settled("o-hook", 1)
    before = status.states("o-hook", "li-1")
    event_id = str(uuid.uuid4())
    body = {
        "eventId": event_id,
        "type": "subscription.updated",
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": {
            "subscriptionId": status.line_items("o-hook")["li-1"][-1]["subscriptionId"],
            "status": "ACTIVATED",
        },
    }
    assert worker.webhook_url is not None
    async with (
        TopicReader(settings.kafka.bootstrap_servers, settings.kafka.connect_events_topic) as carried,
        httpx.AsyncClient() as http,
    ):
        for _ in range(2):
            answer = await http.post(worker.webhook_url, json=body, headers={"X-Api-Key": WEBHOOK_KEY})
            assert answer.status_code == 200
        await carried.wait_for(
            lambda: (
                sum(1 for r in carried.records if dict(r.headers).get("eventId") == event_id.encode()) == 2
            ),
            timeout_s=30,
            what="both deliveries on the topic",
        )
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        for _ in range(100):
            taken = await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE source = 'connect' AND event_id = $1", event_id
            )
            if taken:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert taken == 1
    assert status.states("o-hook", "li-1") == before


async def test_webhooks_without_the_key_are_refused(worker: Worker) -> None:
    assert worker.webhook_url is not None
    async with httpx.AsyncClient() as http:
        body = {
            "eventId": "e-1",
            "type": "order.updated",
            "occurredAt": datetime.now(UTC).isoformat(),
            "data": {},
        }
        assert (await http.post(worker.webhook_url, json=body)).status_code == 401
        wrong = await http.post(worker.webhook_url, json=body, headers={"X-Api-Key": "guess"})
        assert wrong.status_code == 401
