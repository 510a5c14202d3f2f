"""The Connect API endpoints. Handlers are `async def` on purpose: they run on the event loop (no
thread hop), which keeps the world single-threaded and lets effects see the request's
idempotency key through a context variable."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from starlette.responses import Response

from orchestrator.sandbox._errors import bad_request
from orchestrator.sandbox._world import World


def ok(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc).encode(), status_code=status, media_type="application/json")


async def body_of(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request("body is not valid JSON", code="invalid_json") from exc


def _page_args(request: Request, *, default_limit: int = 100) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", default_limit))
        offset = int(request.query_params.get("offset", request.query_params.get("cursor", 0)))
    except ValueError as exc:
        raise bad_request("limit and offset must be integers", code="invalid_type") from exc
    if not 1 <= limit <= 1000 or offset < 0:
        raise bad_request("limit must be 1..1000 and offset >= 0", code="out_of_range")
    return limit, offset


def api_router(world_of: Any) -> APIRouter:  # noqa: C901 - one flat closure per route
    """`world_of()` returns the current World (reset replaces it)."""
    router = APIRouter()

    def world() -> World:
        result: World = world_of()
        return result

    @router.post("/orders")
    async def create_order(request: Request) -> Response:
        return ok(world().create_order(await body_of(request)), 201)

    @router.get("/orders/{order_id}")
    async def get_order(order_id: str) -> Response:
        return ok(world().order(order_id))

    @router.post("/orders/{order_id}/line-items")
    async def add_line_item(order_id: str, request: Request) -> Response:
        return ok(world().add_line_item(order_id, await body_of(request)), 201)

    @router.put("/orders/{order_id}/line-items/{line_item_id}")
    async def update_line_item(order_id: str, line_item_id: str, request: Request) -> Response:
        return ok(world().update_line_item(order_id, unquote(line_item_id), await body_of(request)))

    @router.delete("/orders/{order_id}/line-items/{line_item_id}")
    async def remove_line_item(order_id: str, line_item_id: str) -> Response:
        world().remove_line_item(order_id, unquote(line_item_id))
        return Response(status_code=204)

    @router.post("/orders/{order_id}/calculate-price")
    async def calculate_price(order_id: str) -> Response:
        return ok(world().calculate_price(order_id))

    @router.post("/orders/{order_id}/submit")
    async def submit_order(order_id: str, request: Request) -> Response:
        return ok(world().submit_order(order_id, await body_of(request)))

    @router.post("/orders/{order_id}/cancel")
    async def cancel_order(order_id: str, request: Request) -> Response:
        return ok(world().cancel_order(order_id, await body_of(request)))

    @router.post("/inventory/lease-numbers")
    async def lease_numbers(request: Request) -> Response:
        return ok(world().lease_numbers(await body_of(request)), 201)

    @router.post("/subscriptions")
    async def create_subscription(request: Request) -> Response:
        return ok(world().create_subscription(await body_of(request)), 201)

    @router.get("/subscriptions")
    async def list_subscriptions(request: Request) -> Response:
        limit, offset = _page_args(request)
        return ok(world().list_subscriptions(limit=limit, offset=offset))

    @router.get("/subscriptions/{subscription_id}")
    async def get_subscription(subscription_id: str) -> Response:
        return ok(world().subscription(subscription_id))

    @router.post("/subscriptions/{subscription_id}/activate")
    async def activate_subscription(subscription_id: str, request: Request) -> Response:
        return ok(world().activate_subscription(subscription_id, await body_of(request)))

    @router.post("/subscriptions/{subscription_id}/cancel")
    async def cancel_subscription(subscription_id: str, request: Request) -> Response:
        return ok(world().cancel_subscription(subscription_id, await body_of(request)))

    @router.get("/subscriptions/{subscription_id}/in-porting")
    async def get_in_porting(subscription_id: str) -> Response:
        return ok(world().get_in_porting(subscription_id))

    @router.post("/subscriptions/{subscription_id}/in-porting")
    async def update_in_porting(subscription_id: str, request: Request) -> Response:
        return ok(world().update_in_porting(subscription_id, await body_of(request)))

    @router.get("/subscriptions/{subscription_id}/addons")
    async def list_addons(subscription_id: str) -> Response:
        sub = world().subscription(subscription_id)
        return ok({"items": world().addons.get(sub["subscriptionId"], [])})

    @router.post("/subscriptions/{subscription_id}/addons")
    async def add_addon(subscription_id: str, request: Request) -> Response:
        return ok(world().add_addon(subscription_id, await body_of(request)), 201)

    @router.put("/subscriptions/{subscription_id}/addons/product-offering-change")
    async def change_addon(subscription_id: str, request: Request) -> Response:
        return ok(world().change_addon(subscription_id, await body_of(request)))

    @router.post("/subscriptions/{subscription_id}/topups")
    async def add_topup(subscription_id: str, request: Request) -> Response:
        return ok(world().add_topup(subscription_id, await body_of(request)), 201)

    @router.get("/licenses")
    async def list_licenses(request: Request) -> Response:
        limit, offset = _page_args(request)
        return ok(world().list_licenses(limit=limit, offset=offset))

    @router.put("/licenses/{license_id}/product-offering-change")
    async def change_license(license_id: str, request: Request) -> Response:
        return ok(world().change_license(license_id, await body_of(request)))

    return router
