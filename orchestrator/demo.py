"""`orchestrator demo`: the whole stack, a sample order for every path, live progress.

The sample orders are published to Kafka exactly as a CRM would (CloudEvents, structured mode) and
the progress table is built only from `provisioning.status.v1`, the topic status consumers read,
so what you see is what they would see.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orchestrator.devstack import DevStack, dev_stack, say, stop_on_signals
from orchestrator.logs import configure_logging
from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings

TERMINAL = {"activated", "completed", "cancelled", "failed"}
STRUCTURED = [("content-type", b"application/cloudevents+json")]
PORTING = {
    "details": {
        "accountNumber": "DEMO-ACCOUNT-1",
        "passcode": "0000",
        "firstName": "Grace",
        "lastName": "Hopper",
        "address": {"street1": "1 Demo Way", "city": "Arlington", "zip": "22201", "country": "US"},
    }
}


@dataclass
class Sample:
    order_id: str
    title: str
    items: list[dict[str, Any]]
    expect: str  # the final state the demo expects
    cancel_when: str | None = None  # send crm.order.cancelled once the item reaches this state
    advance_when: str | None = None  # move the provider's clock once the item reaches this state
    sent_cancel: bool = field(default=False)
    advanced: bool = field(default=False)


def _item(line_item_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "SUBSCRIPTION",
        "lineItemId": line_item_id,
        "productOfferingId": "mobile-plan-basic",
        **fields,
    }


def _event(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:crm:demo",
            "type": event_type,
            "subject": data["orderId"],
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


async def _samples(dev: DevStack, control: SandboxControl, run: str) -> list[Sample]:
    async with httpx.AsyncClient(
        base_url=dev.sandbox.base_url, headers={"X-API-Key": dev.sandbox.config.api_key}
    ) as http:
        answer = await http.post(
            "/inventory/lease-numbers",
            json={"types": ["CELL"], "count": 1},
            headers={"X-Idempotency-Key": f"demo-lease-{run}"},
        )
        answer.raise_for_status()
        lease = answer.json()
    await control.port_plan("+15550000003", outcome="FAILED")
    await control.port_plan("+15550000004", outcome="STUCK")
    in_3_days = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    number = lease["numbers"][0]["msisdn"]
    return [
        Sample(f"demo-{run}-assigned", "number assigned by the provider", [_item("li-1")], "activated"),
        Sample(
            f"demo-{run}-lease",
            "pool number under a lease",
            [_item("li-1", msisdn=number, leaseToken=lease["leaseToken"], leaseExpiresAt=lease["expiresAt"])],
            "activated",
        ),
        Sample(
            f"demo-{run}-port",
            "port-in",
            [_item("li-1", msisdn="+15550000001", porting=PORTING)],
            "activated",
        ),
        Sample(
            f"demo-{run}-temp",
            "port-in with a temporary number",
            [_item("li-1", msisdn="+15550000002", porting=PORTING, tempNumber=True)],
            "activated",
        ),
        Sample(
            f"demo-{run}-scheduled",
            f"activation scheduled for {in_3_days}",
            [_item("li-1", scheduleActivationAt=in_3_days)],
            "activated",
            advance_when="activation_scheduled",
        ),
        Sample(
            f"demo-{run}-portfail",
            "port-in the old operator refuses",
            [_item("li-1", msisdn="+15550000003", porting=PORTING)],
            "failed",
        ),
        Sample(
            f"demo-{run}-cancel",
            "cancelled by the CRM while porting",
            [_item("li-1", msisdn="+15550000004", porting=PORTING)],
            "cancelled",
            cancel_when="porting_pending",
        ),
    ]


class Board:
    """The latest status per line item, from the status topic."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: dict[tuple[str, str], list[str]] = {}
        self.orders: dict[str, str] = {}

    def add(self, event: dict[str, Any]) -> None:
        data = event["data"]
        if event["type"] == "provisioning.order.state_changed":
            self.orders[data["orderId"]] = data["state"]
            return
        key = (data["orderId"], data["lineItemId"])
        self.items[key] = data
        self.history.setdefault(key, []).append(data["state"])

    def state(self, order_id: str) -> str | None:
        latest = [d for (o, _), d in self.items.items() if o == order_id]
        return latest[0]["state"] if latest else None

    def render(self, samples: list[Sample], elapsed: float) -> str:
        lines = [f"provisioning progress  ({elapsed:5.1f} s)", ""]
        lines.append(f"{'order':<34} {'path':<36} {'state':<22} {'number'}")
        for sample in samples:
            data = next((d for (o, _), d in self.items.items() if o == sample.order_id), None)
            state = data["state"] if data else "(sent)"
            number = ""
            if data:
                number = data.get("msisdn") or ""
                if data.get("temporaryMsisdn"):
                    number = f"{data['temporaryMsisdn']} (temp; porting {data['portedMsisdn']})"
                if data.get("error"):
                    number = f"error: {data['error']['code']}"
            lines.append(f"{sample.order_id:<34} {sample.title:<36} {state:<22} {number}")
        return "\n".join(lines)


