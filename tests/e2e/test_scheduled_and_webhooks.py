"""Activation on a future date (a durable wait, woken by the provider's webhook), and webhooks
delivered twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator.sandbox import RunningSandbox, SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.conftest import SANDBOX_KEY, WEBHOOK_KEY
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


async def _connect_events_consumed(settings: Settings) -> bool:
    """Every record on the connect-events topic is consumed: the worker's group committed past it."""
    topic = settings.kafka.connect_events_topic
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    await consumer.start()
    try:
        [described] = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(settings.kafka.consumer_group)
    finally:
        await consumer.stop()
        await admin.close()
    done = {tp: meta.offset for tp, meta in committed.items()}
    return bool(partitions) and all(done.get(tp, 0) >= ends[tp] for tp in partitions)


async def _settled_polls(
    settings: Settings, conn: asyncpg.Connection, control: SandboxControl, workflow_id: object, sub_id: str
) -> tuple[int, int]:
    """Once every provider webhook is delivered and consumed and the workflow sleeps (its next poll
    at least ten minutes away, nothing running): (polls the engine counted, the provider's reads
    of the subscription)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        row = await conn.fetchrow(
            """SELECT (w.context ->> 'polls')::int AS polls,
                      bool_and(t.fired_at IS NULL AND t.due_at > now() + interval '10 minutes') AS asleep
               FROM workflows w JOIN timers t ON t.workflow_id = w.workflow_id
               WHERE w.workflow_id = $1 GROUP BY w.context""",
            workflow_id,
        )
        delivered = all(e["delivered"] for e in await control.events())
        if row is not None and row["asleep"] and delivered and await _connect_events_consumed(settings):
            reads = [
                e
                for e in await control.ledger(kind="request")
                if e["method"] == "GET" and e["path"] == f"/subscriptions/{sub_id}"
            ]
            return int(row["polls"] or 0), len(reads)
        if loop.time() > deadline:
            raise AssertionError(
                f"workflow {workflow_id} never settled: {row}, webhooks delivered: {delivered}"
            )
        await asyncio.sleep(0.2)


async def test_a_webhook_delivered_twice_is_taken_once(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """A provider webhook is a hint: taken, it makes the workflows it names poll the provider now.
    An item waiting days for its activation date polls once an hour, so each poll a webhook causes
    is counted (the engine's `polls`, the provider's reads): the first delivery causes one, the
    second, consumed afterwards, none."""
    item = subscription("li-1", scheduleActivationAt=_in_days(3))
    await publish(settings, "o-hook", crm_event("crm.order.submitted", order_submitted("o-hook", item)))
    await status.wait_for(
        lambda: "activation_scheduled" in status.states("o-hook", "li-1"), timeout_s=30, what="scheduled"
    )
    before = status.states("o-hook", "li-1")
    subscription_id = status.line_items("o-hook")["li-1"][-1]["subscriptionId"]
    event_id = str(uuid.uuid4())
    body = {
        "eventId": event_id,
        "type": "subscription.updated",
        "occurredAt": datetime.now(UTC).isoformat(),
        "data": {"subscriptionId": subscription_id, "status": "PENDING"},
    }
    assert worker.webhook_url is not None
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        workflow_id = await conn.fetchval("SELECT workflow_id FROM workflows WHERE order_id = 'o-hook'")
        polls, reads = await _settled_polls(settings, conn, control, workflow_id, subscription_id)
        async with httpx.AsyncClient() as http:
            first = await http.post(worker.webhook_url, json=body, headers={"X-Api-Key": WEBHOOK_KEY})
            assert first.status_code == 200
            taken = await _settled_polls(settings, conn, control, workflow_id, subscription_id)
            assert taken[0] == polls + 1, f"the first delivery made the item poll {taken[0] - polls} times"
            assert taken[1] > reads, "the first delivery's poll did not read the provider"
            again = await http.post(worker.webhook_url, json=body, headers={"X-Api-Key": WEBHOOK_KEY})
            assert again.status_code == 200
            assert again.json()["offset"] > first.json()["offset"]  # the copy is on the topic too
        after = await _settled_polls(settings, conn, control, workflow_id, subscription_id)
        assert after == taken, (
            f"the second delivery was taken too: (polls, provider reads) {taken} -> {after}"
        )
        inbox = await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE source = 'connect' AND event_id = $1", event_id
        )
    finally:
        await conn.close()
    assert inbox == 1
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
