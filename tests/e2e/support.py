"""Helpers for end-to-end tests: CRM events in, status events out, the sandbox's ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orchestrator.settings import Settings, settings_env

TERMINAL = {"activated", "completed", "cancelled", "failed"}


def crm_event(event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """A CRM CloudEvent in structured mode, as the CRM publishes it."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "urn:crm:test",
            "type": event_type,
            "subject": data["orderId"],
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


STRUCTURED = [("content-type", b"application/cloudevents+json")]


def subscription(line_item_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "SUBSCRIPTION",
        "lineItemId": line_item_id,
        "productOfferingId": "mobile-plan-basic",
        **fields,
    }


def order_submitted(order_id: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"orderId": order_id, "customer": {"customerId": "cust-1"}, "lineItems": list(items)}


def porting(account: str = "ACC-123456", passcode: str = "9911") -> dict[str, Any]:
    return {
        "details": {
            "accountNumber": account,
            "passcode": passcode,
            "firstName": "Ada",
            "lastName": "Lovelace",
            "address": {"street1": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        }
    }


async def publish(
    settings: Settings, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.kafka.orders_topic,
            value,
            key=key.encode(),
            headers=STRUCTURED if headers is None else headers,
        )
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning in the background and keeps every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level="read_committed"
        )
        self.records: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        async for record in self._consumer:
            self.records.append(record)
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[], bool], *, timeout_s: float = 60.0, what: str = ""
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))


class StatusEvents(TopicReader):
    """The provisioning status topic, decoded."""

    def events(self, order_id: str | None = None) -> list[dict[str, Any]]:
        decoded = [json.loads(r.value) for r in self.records]
        return [e for e in decoded if order_id is None or e["subject"] == order_id]

    def line_items(self, order_id: str) -> dict[str, list[dict[str, Any]]]:
        by_item: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in self.events(order_id):
            if event["type"] == "provisioning.line_item.state_changed":
                by_item[event["data"]["lineItemId"]].append(event["data"])
        return dict(by_item)

    def states(self, order_id: str, line_item_id: str) -> list[str]:
        return [e["state"] for e in self.line_items(order_id).get(line_item_id, [])]

    def order_states(self, order_id: str) -> list[str]:
        return [
            e["data"]["state"]
            for e in self.events(order_id)
            if e["type"] == "provisioning.order.state_changed"
        ]

    async def until_settled(self, order_id: str, line_items: int, *, timeout_s: float = 60.0) -> None:
        def settled() -> bool:
            items = self.line_items(order_id)
            return len(items) == line_items and all(
                events[-1]["state"] in TERMINAL for events in items.values()
            )

        await self.wait_for(
            settled, timeout_s=timeout_s, what=f"order {order_id} to settle: {self.line_items(order_id)}"
        )


def effects(ledger: list[dict[str, Any]], effect: str) -> list[dict[str, Any]]:
    return [entry for entry in ledger if entry.get("effect") == effect]


async def lease_number(base_url: str, api_key: str) -> dict[str, Any]:
    """What the CRM does before sending a pool number: lease one from the provider."""
    import httpx  # noqa: PLC0415

    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key}) as http:
        answer = await http.post(
            "/inventory/lease-numbers",
            json={"types": ["CELL"], "count": 1},
            headers={"X-Idempotency-Key": f"crm-lease-{uuid.uuid4()}"},
        )
        answer.raise_for_status()
        lease: dict[str, Any] = answer.json()
        return lease


async def run_cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m orchestrator <args>` as an operator runs it, configured by `settings` only (no
    ORCHESTRATOR_* variable of this process leaks in) plus `env`: (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    environ |= settings_env(settings) | {"ORCHESTRATOR_LOG_LEVEL": "WARNING"} | (env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
