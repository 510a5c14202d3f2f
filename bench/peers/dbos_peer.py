"""The peer: the subscription flow (provider-assigned number) on DBOS Transact 3.4.0.

One durable DBOS workflow per CRM order, each provider call and each status publish a DBOS step:

    publish received → create order → add each line item → publish awaiting_submission →
    submit → publish submitted → poll the order until COMPLETED (durable sleep, same backoff as
    ours) → read each subscription → publish activated

Intake is aiokafka (DBOS's own `@DBOS.kafka_consumer` needs confluent-kafka): each record starts
its workflow under the id `kafka-<topic>-<partition>-<offset>` (so a redelivery runs once), and the
offset is committed only after the start returned, i.e. after DBOS made the workflow durable.
Provider calls carry an idempotency key derived from the workflow id and the step. Status events
have the same shape as ours on a topic of the peer's own, so the bench measures both the same way.

For a comparison at equal work the bench runs it with the provider's webhooks off for both sides
(the peer has no ingress; both poll, with the same backoff), the same number of provider
connections as our worker's Connect concurrency (`--max-connections`), and optionally one more
read of the provider order per line item (`--order-read-per-item`, as an engine that reads the
order once per item does).

Tuning from shared/reference/verified-libraries.md: `pool_pre_ping` off, a pinned
`application_version`. Run: `python -m bench.peers.dbos_peer --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from dbos import DBOS, SetWorkflowID

CRM_ONLY = {"leaseExpiresAt"}


class _Edges:
    http: httpx.AsyncClient
    producer: AIOKafkaProducer
    status_topic: str
    order_read_per_item: bool = False


edges = _Edges()


def poll_delay(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** min(attempt, 6)))


@DBOS.step()
async def provider_call(method: str, path: str, body: Any, key: str | None) -> Any:
    headers = {"X-Idempotency-Key": key} if key else {}
    answer = await edges.http.request(method, path, json=body, headers=headers)
    if answer.status_code >= 500 or answer.status_code == 429:
        raise RuntimeError(f"retryable provider answer {answer.status_code}")  # DBOS retries the step
    answer.raise_for_status()
    return answer.json() if answer.content else None


@DBOS.step()
async def publish_status(order_id: str, line_item_ids: list[str], state: str, sequence: int) -> None:
    futures = []
    for line_item_id in line_item_ids:
        event = {
            "specversion": "1.0",
            "id": f"{order_id}/{line_item_id}/{sequence}",
            "source": "urn:bench:dbos-peer",
            "type": "provisioning.line_item.state_changed",
            "subject": order_id,
            "time": datetime.now(UTC).isoformat(),
            "data": {"orderId": order_id, "lineItemId": line_item_id, "state": state, "sequence": sequence},
        }
        futures.append(
            await edges.producer.send(edges.status_topic, json.dumps(event).encode(), key=order_id.encode())
        )
    await asyncio.gather(*futures)


@DBOS.workflow()
async def provision_order(event: dict[str, Any]) -> int:
    wf = DBOS.workflow_id
    data = event["data"]
    order_id = data["orderId"]
    items = data["lineItems"]
    ids = [item["lineItemId"] for item in items]
    await publish_status(order_id, ids, "received", 1)
    created = await provider_call(
        "POST",
        "/orders",
        {"customer": data["customer"], "lineItems": [], "metadata": {"crmOrderId": order_id}},
        f"{wf}-create_order",
    )
    provider_order = created["orderId"]
    for item in items:
        body = {k: v for k, v in item.items() if k not in CRM_ONLY}
        await provider_call(
            "POST", f"/orders/{provider_order}/line-items", body, f"{wf}-add-{item['lineItemId']}"
        )
    await publish_status(order_id, ids, "awaiting_submission", 2)
    await provider_call("POST", f"/orders/{provider_order}/submit", {}, f"{wf}-submit_order")
    await publish_status(order_id, ids, "submitted", 3)
    attempt = 0
    while True:
        order = await provider_call("GET", f"/orders/{provider_order}", None, None)
        if order.get("state") == "COMPLETED":
            break
        await DBOS.sleep_async(poll_delay(attempt))
        attempt += 1
    subs = {s["createdByLineItem"]: s["subscriptionId"] for s in order["createdEntities"]["subscriptions"]}
    activated = []
    for n, line_item_id in enumerate(ids):
        # as an engine that reads the order once per line item does: the poll's read served the first
        if edges.order_read_per_item and n > 0:
            order = await provider_call("GET", f"/orders/{provider_order}", None, None)
        sub = await provider_call("GET", f"/subscriptions/{subs[line_item_id]}", None, None)
        if sub.get("status") == "ACTIVATED":
            activated.append(line_item_id)
    await publish_status(order_id, activated, "activated", 4)
    return len(activated)


async def consume(args: argparse.Namespace, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        args.orders_topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    slots = asyncio.Semaphore(args.max_in_flight)
    running: set[asyncio.Task[Any]] = set()

    async def follow(handle: Any) -> None:
        try:
            await handle.get_result()
        finally:
            slots.release()

    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=200)
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for record in records:
                    await slots.acquire()
                    with SetWorkflowID(f"kafka-{tp.topic}-{tp.partition}-{record.offset}"):
                        handle = await DBOS.start_workflow_async(provision_order, json.loads(record.value))
                    task = asyncio.create_task(follow(handle))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    offsets[tp] = record.offset + 1
            if offsets:
                await consumer.commit(offsets)  # only after every workflow of the batch is durable
    finally:
        await consumer.stop()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--orders-topic", required=True)
    parser.add_argument("--status-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url", required=True, help="DBOS system database (created if missing)")
    parser.add_argument("--sandbox-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--max-in-flight", type=int, default=64, help="orders in flight at once")
    parser.add_argument(
        "--max-connections", type=int, default=16, help="provider connections (ours: its Connect concurrency)"
    )
    parser.add_argument(
        "--order-read-per-item",
        action="store_true",
        help="read the provider order again for each line item but the first (whose read is the poll's)",
    )
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    edges.http = httpx.AsyncClient(
        base_url=args.sandbox_url,
        headers={"X-API-Key": args.api_key},
        limits=httpx.Limits(max_connections=args.max_connections),
        timeout=15,
    )
    edges.producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, enable_idempotence=True, linger_ms=5)
    edges.status_topic = args.status_topic
    edges.order_read_per_item = args.order_read_per_item
    await edges.producer.start()
    DBOS(
        config={
            "name": "bench-dbos-peer",
            "system_database_url": args.database_url,
            "application_version": "bench-1",
            "db_engine_kwargs": {"pool_pre_ping": False},
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    print("dbos peer ready", flush=True)
    try:
        await consume(args, stop)
    finally:
        with contextlib.suppress(Exception):
            DBOS.destroy()
        await edges.producer.stop()
        await edges.http.aclose()


if __name__ == "__main__":
    asyncio.run(main())
