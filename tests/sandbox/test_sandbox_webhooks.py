"""Webhook delivery to a real HTTP receiver: auth header, redelivery until 2xx, stable eventId;
and the default real-time ticking that completes an order without anyone advancing the clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.http_server import serve
from orchestrator.sandbox import SandboxConfig, run_sandbox

SECRET = "hook-secret"


class Receiver:
    """Answers 500 to the first `fail_first` deliveries, then 204; records everything."""

    def __init__(self, *, fail_first: int) -> None:
        self.fail_first = fail_first
        self.deliveries: list[tuple[str | None, dict[str, Any]]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        self.deliveries.append((request.headers.get("x-api-key"), json.loads(await request.body())))
        return Response(status_code=500 if len(self.deliveries) <= self.fail_first else 204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver(fail_first=3)
    async with serve(hook.app, name="the webhook receiver") as base_url:
        yield hook, f"{base_url}/hook"


async def _wait_for(predicate: Any, *, attempts: int = 200) -> None:
    for _ in range(attempts):  # bounded: at most ~4 s
        if predicate():
            return
        await asyncio.sleep(0.02)


async def test_failed_deliveries_are_retried_with_the_same_event_id(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    config = SandboxConfig(
        api_key="k",
        webhook_url=url,
        webhook_secret=SECRET,
        clock_speed=0,
        webhook_retry_base_real_s=0.01,
        start_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    async with (
        run_sandbox(config) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url, headers={"X-API-Key": "k"}) as http,
    ):
        order = (
            await http.post(
                "/orders",
                json={
                    "customer": {"customerId": "c"},
                    "lineItems": [{"type": "EXTERNAL_ITEM", "lineItemId": "e"}],
                },
            )
        ).json()
        await http.post(f"/orders/{order['orderId']}/submit", json={})
        await _wait_for(lambda: len(hook.deliveries) >= 4)
        events = (await http.get("/_sandbox/events")).json()["events"]
    assert [secret for secret, _ in hook.deliveries] == [SECRET] * len(hook.deliveries)
    first_ids = {body["eventId"] for _, body in hook.deliveries[:4]}
    assert len(first_ids) == 1  # one event, four attempts
    assert hook.deliveries[0][1]["type"] == "order.submitted"
    assert hook.deliveries[0][1]["data"]["orderId"] == order["orderId"]
    assert events[0]["attempts"][:4] == [500, 500, 500, 204]
    assert events[0]["delivered"] is True


async def test_duplicate_delivery_scenario_sends_the_same_event_twice(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.fail_first = 0
    config = SandboxConfig(api_key="k", webhook_url=url, clock_speed=0)
    async with (
        run_sandbox(config) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url, headers={"X-API-Key": "k"}) as http,
    ):
        await http.post("/_sandbox/scenario", json={"webhookDuplicateProbability": 1.0})
        await http.post("/subscriptions", json={"productOfferingId": "p", "customerId": "c"})
        await _wait_for(lambda: len(hook.deliveries) >= 2)
    ids = [body["eventId"] for _, body in hook.deliveries]
    assert len(ids) == 2
    assert ids[0] == ids[1]


async def test_default_ticking_completes_an_order_in_real_time() -> None:
    async with (
        run_sandbox(SandboxConfig(api_key="k")) as sandbox,
        httpx.AsyncClient(base_url=sandbox.base_url, headers={"X-API-Key": "k"}) as http,
    ):
        order = (
            await http.post(
                "/orders",
                json={
                    "customer": {"customerId": "c"},
                    "lineItems": [{"type": "SUBSCRIPTION", "lineItemId": "s", "productOfferingId": "p"}],
                },
            )
        ).json()
        await http.post(f"/orders/{order['orderId']}/submit", json={})
        state = None
        for _ in range(100):  # bounded: at most ~5 s; the default needs ~0.4 s
            state = (await http.get(f"/orders/{order['orderId']}")).json()["state"]
            if state == "COMPLETED":
                break
            await asyncio.sleep(0.05)
    assert state == "COMPLETED"
