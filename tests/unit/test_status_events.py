"""Status events: the promised fields, structured-mode encoding, and a deterministic CloudEvent id."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from crm_samples import SECRETS
from pydantic import ValidationError

from orchestrator.events import (
    STATUS_CONTENT_TYPE,
    LineItemState,
    LineItemStateChanged,
    OrderState,
    OrderStateChanged,
    StepError,
    encode_status_event,
    status_event_id,
)

WHEN = datetime(2026, 11, 25, 19, 30, tzinfo=UTC)
SOURCE = "urn:provisioning-orchestrator"


def line_item_event(**changes: Any) -> LineItemStateChanged:
    fields: dict[str, Any] = {
        "order_id": "order-123",
        "line_item_id": "li-ported",
        "line_item_type": "SUBSCRIPTION",
        "workflow_id": "wf-1",
        "state": "temp_number_active",
        "previous_state": "porting_pending",
        "sequence": 5,
        "occurred_at": WHEN,
        "msisdn": "+15550009999",
        "temporary_msisdn": "+15550009999",
        "ported_msisdn": "+15557654321",
        "subscription_id": "sub-1",
        "scheduled_activation_date": None,
        "error": None,
    }
    fields.update(changes)
    return LineItemStateChanged(**fields)


def test_value_is_a_structured_cloudevent_with_every_promised_field() -> None:
    record = encode_status_event(data=line_item_event(), source=SOURCE)

    event = json.loads(record.value)
    assert record.key == b"order-123"
    assert record.headers == [("content-type", STATUS_CONTENT_TYPE.encode())]
    assert {k: v for k, v in event.items() if k != "data"} == {
        "specversion": "1.0",
        "id": status_event_id(data=line_item_event()),
        "source": SOURCE,
        "type": "provisioning.line_item.state_changed",
        "subject": "order-123",
        "time": "2026-11-25T19:30:00Z",
        "datacontenttype": "application/json",
    }
    assert event["data"] == {
        "orderId": "order-123",
        "lineItemId": "li-ported",
        "lineItemType": "SUBSCRIPTION",
        "workflowId": "wf-1",
        "state": "temp_number_active",
        "previousState": "porting_pending",
        "sequence": 5,
        "occurredAt": "2026-11-25T19:30:00Z",
        "msisdn": "+15550009999",
        "temporaryMsisdn": "+15550009999",
        "portedMsisdn": "+15557654321",
        "subscriptionId": "sub-1",
        "scheduledActivationDate": None,
        "error": None,
    }


def test_republishing_gives_byte_identical_records_and_the_same_id() -> None:
    first = encode_status_event(data=line_item_event(), source=SOURCE)
    again = encode_status_event(data=line_item_event(), source=SOURCE)

    assert first == again
    assert json.loads(first.value)["id"] == json.loads(again.value)["id"]


def test_ids_differ_per_sequence_and_per_workflow() -> None:
    ids = {
        status_event_id(data=line_item_event(sequence=5)),
        status_event_id(data=line_item_event(sequence=6)),
        status_event_id(data=line_item_event(workflow_id="wf-2")),
    }

    assert len(ids) == 3


def test_occurred_at_is_published_in_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=2)))

    data = line_item_event(occurred_at=local)

    assert (
        json.loads(encode_status_event(data=data, source=SOURCE).value)["data"]["occurredAt"]
        == "2026-11-25T19:30:00Z"
    )


def test_failed_carries_a_stable_error_and_nothing_else_does() -> None:
    error = StepError(
        code="provider_rejected", message="invalid ICCID", retryable=False, step="add_line_item"
    )
    failed = line_item_event(state="failed", error=error)

    assert json.loads(encode_status_event(data=failed, source=SOURCE).value)["data"]["error"] == {
        "code": "provider_rejected",
        "message": "invalid ICCID",
        "retryable": False,
        "step": "add_line_item",
    }
    with pytest.raises(ValidationError, match="error is required on `failed`"):
        line_item_event(state="failed", error=None)
    with pytest.raises(ValidationError, match="must be null on every other state"):
        line_item_event(error=error)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sequence": 1}, "previousState is null exactly on the first event"),
        ({"sequence": 0}, "greater than or equal to 1"),
        ({"ported_msisdn": None}, "come together"),
        ({"state": "sleeping"}, "Input should be"),
        ({"scheduled_activation_date": "2026-12-01T10:00:00Z"}, "YYYY-MM-DD"),
    ],
)
def test_inconsistent_status_data_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        line_item_event(**changes)


def test_first_event_has_no_previous_state_and_scheduled_date_is_a_date() -> None:
    data = line_item_event(
        state="received",
        previous_state=None,
        sequence=1,
        msisdn=None,
        temporary_msisdn=None,
        ported_msisdn=None,
        scheduled_activation_date=date(2026, 12, 24),
    )

    published = json.loads(encode_status_event(data=data, source=SOURCE).value)["data"]
    assert published["previousState"] is None
    assert published["scheduledActivationDate"] == "2026-12-24"


def test_status_events_never_carry_porting_secrets() -> None:
    error = StepError(
        code="port_rejected", message="porting details rejected", retryable=False, step="port_in"
    )
    record = encode_status_event(data=line_item_event(state="failed", error=error), source=SOURCE)

    text = record.value.decode() + repr(record)
    assert not any(secret in text for secret in SECRETS)
    assert "porting" not in json.loads(record.value)["data"]


def test_order_event_counts_items_per_state() -> None:
    data = OrderStateChanged(
        order_id="order-123",
        state=OrderState.PARTIALLY_ACTIVATED,
        previous_state=OrderState.IN_PROGRESS,
        sequence=2,
        occurred_at=WHEN,
        line_item_counts={LineItemState.ACTIVATED: 2, LineItemState.FAILED: 1},
        line_item_total=3,
    )

    record = encode_status_event(data=data, source=SOURCE)
    event = json.loads(record.value)

    assert record.key == b"order-123"
    assert event["type"] == "provisioning.order.state_changed"
    assert event["data"]["lineItemCounts"] == {"activated": 2, "failed": 1}
    assert event["id"] == status_event_id(data=data)
    assert event["id"] != status_event_id(data=data.model_copy(update={"sequence": 3}))
    with pytest.raises(ValidationError, match="add up to lineItemTotal"):
        OrderStateChanged.model_validate({**data.model_dump(), "lineItemTotal": 4})