async def run_demo(*, base: Settings, database_url: str | None, keep_running: bool) -> bool:
    configure_logging(level="WARNING", json=False)
    stop = stop_on_signals()
    async with dev_stack(base=base, run_dir=None, database_url=database_url) as dev:
        kafka = dev.settings.kafka
        run = uuid.uuid4().hex[:6]
        board = Board()
        consumer = AIOKafkaConsumer(
            kafka.status_topic,
            bootstrap_servers=kafka.bootstrap_servers,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            group_id=f"demo-board-{run}",
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
        await consumer.start()
        await producer.start()
        try:
            async with SandboxControl(
                base_url=dev.sandbox.base_url, api_key=dev.sandbox.config.api_key
            ) as control:
                samples = await _samples(dev, control, run)
                await _wait_for_assignment(consumer)
                for sample in samples:
                    data = {
                        "orderId": sample.order_id,
                        "customer": {"customerId": "demo-customer"},
                        "lineItems": sample.items,
                    }
                    await _send(producer, kafka.orders_topic, "crm.order.submitted", data)
                await producer.send_and_wait(
                    kafka.orders_topic,
                    b"{this is not an event",
                    key=b"demo-garbage",
                    headers=[("content-type", b"application/cloudevents+json")],
                )
                say(f"published {len(samples)} sample orders and a malformed event to {kafka.orders_topic}\n")
                ok = await _watch(
                    consumer=consumer,
                    producer=producer,
                    control=control,
                    board=board,
                    samples=samples,
                    orders_topic=kafka.orders_topic,
                    stop=stop,
                )
        finally:
            await producer.stop()
            await consumer.stop()
        _summary(board, samples, ok)
        await _show_dead_letters(kafka.bootstrap_servers, kafka.orders_dlq_topic)
        if keep_running and not stop.is_set():
            say("the stack stays up (Ctrl-C stops it); connection details:")
            for key, value in sorted(vars(dev.info).items()):
                if value is not None:
                    say(f"  {key:<16} {value}")
            await stop.wait()
        return ok


async def _send(producer: AIOKafkaProducer, topic: str, event_type: str, data: dict[str, Any]) -> None:
    await producer.send_and_wait(
        topic, _event(event_type, data), key=data["orderId"].encode(), headers=STRUCTURED
    )


async def _wait_for_assignment(consumer: AIOKafkaConsumer) -> None:
    for _ in range(200):
        if consumer.assignment():
            return
        await asyncio.sleep(0.05)


async def _watch(
    *,
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    control: SandboxControl,
    board: Board,
    samples: list[Sample],
    orders_topic: str,
    stop: asyncio.Event,
) -> bool:
    started = time.monotonic()
    tty = sys.stdout.isatty()
    last = ""
    while not stop.is_set() and time.monotonic() - started < 90:
        batch = await consumer.getmany(timeout_ms=250)
        for records in batch.values():
            for record in records:
                board.add(json.loads(record.value))
        for sample in samples:
            state = board.state(sample.order_id)
            if sample.cancel_when and state == sample.cancel_when and not sample.sent_cancel:
                sample.sent_cancel = True
                data = {"orderId": sample.order_id, "reason": "NO_NEED"}
                await _send(producer, orders_topic, "crm.order.cancelled", data)
            others_done = all(board.state(o.order_id) in TERMINAL for o in samples if o is not sample)
            if sample.advance_when and state == sample.advance_when and others_done and not sample.advanced:
                # The provider's clock is shared by every order: jump only when nothing else is running.
                sample.advanced = True
                await control.advance(4 * 86400)  # the provider's clock jumps to the activation date
        view = board.render(samples, time.monotonic() - started)
        if tty:
            sys.stdout.write("\x1b[2J\x1b[H" + view + "\n")
            sys.stdout.flush()
        elif view.splitlines()[3:] != last.splitlines()[3:]:
            say(view + "\n")
        last = view
        if all(board.state(s.order_id) in TERMINAL for s in samples):
            if tty:
                say("")
            return True
    return False


async def _show_dead_letters(bootstrap: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()
    for records in batch.values():
        for record in records:
            headers = {k: v.decode() for k, v in record.headers}
            say(
                f"dead letter on {topic}: key={record.key!r} dlq_reason={headers.get('dlq_reason')} "
                f"dlq_error={headers.get('dlq_error')!r}"
            )


def _summary(board: Board, samples: list[Sample], finished: bool) -> None:
    say("summary")
    good = 0
    for sample in samples:
        key = next((k for k in board.history if k[0] == sample.order_id), None)
        states = board.history.get(key, []) if key else []
        final = states[-1] if states else "(none)"
        mark = "ok " if final == sample.expect else "!! "
        good += final == sample.expect
        say(f"  {mark}{sample.title:<36} {' → '.join(states)}")
    say(
        f"\n{good}/{len(samples)} line items ended as expected; "
        "every state change above was read from the status topic"
    )
    if not finished:
        say("the demo stopped before every line item settled")
