"""Line item models: the subscription path, secret handling, and the payload the engine stores and sends."""

from __future__ import annotations

import json
from typing import Any

import pytest
from crm_samples import (
    ACCOUNT_NUMBER,
    PASSCODE,
    SECRETS,
    assigned_item,
    leased_item,
    ported_item,
    structured,
    structured_record,
    submitted_data,
)

from orchestrator.events import (
    REDACTED,
    SubscriptionItem,
    SubscriptionPath,
    decode_crm_event,
    line_item_payload,
    parse_line_item,
    redact,
)


def subscription(data: dict[str, Any]) -> SubscriptionItem:
    item = parse_line_item(data)
    assert isinstance(item, SubscriptionItem)
    return item


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (assigned_item(), SubscriptionPath.ASSIGNED),
        (leased_item(), SubscriptionPath.LEASED),
        (ported_item(), SubscriptionPath.PORT_IN),
        (ported_item(temp=True), SubscriptionPath.PORT_IN_WITH_TEMP),
        ({**ported_item(), "tempNumber": False}, SubscriptionPath.PORT_IN),
    ],
)
@pytest.mark.parametrize("date", [None, "2026-12-24"])
def test_path_and_scheduled_flag(data: dict[str, Any], path: SubscriptionPath, date: str | None) -> None:
    item = subscription({**data, "scheduleActivationAt": date} if date else data)

    assert item.path is path
    assert item.scheduled is (date is not None)


def test_repr_str_and_plain_dump_never_show_porting_secrets() -> None:
    item = subscription(ported_item())
    texts = [
        repr(item),
        str(item),
        item.model_dump_json(),
        json.dumps(line_item_payload(item, reveal_secrets=False)),
    ]

    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_revealed_payload_gives_real_values_for_the_provider_and_the_workflow_row() -> None:
    item = subscription(ported_item())

    payload = line_item_payload(item, reveal_secrets=True)

    details = payload["porting"]["details"]
    assert details["accountNumber"] == ACCOUNT_NUMBER
    assert details["passcode"] == PASSCODE
    assert details["nationalId"] == SECRETS[2]
    assert parse_line_item(payload) == item
    assert item.porting is not None
    assert item.porting.details.secret_values() == set(SECRETS)


def test_payload_is_camel_case_and_leaves_unset_fields_out() -> None:
    payload = line_item_payload(subscription(leased_item()), reveal_secrets=False)

    assert payload == {
        "type": "SUBSCRIPTION",
        "lineItemId": "li-leased",
        "productOfferingId": "mobile-plan-basic",
        "msisdn": "+15551234567",
        "leaseToken": "lease_abc123def456",
        "leaseExpiresAt": "2026-11-25T21:00:00Z",
    }


def test_redact_masks_porting_and_credentials_at_any_depth() -> None:
    event = decode_crm_event(
        **structured_record(structured("crm.order.submitted", submitted_data(ported_item())))
    )
    plain = {
        "headers": {"X-Api-Key": "k-123", "Authorization": "Bearer t"},
        "items": [{"passcode": "p"}],
        "n": 1,
    }

    redacted_event = redact(event)
    redacted_plain = redact(plain)

    assert redacted_event["data"]["lineItems"][0]["porting"] == REDACTED
    assert redacted_event["data"]["lineItems"][0]["msisdn"] == "+15557654321"
    assert not any(secret in json.dumps(redacted_event) for secret in SECRETS)
    assert redacted_plain == {
        "headers": {"X-Api-Key": REDACTED, "Authorization": REDACTED},
        "items": [{"passcode": REDACTED}],
        "n": 1,
    }


def test_models_are_immutable() -> None:
    item = subscription(assigned_item())

    with pytest.raises(ValueError, match="frozen"):
        item.msisdn = "+15550000000"  # type: ignore[misc]
    assert item.msisdn is None
