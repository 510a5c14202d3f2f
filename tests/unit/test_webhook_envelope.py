"""Provider webhook envelopes: tolerant of what we do not know, with a stable partition key.

`ProviderWebhookEvent` is the one envelope model: the webhook ingress validates and keys each
delivery with it, and the engine reads `connect.events.v1` with it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.events import ProviderWebhookEvent


def webhook(event_type: str, data: dict[str, Any], **extra: Any) -> ProviderWebhookEvent:
    return ProviderWebhookEvent.model_validate(
        {
            "eventId": "9b0f6c1e-0000-4000-8000-000000000001",
            "type": event_type,
            "occurredAt": "2026-11-25T19:00:00Z",
            "data": data,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("event_type", "data", "key"),
    [
        ("subscription.updated", {"subscriptionId": "sub-1", "status": "ACTIVATED"}, b"sub-1"),
        ("subscription.portIn.completed", {"subscriptionId": "sub-2", "orderId": "o-1"}, b"sub-2"),
        ("order.updated", {"orderId": "o-1", "state": "COMPLETED"}, b"o-1"),
        ("order.lineItemStatusChanged", {"order": {"orderId": "o-2"}, "lineItemId": "li"}, b"o-2"),
        # Neither an order nor a subscription: the event id, stable across redeliveries.
        ("customer.created", {"customerId": "c-1"}, b"9b0f6c1e-0000-4000-8000-000000000001"),
        ("something.new", {"whatever": 1}, b"9b0f6c1e-0000-4000-8000-000000000001"),
    ],
)
def test_kafka_key_is_subscription_then_order_then_event_id(
    event_type: str, data: dict[str, Any], key: bytes
) -> None:
    assert webhook(event_type, data).kafka_key() == key


def test_unknown_types_and_extra_fields_are_kept() -> None:
    event = webhook("brand.new.event", {"a": 1}, deliveryAttempt=3)

    assert event.type == "brand.new.event"
    assert event.model_dump(by_alias=True)["deliveryAttempt"] == 3
    assert event.occurred_at.isoformat() == "2026-11-25T19:00:00+00:00"


def test_envelope_fields_are_required() -> None:
    with pytest.raises(ValidationError, match="eventId"):
        ProviderWebhookEvent.model_validate({"type": "x", "occurredAt": "2026-11-25T19:00:00Z", "data": {}})


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"data": None}, "data"),
        ({"eventId": "e" * 256}, "eventId"),
        ({"type": ""}, "type"),
        ({"occurredAt": 1764097200}, "occurredAt"),
        ({"occurredAt": "2026-11-25T19:00:00"}, "occurredAt"),
    ],
)
def test_what_the_ingress_refuses_the_engine_never_reads(broken: dict[str, Any], field: str) -> None:
    envelope = {"eventId": "e-1", "type": "x", "occurredAt": "2026-11-25T19:00:00Z", "data": {}, **broken}
    if broken.get("data", {}) is None:
        del envelope["data"]
    with pytest.raises(ValidationError, match=field):
        ProviderWebhookEvent.model_validate(envelope)


def test_the_ingress_keys_records_with_this_model() -> None:
    from orchestrator.webhooks import _app  # noqa: PLC0415 - the live code path, checked directly

    assert _app.ProviderWebhookEvent is ProviderWebhookEvent
