"""The client against the sandbox over real HTTP: every endpoint, every error class, Retry-After,
the rate limiter and concurrency cap under a burst, and exactly-once effects under faults."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable

import httpx
import pytest

from orchestrator.connect import (
    ActivateSubscriptionRequest,
    AddAddonRequest,
    AddTopupRequest,
    CancelReason,
    CancelSubscriptionRequest,
    CancelWhen,
    ChangeAddonRequest,
    ChangeLicenseRequest,
    ConnectClient,
    ConnectConfig,
    CreateOrderRequest,
    CreateSubscriptionRequest,
    IdempotencyKeyLocked,
    IdempotencyKeyMismatch,
    LeaseNumbersRequest,
    LineItem,
    OrderState,
    Porting,
    PortingDetails,
    PortingStatus,
    ProviderAuthError,
    ProviderConnectionLost,
    ProviderNotFound,
    ProviderPreconditionFailed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderStateConflict,
    ProviderTimeout,
    ProviderUnavailable,
    Requests,
    RetryPolicy,
    SubscriptionLineItem,
    SubscriptionStatus,
    UpdatePortingRequest,
)
from orchestrator.sandbox import RunningSandbox, SandboxControl
from tests.kafka.support import wait_until

CUSTOMER = {"customerId": "cust-9"}


async def _completed_order(client: ConnectClient, control: SandboxControl, *items: LineItem, key: str) -> str:
    order = await client.create_order(
        CreateOrderRequest(customer=CUSTOMER, line_items=list(items)), idempotency_key=f"{key}:create"
    )
    await client.submit_order(order.order_id, idempotency_key=f"{key}:submit")
    await control.advance(1)
    done = await client.get_order(order.order_id)
    assert done.state is OrderState.COMPLETED
    return done.order_id


async def test_order_endpoints(client: ConnectClient, control: SandboxControl) -> None:
    lease = await client.lease_numbers(LeaseNumbersRequest(count=1), idempotency_key="lease")
    number = lease.numbers[0].msisdn
    order = await client.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="create")
    assert order.state is OrderState.PENDING
    item = SubscriptionLineItem(
        line_item_id="li", product_offering_id="basic", msisdn=number, lease_token=lease.lease_token
    )
    added = await client.add_line_item(order.order_id, item, idempotency_key="add")
    assert added.msisdn == number
    updated = await client.update_line_item(
        order.order_id, item.model_copy(update={"product_offering_id": "plus"}), idempotency_key="update"
    )
    assert updated.product_offering_id == "plus"
    await client.add_line_item(
        order.order_id, LineItem(type="EXTERNAL_ITEM", line_item_id="x"), idempotency_key="x"
    )
    await client.remove_line_item(order.order_id, "x")
    pricing = await client.calculate_price(order.order_id, idempotency_key="price")
    assert pricing["total"] == 100
    submitted = await client.submit_order(order.order_id, idempotency_key="submit")
    assert submitted.state is OrderState.SUBMITTED
    await control.advance(1)
    done = await client.get_order(order.order_id)
    [created] = done.created_entities.subscriptions if done.created_entities else []
    assert (created.created_by_line_item, created.msisdn) == ("li", number)

    cart = await client.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="create-2")
    assert (await client.cancel_order(cart.order_id)).state is OrderState.CANCELLED


async def test_subscription_endpoints(client: ConnectClient, control: SandboxControl) -> None:
    shell = await client.create_subscription(
        CreateSubscriptionRequest(product_offering_id="p", customer_id="c", reference_id="crm-1"),
        idempotency_key="shell",
    )
    assert shell.status is SubscriptionStatus.PENDING
    activated = await client.activate_subscription(
        "rid_crm-1", ActivateSubscriptionRequest(), idempotency_key="activate"
    )
    assert activated.status is SubscriptionStatus.ACTIVATED
    assert [s.subscription_id for s in (await client.list_subscriptions()).items] == [shell.subscription_id]
    addon = await client.add_addon(
        shell.subscription_id, AddAddonRequest(product_offering_id="roam"), idempotency_key="addon"
    )
    await client.change_addon(
        shell.subscription_id,
        ChangeAddonRequest(subscription_addon_id=addon.subscription_addon_id, product_offering_id="roam-2"),
        idempotency_key="addon-change",
    )
    assert (await client.list_addons(shell.subscription_id)).items[0].product_offering_id == "roam-2"
    topup = await client.add_topup(
        shell.subscription_id, AddTopupRequest(product_offering_id="5gb"), idempotency_key="topup"
    )
    assert topup.topup.product_offering_id == "5gb"
    await _completed_order(
        client,
        control,
        LineItem(
            type="LICENSE",
            line_item_id="lic",
            product_offering_id="office",
            subscriptionId=shell.subscription_id,
        ),
        key="lic",
    )
    [lic] = (await client.list_licenses()).items
    changed = await client.change_license(
        lic.license_id, ChangeLicenseRequest(product_offering_id="office-2"), idempotency_key="lic-change"
    )
    assert changed.product_offering_id == "office-2"
    cancelled = await client.cancel_subscription(
        shell.subscription_id,
        CancelSubscriptionRequest(when=CancelWhen.NEXT_DAY, reason=CancelReason.NO_NEED),
        idempotency_key="cancel",
    )
    assert cancelled.pending_status is not None
    await control.advance(86400)
    assert (await client.get_subscription(shell.subscription_id)).status is SubscriptionStatus.CANCELLED


async def test_in_porting_endpoints(client: ConnectClient, control: SandboxControl) -> None:
    porting = Porting(details=PortingDetails(account_number="A1", passcode="0000", first_name="Ada"))
    order_id = await _completed_order(
        client,
        control,
        SubscriptionLineItem(
            line_item_id="p",
            product_offering_id="p",
            msisdn="+46705555555",
            porting=porting,
            temp_number=True,
        ),
        key="port",
    )
    created = (await client.get_order(order_id)).created_entities
    assert created is not None
    sub_id = created.subscriptions[0].subscription_id
    sub = await client.get_subscription(sub_id)
    assert sub.status is SubscriptionStatus.ACTIVATED
    assert sub.pending_msisdn is not None
    assert sub.pending_msisdn.msisdn == "+46705555555"
    in_porting = await client.get_in_porting(sub_id)
    assert in_porting.status in (PortingStatus.PENDING, PortingStatus.IN_PROGRESS)
    await client.update_in_porting(
        sub_id, UpdatePortingRequest(details=PortingDetails(passcode="1111")), idempotency_key="fix"
    )
    await control.advance(30)
    assert (await client.get_in_porting(sub_id)).status is PortingStatus.COMPLETED
    assert (await client.get_subscription(sub_id)).msisdn == "+46705555555"


async def test_each_error_class(
    client: ConnectClient, control: SandboxControl, config_for: Callable[..., ConnectConfig]
) -> None:
    with pytest.raises(ProviderNotFound):
        await client.get_order("missing")
    with pytest.raises(ProviderRejected) as rejected:
        await client.lease_numbers(
            LeaseNumbersRequest.model_construct(types=["CELL"], count=99), idempotency_key="too-many"
        )
    assert rejected.value.provider_details[0]["property"] == "count"
    empty = await client.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="empty")
    with pytest.raises(ProviderPreconditionFailed):
        await client.submit_order(empty.order_id, idempotency_key="submit-empty")
    await client.cancel_order(empty.order_id)
    with pytest.raises(ProviderStateConflict) as conflict:
        await client.cancel_order(empty.order_id)
    assert conflict.value.provider_code == "invalid_state"
    with pytest.raises(IdempotencyKeyMismatch):
        await client.create_order(
            CreateOrderRequest(customer={"customerId": "other"}), idempotency_key="empty"
        )

    await control.faults({"match": "GET /orders/*", "kind": "error", "status": 503, "times": 1})
    with pytest.raises(ProviderUnavailable):
        await client.get_order(empty.order_id)

    await control.faults({"match": "POST /orders", "kind": "latency", "latencyMs": 1000, "times": 1})
    keys_before = (await control.stats())["idempotencyKeys"]
    slow = asyncio.ensure_future(
        client.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="slow")
    )

    async def slow_holds_its_key() -> bool:
        assert not slow.done(), "the slow create_order was answered before a second send could overlap it"
        return bool((await control.stats())["idempotencyKeys"] > keys_before)

    # The provider took the key and has not answered (it sits in the latency, inside the key's
    # lock): a second send now overlaps the first.
    await wait_until(
        slow_holds_its_key, what="the slow create_order to take its idempotency key", timeout_s=5
    )
    with pytest.raises(IdempotencyKeyLocked):
        await client.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="slow")
    await slow

    async with ConnectClient(config=config_for(read_timeout_s=0.1, total_timeout_s=0.2)) as impatient:
        await control.faults({"match": "GET /orders/*", "kind": "latency", "latencyMs": 500, "times": 1})
        with pytest.raises(ProviderTimeout):
            await impatient.get_order(empty.order_id)
    await control.faults({"match": "GET /orders/*", "kind": "drop", "times": 1})
    with pytest.raises(ProviderConnectionLost):
        await client.get_order(empty.order_id)
    wrong = dataclasses.replace(config_for(), api_key="wrong")
    async with ConnectClient(config=wrong) as stranger:
        with pytest.raises(ProviderAuthError):
            await stranger.get_order(empty.order_id)
    # Last, because a Retry-After also pauses this client's rate limiter for the whole key.
    await control.faults({"match": "GET /subscriptions", "kind": "rate_limit", "retryAfterS": 3, "times": 1})
    with pytest.raises(ProviderRateLimited) as limited:
        await client.list_subscriptions()
    assert limited.value.retry_after_s == 3


async def test_retry_honours_retry_after(
    client: ConnectClient, control: SandboxControl, rng: random.Random
) -> None:
    await control.faults({"match": "POST /orders", "kind": "rate_limit", "retryAfterS": 2, "times": 2})
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_attempts=4, base_delay_s=0.01, sleep=fake_sleep, rng=rng)
    order = await client.create_order(
        CreateOrderRequest(customer=CUSTOMER), idempotency_key="ra", retry=policy
    )
    assert order.state is OrderState.PENDING
    assert len(slept) == 2
    assert all(s >= 2 for s in slept)
    outcomes = [e["outcome"] for e in await control.ledger(kind="request") if e["path"] == "/orders"]
    assert outcomes == ["fault:rate_limit", "fault:rate_limit", "processed"]


async def test_retry_gives_up_on_permanent_errors(client: ConnectClient) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(ProviderNotFound):
        await client.get_order("nope", retry=RetryPolicy(sleep=fake_sleep))
    assert slept == []


async def test_rate_limiter_and_concurrency_cap_hold_under_a_burst(
    sandbox: RunningSandbox, control: SandboxControl, config_for: Callable[..., ConnectConfig]
) -> None:
    await control.scenario(rateLimit={"perS": 25, "burst": 6})
    await control.faults({"match": "GET /subscriptions", "kind": "latency", "latencyMs": 20})
    config = config_for(rate_limit_per_s=20.0, rate_limit_burst=3, max_concurrency=3)
    async with ConnectClient(config=config) as limited:
        pages = await asyncio.gather(*(limited.list_subscriptions() for _ in range(30)))
    assert len(pages) == 30  # none raised ProviderRateLimited
    stats = await control.stats()
    assert max(stats["maxInFlight"].values()) <= 3
    statuses = [e["status"] for e in await control.ledger(kind="request") if e["path"] == "/subscriptions"]
    assert statuses == [200] * 30
    # The same burst without the client's limits is refused: the sandbox's limit is real.
    await control.faults()
    async with httpx.AsyncClient(
        base_url=sandbox.base_url, headers={"X-API-Key": sandbox.config.api_key}
    ) as raw:
        answers = await asyncio.gather(*(raw.get("/subscriptions") for _ in range(30)))
    assert 429 in {a.status_code for a in answers}


async def test_stored_request_is_replayed_verbatim(client: ConnectClient, control: SandboxControl) -> None:
    prepared = Requests.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="stored")
    first = await client.send(prepared)
    assert first.status == 201
    replay = await client.send(
        Requests.create_order(CreateOrderRequest(customer=CUSTOMER), idempotency_key="stored")
    )
    assert replay.replayed
    assert replay.json() == first.json()
    assert len(await control.ledger(effect="order.created")) == 1
