"""The workload: CRM orders of M subscription line items with a mix of paths, published to Kafka
exactly as the CRM does, and a tracker that reads the status topic as a status consumer would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

PATHS = ("assigned", "leased", "port", "port_temp", "scheduled")
# The status a path's line item reaches when the orchestrator has done all it can: a scheduled
# activation then waits for its date (days away), so it counts as done at `activation_scheduled`.
DONE_STATE = {
    "assigned": "activated",
    "leased": "activated",
    "port": "activated",
    "port_temp": "activated",
    "scheduled": "activation_scheduled",
}
DEFAULT_MIX = {"assigned": 40, "leased": 20, "port": 15, "port_temp": 15, "scheduled": 10}
STRUCTURED = [("content-type", b"application/cloudevents+json")]
PORTING = {
    "details": {
        "accountNumber": "BENCH-1",
        "passcode": "0000",
        "firstName": "Bench",
        "lastName": "Mark",
        "address": {"street1": "1 Load St", "city": "Uppsala", "zip": "75220", "country": "SE"},
    }
}


def parse_mix(text: str) -> dict[str, int]:
    """`assigned=40,leased=20,...` → weights; unknown paths are an error."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in PATHS:
            raise ValueError(f"unknown path {name!r}; choose from {', '.join(PATHS)}")
        mix[name] = int(weight or 1)
    return {k: v for k, v in mix.items() if v > 0}


def mix_label(mix: dict[str, int]) -> str:
    total = sum(mix.values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in mix.items())


def assign_paths(count: int, mix: dict[str, int]) -> list[str]:
    """Deterministic, evenly interleaved paths in the mix's proportions (largest remainder)."""
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0.0)
    out: list[str] = []
    for _ in range(count):
        for name, weight in mix.items():
            credit[name] += weight / total
        pick = max(credit, key=lambda k: credit[k])
        credit[pick] -= 1
        out.append(pick)
    return out


@dataclass
class Order:
    order_id: str
    event: bytes
    items: list[tuple[str, str]]  # (line item id, path)


