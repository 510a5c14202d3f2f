"""Prepared requests: the exact (method, path, body bytes, idempotency key) of one provider call.

The engine builds one of these per step, stores it with the step's intent, and sends the stored copy
on every attempt. Nothing here reads a clock or a random source, so building the same logical
request twice gives equal values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from orchestrator.connect._errors import ProviderError
from orchestrator.connect._json import canonical_json
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

MAX_IDEMPOTENCY_KEY_LENGTH = 256


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


def _post(path: str, body: Any, key: str | None, method: str = "POST") -> PreparedRequest:
    return PreparedRequest(method=method, path=path, body=canonical_json(body), idempotency_key=key)


class Requests:
    """Builders for every call the client makes. Pure functions grouped for discoverability."""

    # --- orders ---
    @staticmethod
    def create_order(body: CreateOrderRequest, *, idempotency_key: str) -> PreparedRequest:
        return _post("/orders", body, idempotency_key)

    @staticmethod
    def get_order(order_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/orders/{_seg(order_id)}")

    @staticmethod
    def add_line_item(order_id: str, line_item: LineItem, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/line-items", line_item, idempotency_key)

    @staticmethod
    def update_line_item(order_id: str, line_item: LineItem, *, idempotency_key: str) -> PreparedRequest:
        path = f"/orders/{_seg(order_id)}/line-items/{_seg(line_item.line_item_id)}"
        return _post(path, {"lineItem": line_item}, idempotency_key, method="PUT")

    @staticmethod
    def remove_line_item(order_id: str, line_item_id: str) -> PreparedRequest:
        path = f"/orders/{_seg(order_id)}/line-items/{_seg(line_item_id)}"
        return PreparedRequest(method="DELETE", path=path)

    @staticmethod
    def calculate_price(order_id: str, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/calculate-price", {}, idempotency_key)

    @staticmethod
    def submit_order(
        order_id: str, body: SubmitOrderRequest | None = None, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/orders/{_seg(order_id)}/submit", body or SubmitOrderRequest(), idempotency_key)

    @staticmethod
    def cancel_order(
        order_id: str, body: CancelOrderRequest | None = None, *, idempotency_key: str | None = None
    ) -> PreparedRequest:
        # The docs list no idempotency header here; we send one if given (a cancel is safe to repeat).
        return _post(f"/orders/{_seg(order_id)}/cancel", body or CancelOrderRequest(), idempotency_key)

    # --- inventory ---
    @staticmethod
    def lease_numbers(body: LeaseNumbersRequest, *, idempotency_key: str) -> PreparedRequest:
        return _post("/inventory/lease-numbers", body, idempotency_key)

    # --- subscriptions ---
    @staticmethod
    def create_subscription(body: CreateSubscriptionRequest, *, idempotency_key: str) -> PreparedRequest:
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
        subscription_id: str, body: ActivateSubscriptionRequest, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/activate", body, idempotency_key)

    @staticmethod
    def cancel_subscription(
        subscription_id: str, body: CancelSubscriptionRequest, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/cancel", body, idempotency_key)

    @staticmethod
    def get_in_porting(subscription_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/subscriptions/{_seg(subscription_id)}/in-porting")

    @staticmethod
    def update_in_porting(
        subscription_id: str, body: UpdatePortingRequest, *, idempotency_key: str
    ) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/in-porting", body, idempotency_key)

    # --- add-ons, top-ups, licenses ---
    @staticmethod
    def list_addons(subscription_id: str) -> PreparedRequest:
        return PreparedRequest(method="GET", path=f"/subscriptions/{_seg(subscription_id)}/addons")

    @staticmethod
    def add_addon(subscription_id: str, body: AddAddonRequest, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/addons", body, idempotency_key)

    @staticmethod
    def change_addon(
        subscription_id: str, body: ChangeAddonRequest, *, idempotency_key: str
    ) -> PreparedRequest:
        path = f"/subscriptions/{_seg(subscription_id)}/addons/product-offering-change"
        return _post(path, body, idempotency_key, method="PUT")

    @staticmethod
    def add_topup(subscription_id: str, body: AddTopupRequest, *, idempotency_key: str) -> PreparedRequest:
        return _post(f"/subscriptions/{_seg(subscription_id)}/topups", body, idempotency_key)

    @staticmethod
    def list_licenses(*, limit: int | None = None, offset: int | None = None) -> PreparedRequest:
        query = {k: v for k, v in (("limit", limit), ("offset", offset)) if v is not None}
        suffix = f"?{urlencode(sorted(query.items()))}" if query else ""
        return PreparedRequest(method="GET", path=f"/licenses{suffix}")

    @staticmethod
    def change_license(
        license_id: str, body: ChangeLicenseRequest, *, idempotency_key: str
    ) -> PreparedRequest:
        path = f"/licenses/{_seg(license_id)}/product-offering-change"
        return _post(path, body, idempotency_key, method="PUT")
