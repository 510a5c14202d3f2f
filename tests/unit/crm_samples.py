"""Builders for CRM events used by the unit tests: valid by default, easy to break one field at a time."""

from __future__ import annotations

import copy
import json
from typing import Any

ORDER_ID = "order-123"
ACCOUNT_NUMBER = "ACCT-7319-SECRET"
PASSCODE = "PASS-4482-SECRET"
NATIONAL_ID = "SE-19800101-SECRET"
SECRETS = (ACCOUNT_NUMBER, PASSCODE, NATIONAL_ID)


def assigned_item(line_item_id: str = "li-assigned") -> dict[str, Any]:
    return {"type": "SUBSCRIPTION", "lineItemId": line_item_id, "productOfferingId": "mobile-plan-basic"}


def leased_item(line_item_id: str = "li-leased") -> dict[str, Any]:
    return {
        **assigned_item(line_item_id),
        "msisdn": "+15551234567",
        "leaseToken": "lease_abc123def456",
        "leaseExpiresAt": "2026-11-25T21:00:00Z",
    }


def ported_item(line_item_id: str = "li-ported", *, temp: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        **assigned_item(line_item_id),
        "msisdn": "+15557654321",
        "porting": {
            "details": {
                "accountNumber": ACCOUNT_NUMBER,
                "passcode": PASSCODE,
                "firstName": "Ada",
                "lastName": "Lovelace",
                "address": {"street1": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
                "nationalId": NATIONAL_ID,
            }
        },
        "subscriber": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "sim": {"esim": True},
    }
    if temp:
        item["tempNumber"] = True
    return item


def submitted_data(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "orderId": ORDER_ID,
        "customer": {"customerId": "cust-1"},
        "lineItems": list(items) or [assigned_item()],
        "metadata": {"channel": "web"},
    }


def updated_data(item: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"orderId": ORDER_ID, "lineItem": item or ported_item()}


def cancelled_data() -> dict[str, Any]:
    return {"orderId": ORDER_ID, "reason": "NO_NEED", "lineItemIds": ["li-assigned"]}


def structured(event_type: str, data: Any, **attributes: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/crm/orders",
        "type": event_type,
        "subject": ORDER_ID,
        "time": "2026-11-25T19:00:00Z",
        "datacontenttype": "application/json",
        "data": copy.deepcopy(data),
        **attributes,
    }


STRUCTURED_HEADERS = [("content-type", b"application/cloudevents+json")]


def structured_record(event: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for decode_crm_event, structured mode."""
    return {
        "key": ORDER_ID.encode(),
        "value": json.dumps(event).encode(),
        "headers": list(STRUCTURED_HEADERS),
    }


def binary_record(event_type: str, data: Any, **overrides: str) -> dict[str, Any]:
    """Keyword arguments for decode_crm_event, binary mode."""
    attributes = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/crm/orders",
        "type": event_type,
        "time": "2026-11-25T19:00:00Z",
        "subject": ORDER_ID,
        **overrides,
    }
    headers = [("content-type", b"application/json")]
    headers += [(f"ce_{name}", value.encode()) for name, value in attributes.items()]
    return {"key": ORDER_ID.encode(), "value": json.dumps(data).encode(), "headers": headers}