class Leases:
    """Pool numbers the CRM leases from the provider before it sends a leased line item."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._numbers: list[tuple[str, str, str]] = []

    async def take(self, count: int) -> list[tuple[str, str, str]]:
        async with httpx.AsyncClient(base_url=self._base_url, headers={"X-API-Key": self._api_key}) as http:
            while len(self._numbers) < count:
                answer = await http.post(
                    "/inventory/lease-numbers",
                    json={"types": ["CELL"], "count": 10},
                    headers={"X-Idempotency-Key": f"bench-lease-{uuid.uuid4()}"},
                )
                answer.raise_for_status()
                lease = answer.json()
                self._numbers += [
                    (n["msisdn"], lease["leaseToken"], lease["expiresAt"]) for n in lease["numbers"]
                ]
        taken, self._numbers = self._numbers[:count], self._numbers[count:]
        return taken


def _item(line_item_id: str, path: str, *, number: int, lease: tuple[str, str, str] | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "SUBSCRIPTION",
        "lineItemId": line_item_id,
        "productOfferingId": "mobile-plan-basic",
    }
    if path == "leased":
        assert lease is not None
        item.update(msisdn=lease[0], leaseToken=lease[1], leaseExpiresAt=lease[2])
    elif path in ("port", "port_temp"):
        item.update(msisdn=f"+1557{number:07d}", porting=PORTING)
        if path == "port_temp":
            item["tempNumber"] = True
    elif path == "scheduled":
        item["scheduleActivationAt"] = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    return item


async def build_orders(
    *, run: str, orders: int, items: int, mix: dict[str, int], leases: Leases | None, first_number: int = 0
) -> list[Order]:
    paths = assign_paths(orders * items, mix)
    pool = await leases.take(paths.count("leased")) if leases is not None and "leased" in paths else []
    out: list[Order] = []
    n = 0
    for o in range(orders):
        order_id = f"bench-{run}-{o:06d}"
        lines: list[dict[str, Any]] = []
        refs: list[tuple[str, str]] = []
        for i in range(items):
            path = paths[n]
            lease = pool.pop() if path == "leased" else None
            line_item_id = f"li-{i}"
            lines.append(_item(line_item_id, path, number=first_number + n, lease=lease))
            refs.append((line_item_id, path))
            n += 1
        data = {"orderId": order_id, "customer": {"customerId": f"cust-{o % 97}"}, "lineItems": lines}
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:crm:bench",
            "type": "crm.order.submitted",
            "subject": order_id,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
        out.append(Order(order_id=order_id, event=json.dumps(event).encode(), items=refs))
    return out


@dataclass
class ItemTimes:
    path: str
    sent: float = 0.0
    received: float | None = None
    received_at_worker: float | None = None  # the `received` event's `time`: its intake commit
    done: float | None = None
    failed: float | None = None
    last_event: float | None = None
    states: list[str] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)  # when each of its changes happened


class Tracker:
    """Reads the status topic from the beginning and times every tracked line item."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 * 2**20,
        )
        self.items: dict[tuple[str, str], ItemTimes] = {}
        self.done_times: list[float] = []
        self.terminal_times: list[float] = []  # done or failed: the item's last status event
        self.events = 0
        self.changes: list[float] = []  # when each line item change happened (the event's `time`)
        self.failed: list[tuple[str, str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Tracker:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    def track(self, orders: Sequence[Order]) -> None:
        for order in orders:
            for line_item_id, path in order.items:
                self.items[(order.order_id, line_item_id)] = ItemTimes(path=path)

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    self._on(json.loads(record.value), now)
            if batch:
                self._changed.set()

    def _on(self, event: dict[str, Any], now: float) -> None:
        self.events += 1
        if event.get("type") != "provisioning.line_item.state_changed":
            return
        data = event["data"]
        occurred = datetime.fromisoformat(event["time"]).timestamp() if event.get("time") else now
        self.changes.append(occurred)
        item = self.items.get((data["orderId"], data["lineItemId"]))
        if item is None:
            return
        item.changes.append(occurred)
        state = data["state"]
        item.states.append(state)
        item.last_event = now
        if state == "received" and item.received is None:
            item.received = now
            item.received_at_worker = occurred
        if item.done is None and item.failed is None and state == DONE_STATE[item.path]:
            item.done = now
            self.done_times.append(now)
            self.terminal_times.append(now)
        if state == "failed" and item.failed is None:
            item.failed = now
            self.failed.append((data["orderId"], data["lineItemId"], data.get("error")))
            if item.done is None:
                self.terminal_times.append(now)

    @property
    def done(self) -> int:
        return len(self.done_times)

    @property
    def terminal(self) -> int:
        """Line items that reached their last state: done, or failed."""
        return len(self.terminal_times)

    @property
    def first_sent(self) -> float | None:
        sent = [i.sent for i in self.items.values() if i.sent]
        return min(sent) if sent else None

    async def wait_for(self, predicate: Any, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True


async def wait_assigned(bootstrap: str, topic: str, group: str, *, timeout_s: float = 30.0) -> None:
    """Return once the consumer group `group` has members with partitions of `topic`."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                described = await admin.describe_consumer_groups([group])
            except KafkaError:  # no coordinator yet on a fresh broker
                await asyncio.sleep(0.25)
                continue
            text = repr(described)
            if "Stable" in text and topic in text:
                return
            await asyncio.sleep(0.25)
    finally:
        await admin.close()


class Publisher:
    """An idempotent producer that publishes orders at a paced rate (or all at once)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=2, max_batch_size=256 * 1024
        )
        self._topic = topic

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def publish(
        self, orders: Sequence[Order], tracker: Tracker | None, *, items_per_s: float | None
    ) -> float:
        """Publish every order; with `items_per_s`, pace them open-loop. Returns the duration."""
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        sent_items = 0
        for order in orders:
            if items_per_s:
                due = started + sent_items / items_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.time()
            if tracker is not None:
                for line_item_id, _ in order.items:
                    tracker.items[(order.order_id, line_item_id)].sent = sent
            pending.append(
                await self._producer.send(
                    self._topic, order.event, key=order.order_id.encode(), headers=STRUCTURED
                )
            )
            sent_items += len(order.items)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - started


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_stats(tracker: Tracker, *, since: float = 0.0) -> dict[str, float]:
    """p50/p95/p99 in ms of CRM event → `received` and → done, over items sent after `since`."""
    items = [i for i in tracker.items.values() if i.sent >= since]
    received = [1000 * (i.received - i.sent) for i in items if i.received is not None]
    done = [1000 * (i.done - i.sent) for i in items if i.done is not None]
    # The `received` latency in two legs (same host, same clock): CRM topic + consumer + intake,
    # then outbox + relay + status topic + reader.
    split = [i for i in items if i.received is not None and i.received_at_worker is not None]
    intake = [1000 * (i.received_at_worker - i.sent) for i in split]  # type: ignore[operator]
    relay = [1000 * (i.received - i.received_at_worker) for i in split]  # type: ignore[operator]
    out: dict[str, float] = {}
    for name, values in (("received", received), ("done", done), ("intake", intake), ("relay", relay)):
        for q in (50, 95, 99):
            out[f"{name}_p{q}_ms"] = percentile(values, q)
    return out


def first_minute(curve: Sequence[float], *, window_s: float = 60.0) -> int:
    """Completions within the first `window_s` of a sorted completion curve (seconds from the start)."""
    return sum(1 for t in curve if t <= window_s)


def sustained_rate(done_times: Sequence[float], *, low: float = 0.2, high: float = 0.9) -> float:
    """Line items done per second between the `low` and `high` fractions of completions: past the
    warm-up (first completions) and before the tail (last stragglers). Not the headline: a burst
    whose completions bunch at the end scores high here and low to its last completion."""
    times = sorted(done_times)
    if len(times) < 10:
        return float("nan")
    a = times[int(low * (len(times) - 1))]
    b = times[int(high * (len(times) - 1))]
    count = int(high * (len(times) - 1)) - int(low * (len(times) - 1))
    return count / (b - a) if b > a else float("nan")
