"""Exactly-once effects under faults: with ~20 % of mutating calls failing (5xx, timeouts, lost
responses), a client retrying with the same key and bytes applies every effect once. Which calls
fail (the sandbox's dice) and the retry jitter come from TEST_SEED."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from orchestrator.connect import (
    ConnectClient,
    ConnectConfig,
    CreateOrderRequest,
    LeaseNumbersRequest,
    RetryPolicy,
    SubscriptionLineItem,
)
from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox
from tests.connect.conftest import API_KEY

ORDERS = 10


@pytest.fixture
async def sandbox(seed: int) -> AsyncIterator[RunningSandbox]:
    """The package's sandbox (frozen clock), its fault dice seeded from TEST_SEED."""
    config = SandboxConfig(
        api_key=API_KEY, seed=seed, clock_speed=0, start_at=datetime(2030, 3, 1, tzinfo=UTC)
    )
    async with run_sandbox(config) as running:
        yield running


async def test_each_effect_exactly_once_under_faults(
    control: SandboxControl, config_for: Callable[..., ConnectConfig], rng: random.Random
) -> None:
    await control.faults(
        {"match": "POST *", "kind": "error", "status": 503, "probability": 0.07},
        {"match": "POST *", "kind": "lost_response", "status": 502, "probability": 0.04},
        {"match": "POST *", "kind": "lost_response", "status": 0, "probability": 0.03},
        {"match": "POST *", "kind": "latency", "latencyMs": 300, "probability": 0.06},
    )
    policy = RetryPolicy(max_attempts=25, base_delay_s=0.05, max_delay_s=0.2, rng=rng)
    config = config_for(read_timeout_s=0.15, total_timeout_s=0.2)

    async def provision(client: ConnectClient, n: int) -> str:
        lease = await client.lease_numbers(
            LeaseNumbersRequest(count=1), idempotency_key=f"wf{n}:lease", retry=policy
        )
        order = await client.create_order(
            CreateOrderRequest(customer={"customerId": f"c{n}"}), idempotency_key=f"wf{n}:order", retry=policy
        )
        item = SubscriptionLineItem(
            line_item_id=f"li{n}",
            product_offering_id="p",
            msisdn=lease.numbers[0].msisdn,
            lease_token=lease.lease_token,
        )
        await client.add_line_item(order.order_id, item, idempotency_key=f"wf{n}:item", retry=policy)
        await client.submit_order(order.order_id, idempotency_key=f"wf{n}:submit", retry=policy)
        return order.order_id

    async with ConnectClient(config=config) as client:
        order_ids = await asyncio.gather(*(provision(client, n) for n in range(ORDERS)))
    await control.faults()
    await control.advance(2)

    requests = await control.ledger(kind="request")
    faults = Counter(
        e["outcome"] for e in requests if e["outcome"].startswith("fault:") or e["outcome"] == "locked"
    )
    assert sum(faults.values()) > 0  # the faults really happened
    effects = await control.ledger(kind="effect")
    by_key = Counter((e["effect"], e["idempotencyKey"]) for e in effects if e["idempotencyKey"])
    assert by_key, "no effects recorded"
    assert set(by_key.values()) == {1}
    counts = Counter(e["effect"] for e in effects)
    assert counts["number.leased"] == ORDERS
    assert counts["order.created"] == ORDERS
    assert counts["line_item.added"] == ORDERS
    assert counts["order.submitted"] == ORDERS
    assert counts["subscription.created"] == ORDERS
    assert len(set(order_ids)) == ORDERS
