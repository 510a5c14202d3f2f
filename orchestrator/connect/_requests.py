"""Prepared requests: the exact (method, path, body bytes, idempotency key) of one provider call.

The engine builds one of these per step, stores it with the step's intent, and sends the stored copy
on every attempt. Nothing here reads a clock or a random source, so building the same logical
request twice gives equal values.

Bodies are either our pydantic models (dumped by alias, unset `None`s left out) or plain mappings
(sent as given, `None`s included): the engine builds its bodies as mappings from the CRM's line
items, and the bytes of a stored intent must be reproducible from the same inputs forever, so a
mapping is never round-tripped through a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import quote, urlencode

from orchestrator.connect._errors import ProviderError
from orchestrator.connect._json import canonical_json
from orchestrator.connect._keys import MAX_IDEMPOTENCY_KEY_LENGTH, bounded_key
from orchestrator.connect._models import (
    ActivateSubscriptionRequest,
    AddAddonRequest,
    AddTopupRequest,
    CancelOrderRequest,
    CancelSubscriptionRequest,
    ChangeAddonRequest,
    ChangeLicenseRequest,
    CreateOrderRequest,
    CreateSubscriptionRequest,
    LeaseNumbersRequest,
    LineItem,
    SubmitOrderRequest,
    UpdatePortingRequest,
)

__all__ = ["MAX_IDEMPOTENCY_KEY_LENGTH", "InvalidRequestError", "PreparedRequest", "Requests"]

_Body = Mapping[str, Any]
"""A request body built by the caller as plain JSON values (see the module docstring)."""


class InvalidRequestError(ProviderError):
    """We were about to send something the API forbids (e.g. a key over 256 characters): a bug."""

    code = "connect_request_invalid"


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedRequest:
    """One call, ready to send and to store. `body` is the canonical JSON, or None for no body."""

    method: str
    path: str
    body: bytes | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        key = self.idempotency_key
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH):
            raise InvalidRequestError(
                f"idempotency key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}",
                method=self.method,
                path=self.path,
            )
        if not self.path.startswith("/"):
            raise InvalidRequestError(f"path must start with '/': {self.path!r}", method=self.method)

    def to_dict(self) -> dict[str, Any]:
        """For storage as JSON; the body is kept as text (it is UTF-8 JSON by construction)."""
        return {
            "method": self.method,
            "path": self.path,
            "body": None if self.body is None else self.body.decode("utf-8"),
            "idempotency_key": self.idempotency_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedRequest:
        body = data.get("body")
        return cls(
            method=str(data["method"]),
            path=str(data["path"]),
            body=None if body is None else str(body).encode("utf-8"),
            idempotency_key=data.get("idempotency_key"),
        )


def _seg(value: str) -> str:
    """One path segment; ids are caller data and must not be able to add path levels."""
    return quote(value, safe="")


def _key(key: str | None) -> str | None:
    return None if key is None else bounded_key(key)


def _post(path: str, body: Any, key: str | None, method: str = "POST") -> PreparedRequest:
    return PreparedRequest(method=method, path=path, body=canonical_json(body), idempotency_key=_key(key))


def _line_item_path(order_id: str, line_item_id: str) -> str:
    return f"/orders/{_seg(order_id)}/line-items/{_seg(line_item_id)}"


class Requests:
    """Builders for every call the client and the engine make. Pure functions grouped for
    discoverability.

    Every id is escaped into exactly one path segment, and every idempotency key goes through
    `bounded_key` (unchanged up to 256 characters), so neither can make a request the provider
    refuses or misroutes.
    """

    # --- orders ---
    @staticmethod
    def create_order(body: CreateOrderRequest | _Body, *, idempotency_key: str) -> PreparedRequest:
        return _post("/orders", body, idempotency_key)

    @staticmethod
    def get_order(order_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/orders/{_seg(order_id)}")

    @staticmethod
    def add_line_item(order_id: str, line_item: LineItem | _Body, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/line-items", line_item, idempotency_key)

    @overload
    @staticmethod
    def update_line_item(
        order_id: str, line_item: LineItem, *, idempotency_key: str, line_item_id: str | None = None
    ) -> PreparedRequest: ...

    @overload
    @staticmethod
    def update_line_item(
        order_id: str, line_item: _Body, *, idempotency_key: str, line_item_id: str
    ) -> PreparedRequest: ...

    @staticmethod
    def update_line_item(
        order_id: str, line_item: LineItem | _Body, *, idempotency_key: str, line_item_id: str | None = None
    ) -> PreparedRequest:
        """PUT `{"lineItem": line_item}`. The path's id is `line_item_id`, else the model's own: a
        mapping's `lineItemId` is the CRM's data, and the path must not depend on what it holds."""
        if line_item_id is None:
            if not isinstance(line_item, LineItem):
                raise TypeError("update_line_item needs line_item_id= when the line item is a mapping")
            line_item_id = line_item.line_item_id
        path = _line_item_path(order_id, line_item_id)
        return _post(path, {"lineItem": line_item}, idempotency_key, method="PUT")

    @staticmethod
    def remove_line_item(
        order_id: str, line_item_id: str, *, idempotency_key: str | None = None
    ) -> PreparedRequest:
        # The docs list no idempotency header for DELETE; the engine sends one anyway, because its
        # stored intents are found by key.
        return PreparedRequest(
            method="DELETE",
            path=_line_item_path(order_id, line_item_id),
            idempotency_key=_key(idempotency_key),
        )

    @staticmethod
    def calculate_price(order_id: str, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/calculate-price", {}, idempotency_key)

    @staticmethod
    def submit_order(
        order_id: str, body: SubmitOrderRequest | _Body | None = None, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/submit", body or SubmitOrderRequest(), idempotency_key)

    @staticmethod
    def cancel_order(
        order_id: str, body: CancelOrderRequest | _Body | None = None, *, idempotency_key: str | None = None
    ) -> PreparedRequest:
        # The docs list no idempotency header here; we send one if given (a cancel is safe to repeat).
        return _post(f"/orders/{_seg(order_id)}/cancel", body or CancelOrderRequest(), idempotency_key)

    # --- inventory ---
    @staticmethod
    def lease_numbers(body: LeaseNumbersRequest | _Body, *, idempotency_key: str) -> PreparedRequest:
        return _post("/inventory/lease-numbers", body, idempotency_key)

    # --- subscriptions ---
    @staticmethod
    def create_subscription(
        body: CreateSubscriptionRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post("/subscriptions", body, idempotency_key)

    @staticmethod
    def get_subscription(subscription_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/subscriptions/{_seg(subscription_id)}")

    @staticmethod
    def list_subscriptions(*, limit: int | None = None, cursor: str | None = None) -> PreparedRequest:
        query = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        suffix = f"?{urlencode(sorted(query.items()))}" if query else ""
        return PreparedRequest(method="GET", path=f"/subscriptions{suffix}")

    @staticmethod
    def activate_subscription(
        subscription_id: str, body: ActivateSubscriptionRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/activate", body, idempotency_key)

    @staticmethod
    def cancel_subscription(
        subscription_id: str, body: CancelSubscriptionRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/cancel", body, idempotency_key)

    @staticmethod
    def get_in_porting(subscription_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/subscriptions/{_seg(subscription_id)}/in-porting")

    @staticmethod
    def update_in_porting(
        subscription_id: str, body: UpdatePortingRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/in-porting", body, idempotency_key)

    # --- add-ons, top-ups, licenses ---
    @staticmethod
    def list_addons(subscription_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/subscriptions/{_seg(subscription_id)}/addons")

    @staticmethod
    def add_addon(
        subscription_id: str, body: AddAddonRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/addons", body, idempotency_key)

    @staticmethod
    def change_addon(
        subscription_id: str, body: ChangeAddonRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        path = f"/subscriptions/{_seg(subscription_id)}/addons/product-offering-change"
        return _post(path, body, idempotency_key, method="PUT")

    @staticmethod
    def add_topup(
        subscription_id: str, body: AddTopupRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/topups", body, idempotency_key)

    @staticmethod
    def list_licenses(*, limit: int | None = None, offset: int | None = None) -> PreparedRequest:
        query = {k: v for k, v in (("limit", limit), ("offset", offset)) if v is not None}
        suffix = f"?{urlencode(sorted(query.items()))}" if query else ""
        return PreparedRequest(method="GET", path=f"/licenses{suffix}")

    @staticmethod
    def change_license(
        license_id: str, body: ChangeLicenseRequest | _Body, *, idempotency_key: str
    ) -> PreparedRequest:
        path = f"/licenses/{_seg(license_id)}/product-offering-change"
        return _post(path, body, idempotency_key, method="PUT")
