"""The typed Connect API client: lifecycle plus one method per call the workflows make."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from orchestrator.connect._config import ConnectConfig
from orchestrator.connect._limits import ApiKeyLimiter
from orchestrator.connect._models import (
    ActivateSubscriptionRequest,
    AddAddonRequest,
    AddonPage,
    AddTopupRequest,
    CancelOrderRequest,
    CancelSubscriptionRequest,
    ChangeAddonRequest,
    ChangeLicenseRequest,
    CreateOrderRequest,
    CreateSubscriptionRequest,
    InPorting,
    InPortingUpdated,
    Lease,
    LeaseNumbersRequest,
    License,
    LicensePage,
    LineItem,
    Order,
    OrderLineItem,
    SubmitOrderRequest,
    Subscription,
    SubscriptionAddon,
    SubscriptionPage,
    TopupApplied,
    UpdatePortingRequest,
)
from orchestrator.connect._requests import PreparedRequest, Requests
from orchestrator.connect._response import ProviderResponse
from orchestrator.connect._retry import RetryPolicy, retry_call
from orchestrator.connect._transport import HttpSender, ShardedClient, build_http_client
from orchestrator.errors import OrchestratorError
from orchestrator.lifecycle import AsyncLifecycle

__all__ = ["ConnectClient", "ConnectClientStateError"]

_M = TypeVar("_M", bound=BaseModel)


class ConnectClientStateError(OrchestratorError):
    """The client was used before start, after close, or started twice: a wiring bug."""

    code = "connect_client_state"


class _State(StrEnum):
    NEW = "new"
    STARTED = "started"
    CLOSED = "closed"


class ConnectClient(AsyncLifecycle):
    """Async Connect API client. One instance per API key per process (it owns the key's limits).

    Every call is a single attempt unless `retry=` is given; the engine retries durably itself.
    Mutating calls take the caller's idempotency key, so a retry after a crash can reuse it.
    """

    def __init__(
        self,
        *,
        config: ConnectConfig,
        limiter: ApiKeyLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = config
        self._limiter = limiter or ApiKeyLimiter(
            max_concurrency=config.max_concurrency,
            rate_per_s=config.rate_limit_per_s,
            burst=config.rate_limit_burst,
        )
        self._transport = transport
        self._http: ShardedClient | None = None
        self._sender: HttpSender | None = None
        self._state = _State.NEW

    def __repr__(self) -> str:
        return f"ConnectClient(base_url={self._config.base_url!r}, state={self._state.value})"

    # --- lifecycle ---
    async def start(self) -> None:
        if self._state is not _State.NEW:
            raise ConnectClientStateError(f"cannot start a ConnectClient that is {self._state.value}")
        self._http = build_http_client(self._config, transport=self._transport)
        self._sender = HttpSender(http=self._http, limiter=self._limiter, config=self._config)
        self._state = _State.STARTED

    async def close(self) -> None:
        """Close pooled connections; safe to call more than once."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._http is not None:
            await self._http.aclose()

    stop = close  # for `async with ConnectClient(...)`, which AsyncLifecycle maps onto start()/stop()

    # --- low level ---
    async def send(self, prepared: PreparedRequest, *, timeout_s: float | None = None) -> ProviderResponse:
        """Send a (possibly stored) request verbatim, once. Any HTTP answer comes back classified in
        `.error`; only a missing answer (connect failure, timeout, lost connection) raises."""
        if self._sender is None or self._state is not _State.STARTED:
            raise ConnectClientStateError(f"ConnectClient is {self._state.value}, not started")
        return await self._sender.send(prepared, timeout_s=timeout_s)

    async def call(
        self,
        prepared: PreparedRequest,
        model: type[_M],
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> _M:
        """Send and parse into `model`, raising the classified ProviderError on failure."""

        async def once() -> _M:
            return (await self.send(prepared, timeout_s=timeout_s)).parse(model)

        return await (retry_call(once, policy=retry) if retry else once())

    async def _call_no_body(self, prepared: PreparedRequest, retry: RetryPolicy | None) -> None:
        async def once() -> None:
            (await self.send(prepared)).raise_for_outcome()

        await (retry_call(once, policy=retry) if retry else once())

    # --- orders ---
    async def create_order(
        self, body: CreateOrderRequest, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> Order:
        return await self.call(
            Requests.create_order(body, idempotency_key=idempotency_key), Order, retry=retry
        )

    async def get_order(self, order_id: str, *, retry: RetryPolicy | None = None) -> Order:
        return await self.call(Requests.get_order(order_id), Order, retry=retry)

    async def add_line_item(
        self, order_id: str, line_item: LineItem, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> OrderLineItem:
        prepared = Requests.add_line_item(order_id, line_item, idempotency_key=idempotency_key)
        return await self.call(prepared, OrderLineItem, retry=retry)

    async def update_line_item(
        self, order_id: str, line_item: LineItem, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> OrderLineItem:
        prepared = Requests.update_line_item(order_id, line_item, idempotency_key=idempotency_key)
        return await self.call(prepared, OrderLineItem, retry=retry)

    async def remove_line_item(
        self,
        order_id: str,
        line_item_id: str,
        *,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        prepared = Requests.remove_line_item(order_id, line_item_id, idempotency_key=idempotency_key)
        await self._call_no_body(prepared, retry)

    async def calculate_price(
        self, order_id: str, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        prepared = Requests.calculate_price(order_id, idempotency_key=idempotency_key)
        body = await self.call(prepared, _Pricing, retry=retry)
        return body.pricing

    async def submit_order(
        self,
        order_id: str,
        body: SubmitOrderRequest | None = None,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> Order:
        prepared = Requests.submit_order(order_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, Order, retry=retry)

    async def cancel_order(
        self,
        order_id: str,
        body: CancelOrderRequest | None = None,
        *,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Order:
        prepared = Requests.cancel_order(order_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, Order, retry=retry)

    # --- inventory ---
    async def lease_numbers(
        self, body: LeaseNumbersRequest, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> Lease:
        return await self.call(
            Requests.lease_numbers(body, idempotency_key=idempotency_key), Lease, retry=retry
        )

    # --- subscriptions ---
    async def create_subscription(
        self, body: CreateSubscriptionRequest, *, idempotency_key: str, retry: RetryPolicy | None = None
    ) -> Subscription:
        prepared = Requests.create_subscription(body, idempotency_key=idempotency_key)
        return await self.call(prepared, Subscription, retry=retry)

    async def get_subscription(
        self, subscription_id: str, *, retry: RetryPolicy | None = None
    ) -> Subscription:
        """`subscription_id` is the provider UUID or `rid_<referenceId>`."""
        return await self.call(Requests.get_subscription(subscription_id), Subscription, retry=retry)

    async def list_subscriptions(
        self, *, limit: int | None = None, cursor: str | None = None, retry: RetryPolicy | None = None
    ) -> SubscriptionPage:
        prepared = Requests.list_subscriptions(limit=limit, cursor=cursor)
        return await self.call(prepared, SubscriptionPage, retry=retry)

    async def activate_subscription(
        self,
        subscription_id: str,
        body: ActivateSubscriptionRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> Subscription:
        prepared = Requests.activate_subscription(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, Subscription, retry=retry)

    async def cancel_subscription(
        self,
        subscription_id: str,
        body: CancelSubscriptionRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> Subscription:
        prepared = Requests.cancel_subscription(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, Subscription, retry=retry)

    async def get_in_porting(self, subscription_id: str, *, retry: RetryPolicy | None = None) -> InPorting:
        return await self.call(Requests.get_in_porting(subscription_id), InPorting, retry=retry)

    async def update_in_porting(
        self,
        subscription_id: str,
        body: UpdatePortingRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> InPortingUpdated:
        prepared = Requests.update_in_porting(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, InPortingUpdated, retry=retry)

    # --- add-ons, top-ups, licenses ---
    async def list_addons(self, subscription_id: str, *, retry: RetryPolicy | None = None) -> AddonPage:
        return await self.call(Requests.list_addons(subscription_id), AddonPage, retry=retry)

    async def add_addon(
        self,
        subscription_id: str,
        body: AddAddonRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> SubscriptionAddon:
        prepared = Requests.add_addon(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, SubscriptionAddon, retry=retry)

    async def change_addon(
        self,
        subscription_id: str,
        body: ChangeAddonRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> Subscription:
        prepared = Requests.change_addon(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, Subscription, retry=retry)

    async def add_topup(
        self,
        subscription_id: str,
        body: AddTopupRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> TopupApplied:
        prepared = Requests.add_topup(subscription_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, TopupApplied, retry=retry)

    async def list_licenses(
        self, *, limit: int | None = None, offset: int | None = None, retry: RetryPolicy | None = None
    ) -> LicensePage:
        return await self.call(Requests.list_licenses(limit=limit, offset=offset), LicensePage, retry=retry)

    async def change_license(
        self,
        license_id: str,
        body: ChangeLicenseRequest,
        *,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> License:
        prepared = Requests.change_license(license_id, body, idempotency_key=idempotency_key)
        return await self.call(prepared, License, retry=retry)


class _Pricing(BaseModel):
    pricing: dict[str, Any]
