"""decode_crm_event: both CloudEvents bindings in; a CrmEvent, or an InvalidEventError with a DLQ reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from crm_samples import (
    ORDER_ID,
    SECRETS,
    STRUCTURED_HEADERS,
    assigned_item,
    binary_record,
    cancelled_data,
    leased_item,
    ported_item,
    structured,
    structured_record,
    submitted_data,
    updated_data,
)

from orchestrator.errors import OrchestratorError
from orchestrator.events import (
    CancellationReason,
    DedupKey,
    DlqReason,
    ExistingCustomer,
    InvalidEventError,
    LineItemUpdatedEvent,
    NewCustomer,
    OrderCancelledEvent,
    OrderSubmittedEvent,
    SubscriptionItem,
    TopUpItem,
    decode_crm_event,
)

SUBMITTED = "crm.order.submitted"
UPDATED = "crm.order.line_item.updated"
CANCELLED = "crm.order.cancelled"


def refused(**record: Any) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as caught:
        decode_crm_event(**record)
    return caught.value


# --- valid events ---------------------------------------------------------------------------------


def test_structured_order_submitted_decodes_to_typed_models() -> None:
    data = submitted_data(assigned_item(), leased_item(), ported_item(temp=True))
    event = decode_crm_event(**structured_record(structured(SUBMITTED, data)))

    assert isinstance(event, OrderSubmittedEvent)
    assert event.order_id == ORDER_ID
    assert event.dedup_key == DedupKey(source="/crm/orders", id="evt-1")
    assert isinstance(event.data.customer, ExistingCustomer)
    assert [item.line_item_id for item in event.data.line_items] == ["li-assigned", "li-leased", "li-ported"]
    assert all(isinstance(item, SubscriptionItem) for item in event.data.line_items)


def test_binary_mode_gives_the_same_event_as_structured_mode() -> None:
    data = submitted_data(ported_item())
    from_structured = decode_crm_event(**structured_record(structured(SUBMITTED, data)))
    from_binary = decode_crm_event(**binary_record(SUBMITTED, data))

    assert from_binary == from_structured


def test_line_item_updated_and_cancelled_decode() -> None:
    updated = decode_crm_event(**binary_record(UPDATED, updated_data()))
    cancelled = decode_crm_event(**structured_record(structured(CANCELLED, cancelled_data())))

    assert isinstance(updated, LineItemUpdatedEvent)
    assert updated.data.line_item.line_item_id == "li-ported"
    assert isinstance(cancelled, OrderCancelledEvent)
    assert cancelled.data.reason is CancellationReason.NO_NEED
    assert cancelled.data.line_item_ids == ["li-assigned"]


def test_new_customer_and_other_line_item_types_decode() -> None:
    data = submitted_data(
        assigned_item("sub-1"),
        {
            "type": "TOP_UP",
            "lineItemId": "t-1",
            "productOfferingId": "topup-5gb",
            "subscriptionLineItemId": "sub-1",
        },
        {"type": "LICENSE", "lineItemId": "l-1", "productOfferingId": "office"},
        {"type": "ADD_ON", "lineItemId": "a-1", "productOfferingId": "roam", "subscriptionId": "sub-9"},
        {"type": "EXTERNAL_PRODUCT", "lineItemId": "e-1", "externalProductId": "phone-x", "quantity": 2},
        {
            "type": "EXTERNAL_ITEM",
            "lineItemId": "e-2",
            "description": "case",
            "amount": "9.90",
            "currency": "USD",
        },
        {"type": "SUBSCRIPTION_CHANGE", "lineItemId": "c-1", "subscriptionId": "s", "productOfferingId": "p"},
        {"type": "LICENSE_CHANGE", "lineItemId": "c-2", "licenseId": "lic", "productOfferingId": "p"},
        {
            "type": "ADD_ON_CHANGE",
            "lineItemId": "c-3",
            "subscriptionId": "s",
            "subscriptionAddonId": "sa",
            "productOfferingId": "p",
            "scheduledAt": "2026-12-01",
        },
    )
    data["customer"] = {"new": {"customerType": "CONSUMER", "name": "Ada", "email": "ada@example.com"}}

    event = decode_crm_event(**structured_record(structured(SUBMITTED, data)))

    assert isinstance(event, OrderSubmittedEvent)
    assert isinstance(event.data.customer, NewCustomer)
    assert [item.type for item in event.data.line_items] == [
        "SUBSCRIPTION",
        "TOP_UP",
        "LICENSE",
        "ADD_ON",
        "EXTERNAL_PRODUCT",
        "EXTERNAL_ITEM",
        "SUBSCRIPTION_CHANGE",
        "LICENSE_CHANGE",
        "ADD_ON_CHANGE",
    ]
    assert isinstance(event.data.line_items[1], TopUpItem)


def test_missing_key_is_accepted_and_content_type_parameters_are_ignored() -> None:
    record = structured_record(structured(SUBMITTED, submitted_data()))
    record["key"] = None
    record["headers"] = [("Content-Type", b"application/cloudevents+json; charset=utf-8")]

    assert decode_crm_event(**record).order_id == ORDER_ID


def test_extension_attributes_and_foreign_headers_are_tolerated() -> None:
    record = structured_record(structured(SUBMITTED, submitted_data(), traceparent="00-abc-def-01"))
    record["headers"].append(("x-trace", b"\xff\xfe not utf-8 but not ours"))

    assert decode_crm_event(**record).id == "evt-1"


def test_timestamps_are_normalised_to_utc() -> None:
    event = decode_crm_event(
        **structured_record(structured(SUBMITTED, submitted_data(), time="2026-11-25T21:00:00+02:00"))
    )

    assert event.time is not None
    assert event.time.isoformat() == "2026-11-25T19:00:00+00:00"


# --- every DLQ reason -----------------------------------------------------------------------------


def _with(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, **changes}


VALID = structured_record(structured(SUBMITTED, submitted_data()))


@pytest.mark.parametrize(
    ("record", "reason", "fragment"),
    [
        pytest.param(_with(VALID, value=None), DlqReason.MISSING_VALUE, "no value", id="tombstone"),
        pytest.param(_with(VALID, value=b"\xff{}"), DlqReason.INVALID_UTF8, "value", id="value-not-utf8"),
        pytest.param(
            {**binary_record(SUBMITTED, submitted_data()), "headers": [("ce_id", b"\xc3\x28")]},
            DlqReason.INVALID_UTF8,
            "ce_id",
            id="header-not-utf8",
        ),
        pytest.param(_with(VALID, key=b"\xff"), DlqReason.INVALID_UTF8, "key", id="key-not-utf8"),
        pytest.param(
            _with(VALID, value=b'{"specversion": '), DlqReason.MALFORMED_JSON, "not JSON", id="truncated"
        ),
        pytest.param(_with(VALID, value=b"NaN"), DlqReason.MALFORMED_JSON, "NaN", id="nan"),
        pytest.param(_with(VALID, value=b"[" * 100_000), DlqReason.MALFORMED_JSON, "", id="deeply-nested"),
        pytest.param(
            _with(VALID, headers=[("content-type", b"text/plain")]),
            DlqReason.UNSUPPORTED_CONTENT_TYPE,
            "content-type",
            id="text-plain",
        ),
        pytest.param(
            _with(VALID, headers=[("content-type", b"application/cloudevents-batch+json")]),
            DlqReason.UNSUPPORTED_CONTENT_TYPE,
            "batches",
            id="batch",
        ),
        pytest.param(
            _with(VALID, value=b"[1, 2]"), DlqReason.INVALID_ENVELOPE, "JSON object", id="not-object"
        ),
        pytest.param(
            structured_record(
                {k: v for k, v in structured(SUBMITTED, submitted_data()).items() if k != "id"}
            ),
            DlqReason.INVALID_ENVELOPE,
            "id",
            id="missing-id",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, submitted_data(), specversion="0.3")),
            DlqReason.INVALID_ENVELOPE,
            "specversion",
            id="old-specversion",
        ),
        pytest.param(
            structured_record(
                {k: v for k, v in structured(SUBMITTED, submitted_data()).items() if k != "data"}
            ),
            DlqReason.INVALID_ENVELOPE,
            "data",
            id="no-data",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, submitted_data(), time=1764097200)),
            DlqReason.INVALID_ENVELOPE,
            "time",
            id="epoch-time",
        ),
        pytest.param(
            _with(VALID, headers=[("content-type", b"application/json")]),
            DlqReason.INVALID_ENVELOPE,
            "ce_specversion",
            id="binary-without-ce-headers",
        ),
        pytest.param(
            {
                **binary_record(SUBMITTED, submitted_data()),
                "headers": [
                    *binary_record(SUBMITTED, submitted_data())["headers"],
                    ("ce_id", b"another-id"),
                ],
            },
            DlqReason.INVALID_ENVELOPE,
            "repeated",
            id="conflicting-header",
        ),
        pytest.param(
            _with(VALID, headers=[("content-type", None)]),
            DlqReason.INVALID_ENVELOPE,
            "has no value",
            id="header-without-value",
        ),
        pytest.param(
            structured_record(structured("crm.order.deleted", {"orderId": ORDER_ID})),
            DlqReason.UNKNOWN_EVENT_TYPE,
            "crm.order.deleted",
            id="unknown-type",
        ),
        pytest.param(
            structured_record(
                structured(
                    SUBMITTED,
                    submitted_data({"type": "SIM_SWAP", "lineItemId": "x", "productOfferingId": "p"}),
                )
            ),
            DlqReason.UNKNOWN_LINE_ITEM_TYPE,
            "SIM_SWAP",
            id="unknown-line-item-type",
        ),
        pytest.param(
            binary_record(UPDATED, updated_data({"type": "ADDON", "lineItemId": "x"})),
            DlqReason.UNKNOWN_LINE_ITEM_TYPE,
            "data.lineItem",
            id="unknown-line-item-type-in-update",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, {"orderId": ORDER_ID, "lineItems": [assigned_item()]})),
            DlqReason.INVALID_DATA,
            "data.customer",
            id="missing-customer",
        ),
        pytest.param(
            structured_record(structured(CANCELLED, {"orderId": ORDER_ID, "reason": "BORED"})),
            DlqReason.INVALID_DATA,
            "data.reason",
            id="wrong-enum",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, {**submitted_data(), "customer": {"id": "c"}})),
            DlqReason.INVALID_DATA,
            "customer must be",
            id="customer-shape",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, {**submitted_data(), "lineItems": []})),
            DlqReason.INVALID_DATA,
            "data.lineItems",
            id="no-line-items",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, {**submitted_data(), "priority": "high"})),
            DlqReason.INVALID_DATA,
            "data.priority",
            id="unknown-field",
        ),
        pytest.param(
            structured_record(structured(SUBMITTED, submitted_data(), subject="order-999")),
            DlqReason.SUBJECT_MISMATCH,
            "subject",
            id="subject-mismatch",
        ),
        pytest.param(_with(VALID, key=b"order-999"), DlqReason.KEY_MISMATCH, "key", id="key-mismatch"),
    ],
)
def test_every_dlq_reason(record: dict[str, Any], reason: DlqReason, fragment: str) -> None:
    error = refused(**record)

    assert error.reason is reason
    assert error.dlq_error.startswith(f"{reason.value}: ")
    assert fragment in error.dlq_error
    assert dict(error.dlq_headers()) == {
        "dlq_reason": reason.value.encode(),
        "dlq_error": error.dlq_error.encode(),
    }
    assert isinstance(error, OrchestratorError)
    assert error.to_dict()["code"] == "invalid_event"
    assert error.retryable is False


def test_unknown_order_is_a_reason_the_engine_sets_not_the_decoder() -> None:
    assert DlqReason.UNKNOWN_ORDER.value == "unknown_order"
    assert decode_crm_event(**binary_record(UPDATED, updated_data())).order_id == ORDER_ID


# --- cross-field rules ------------------------------------------------------------------------------


def _item(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in {**assigned_item("li-x"), **fields}.items() if v is not None}


PORTING = {"details": {"accountNumber": "A1", "passcode": "P1"}}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (_item(leaseToken="lease_1"), "leaseToken requires msisdn"),
        (_item(porting=PORTING), "porting requires msisdn"),
        (
            _item(msisdn="+15550001111", tempNumber=True, leaseToken="l"),
            "tempNumber: true is only meaningful",
        ),
        (_item(msisdn="+15550001111", leaseToken="l", porting=PORTING), "exclude each other"),
        (_item(msisdn="+15550001111"), "msisdn requires leaseToken"),
        (
            _item(msisdn="+15550001111", porting=PORTING, leaseExpiresAt="2026-11-25T20:00:00Z"),
            "leaseExpiresAt",
        ),
        (_item(msisdn="0701234567", leaseToken="l"), "String should match pattern"),
        (_item(scheduleActivationAt="2026-12-01T00:00:00Z"), "YYYY-MM-DD"),
        (_item(scheduleActivationAt=20261201), "YYYY-MM-DD"),
        (_item(msisdn="+15550001111", porting={"details": {}}), "must not be empty"),
        (
            {"type": "ADD_ON", "lineItemId": "a", "productOfferingId": "p"},
            "subscriptionId or subscriptionLineItemId",
        ),
        (
            {"type": "TOP_UP", "lineItemId": "t", "productOfferingId": "p", "subscriptionLineItemId": "nope"},
            "is not a SUBSCRIPTION line item of this order",
        ),
    ],
)
def test_meaningless_line_items_are_invalid_data(item: dict[str, Any], message: str) -> None:
    error = refused(**structured_record(structured(SUBMITTED, submitted_data(item))))

    assert error.reason is DlqReason.INVALID_DATA
    assert message in error.dlq_error


def test_line_item_ids_must_be_unique_within_an_order() -> None:
    data = submitted_data(assigned_item("same"), leased_item("same"))

    error = refused(**structured_record(structured(SUBMITTED, data)))

    assert error.reason is DlqReason.INVALID_DATA
    assert "repeated: same" in error.dlq_error


def test_cancel_with_reason_other_needs_a_comment() -> None:
    error = refused(**structured_record(structured(CANCELLED, {"orderId": ORDER_ID, "reason": "OTHER"})))

    assert error.reason is DlqReason.INVALID_DATA
    assert "comment is required" in error.dlq_error


# --- secrets never leak into DLQ text ---------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda item: item.update(msisdn=None), id="porting-without-msisdn"),
        pytest.param(lambda item: item["porting"]["details"].update(passcode=1234), id="passcode-wrong-type"),
        pytest.param(
            lambda item: item["porting"]["details"].update(extra={"nested": True}), id="extra-not-string"
        ),
        pytest.param(lambda item: item.update(leaseToken="l"), id="lease-and-porting"),
        pytest.param(
            lambda item: item["porting"].update(details="PASS-4482-SECRET"), id="details-is-a-secret-string"
        ),
        pytest.param(
            lambda item: item["porting"]["details"].update({"PASS-4482-SECRET": 5}), id="secret-as-a-key"
        ),
    ],
)
def test_dlq_error_never_contains_porting_secrets(breakage: Any) -> None:
    item = ported_item()
    breakage(item)
    item = {k: v for k, v in item.items() if v is not None}

    error = refused(**structured_record(structured(SUBMITTED, submitted_data(item))))

    assert error.reason is DlqReason.INVALID_DATA
    for text in (error.dlq_error, str(error), repr(error), json.dumps(error.to_dict())):
        for secret in SECRETS:
            assert secret not in text
    assert "data.lineItems.0.SUBSCRIPTION" in error.dlq_error  # locations stay readable


def test_scrubbing_keeps_field_names_in_locations() -> None:
    item = ported_item()
    item["porting"]["details"]["passcode"] = 1234

    error = refused(**structured_record(structured(SUBMITTED, submitted_data(item))))

    assert (
        "data.lineItems.0.SUBSCRIPTION.porting.details.passcode: Input should be a valid string"
        in error.dlq_error
    )


def test_a_record_key_and_header_order_do_not_matter_for_binary_mode() -> None:
    record = binary_record(SUBMITTED, submitted_data())
    record["headers"] = list(reversed(record["headers"]))

    assert decode_crm_event(**record).type == SUBMITTED


def test_structured_headers_constant_is_what_the_contract_says() -> None:
    assert STRUCTURED_HEADERS == [("content-type", b"application/cloudevents+json")]
