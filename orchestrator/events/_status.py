"""Provisioning status events (produced on `provisioning.status.v1`) and their Kafka encoding.

Output uses CloudEvents **structured mode**: the value is the whole event as JSON and the only header
is `content-type: application/cloudevents+json`, so a consumer needs nothing but the value, and the
record can be archived or replayed as one JSON document. The CloudEvent `id` is derived from
(workflowId, sequence), so an outbox relay that publishes the same row twice produces the same id and
consumers that deduplicate on `id` see it once.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Literal, NamedTuple, Self

from pydantic import ConfigDict, Field, model_validator

from orchestrator.events._base import ContractModel, IsoDate, Msisdn, NonEmptyStr, Timestamp
from orchestrator.events._line_items import LineItemType

STATUS_CONTENT_TYPE = "application/cloudevents+json"
# Fixed forever: changing it would change every event id and defeat consumers' deduplication.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c8f7e-3f0a-5b51-9c43-8f5d2b7a9e10")


class LineItemState(StrEnum):
    """Every state a line item workflow can report (the machines' states, all of them).

    A unit test checks that this enum and the state machine definitions agree exactly.
    """

    RECEIVED = "received"
    NUMBER_LEASED = "number_leased"
    AWAITING_SUBMISSION = "awaiting_submission"
    SUBMITTED = "submitted"
    PORTING_PENDING = "porting_pending"
    TEMP_NUMBER_ACTIVE = "temp_number_active"
    ACTIVATION_SCHEDULED = "activation_scheduled"
    ACTIVATED = "activated"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class OrderState(StrEnum):
    """An order's state, derived from its line items (see `orchestrator.machines.derive_order_state`)."""

    IN_PROGRESS = "in_progress"
    ACTIVATED = "activated"
    PARTIALLY_ACTIVATED = "partially_activated"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepError(ContractModel):
    """Why a workflow is `failed`: a stable machine-readable code, and the step that failed."""

    code: NonEmptyStr
    message: str
    retryable: bool
    step: NonEmptyStr


class LineItemStateChanged(ContractModel):
    """`data` of `provisioning.line_item.state_changed`. Every key is always present (null if unknown)."""

    order_id: NonEmptyStr
    line_item_id: NonEmptyStr
    line_item_type: LineItemType
    workflow_id: NonEmptyStr
    state: LineItemState
    previous_state: LineItemState | None = Field(description="null on the first event (state `received`)")
    sequence: int = Field(ge=1, description="1, 2, 3, ... per line item, without gaps")
    occurred_at: Timestamp
    msisdn: Msisdn | None = Field(description="the number the subscription is reachable on now")
    temporary_msisdn: Msisdn | None = Field(description="while a temporary number is in use")
    ported_msisdn: Msisdn | None = Field(
        description="the number being ported, while a temporary one is in use"
    )
    subscription_id: str | None = Field(description="the provider's subscription id, once known")
    scheduled_activation_date: IsoDate | None = Field(description="when activation waits for a date")
    error: StepError | None = Field(description="set exactly when state is `failed`")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.state is LineItemState.FAILED) != (self.error is not None):
            raise ValueError("error is required on `failed` and must be null on every other state")
        if (self.previous_state is None) != (self.sequence == 1):
            raise ValueError("previousState is null exactly on the first event (sequence 1)")
        if (self.temporary_msisdn is None) != (self.ported_msisdn is None):
            raise ValueError("temporaryMsisdn and portedMsisdn come together")
        return self


class OrderStateChanged(ContractModel):
    """`data` of `provisioning.order.state_changed`, sent when the derived order state changes."""

    order_id: NonEmptyStr
    state: OrderState
    previous_state: OrderState | None = Field(description="null on the order's first event")
    sequence: int = Field(ge=1, description="1, 2, 3, ... per order, without gaps")
    occurred_at: Timestamp
    line_item_counts: dict[LineItemState, int] = Field(
        description="how many line items are in each state; states with no items are left out"
    )
    line_item_total: int = Field(ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if any(count < 1 for count in self.line_item_counts.values()):
            raise ValueError("lineItemCounts holds only states with at least one line item")
        if sum(self.line_item_counts.values()) != self.line_item_total:
            raise ValueError("lineItemCounts must add up to lineItemTotal")
        if (self.previous_state is None) != (self.sequence == 1):
            raise ValueError("previousState is null exactly on the first event (sequence 1)")
        return self


class AmendmentOutcome(StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"


class _LineItemNotice(ContractModel):
    """What every notice about a line item carries: which item, and its place in the item's sequence."""

    order_id: NonEmptyStr
    line_item_id: NonEmptyStr
    workflow_id: NonEmptyStr
    sequence: int = Field(ge=2, description="the line item's sequence (shared with its state changes)")
    occurred_at: Timestamp


class LineItemAmended(_LineItemNotice):
    """`data` of `provisioning.line_item.amended`: what became of one CRM amendment. Every
    amendment gets exactly one, in the line item's `sequence` beside its state changes."""

    change: NonEmptyStr = Field(
        description="what the amendment changed: porting_details, schedule, lease, "
        "keep_temporary_number or line_item"
    )
    outcome: AmendmentOutcome
    reason: str | None = Field(None, description="why it was refused; set exactly when refused")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.outcome is AmendmentOutcome.REFUSED) != bool(self.reason):
            raise ValueError("reason is required when refused and must be absent when applied")
        return self


class JeopardyStatus(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class LineItemJeopardy(_LineItemNotice):
    """`data` of `provisioning.line_item.jeopardy`: a line item late against what is expected of
    it (a port stuck in progress, an activation past its date), raised once and cleared by the
    next milestone."""

    state: LineItemState = Field(description="the line item's state when raised or cleared")
    reason: NonEmptyStr = Field(description="port_stuck or activation_late")
    since: Timestamp = Field(description="when the awaited milestone became due to start counting")
    expected_by: Timestamp = Field(description="when it should have happened")
    status: JeopardyStatus


LineItemNotice = LineItemAmended | LineItemJeopardy
StatusData = LineItemStateChanged | OrderStateChanged | LineItemAmended | LineItemJeopardy


class _StatusEnvelope(ContractModel):
    model_config = ContractModel.model_config | ConfigDict(alias_generator=None)

    specversion: Literal["1.0"] = "1.0"
    id: NonEmptyStr
    source: NonEmptyStr
    subject: NonEmptyStr = Field(description="the CRM orderId")
    time: Timestamp
    datacontenttype: Literal["application/json"] = "application/json"


class LineItemStateChangedEvent(_StatusEnvelope):
    """The whole CloudEvent as published (structured mode)."""

    type: Literal["provisioning.line_item.state_changed"] = "provisioning.line_item.state_changed"
    data: LineItemStateChanged


class OrderStateChangedEvent(_StatusEnvelope):
    """The whole CloudEvent as published (structured mode)."""

    type: Literal["provisioning.order.state_changed"] = "provisioning.order.state_changed"
    data: OrderStateChanged


class LineItemAmendedEvent(_StatusEnvelope):
    """The whole CloudEvent as published (structured mode)."""

    type: Literal["provisioning.line_item.amended"] = "provisioning.line_item.amended"
    data: LineItemAmended


class LineItemJeopardyEvent(_StatusEnvelope):
    """The whole CloudEvent as published (structured mode)."""

    type: Literal["provisioning.line_item.jeopardy"] = "provisioning.line_item.jeopardy"
    data: LineItemJeopardy


StatusEvent = (
    LineItemStateChangedEvent | OrderStateChangedEvent | LineItemAmendedEvent | LineItemJeopardyEvent
)
_ENVELOPES: dict[type[ContractModel], type[_StatusEnvelope]] = {
    LineItemStateChanged: LineItemStateChangedEvent,
    OrderStateChanged: OrderStateChangedEvent,
    LineItemAmended: LineItemAmendedEvent,
    LineItemJeopardy: LineItemJeopardyEvent,
}


class KafkaRecord(NamedTuple):
    """What to hand the producer: key, value and headers."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def status_event_id(*, data: StatusData) -> str:
    """The deterministic CloudEvent id: UUIDv5 of (workflowId, sequence), or (orderId, sequence).
    A line item's amendments and jeopardy share its sequence, so their ids are unique with it."""
    if not isinstance(data, OrderStateChanged):
        name = f"line_item:{data.workflow_id}:{data.sequence}"
    else:
        name = f"order:{data.order_id}:{data.sequence}"
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def build_status_event(*, data: StatusData, source: str) -> StatusEvent:
    """Wrap `data` in its CloudEvent (time = occurredAt, subject = orderId, id deterministic)."""
    attributes = {
        "id": status_event_id(data=data),
        "source": source,
        "subject": data.order_id,
        "time": data.occurred_at,
    }
    event: StatusEvent = _ENVELOPES[type(data)].model_validate({**attributes, "data": data})  # type: ignore[assignment]
    return event


def encode_status_event(*, data: StatusData, source: str) -> KafkaRecord:
    """The Kafka record for a status event: key = orderId, value = structured CloudEvent JSON.

    Deterministic: the same `data` and `source` always give byte-identical key, value and headers.
    """
    event = build_status_event(data=data, source=source)
    value = event.model_dump_json(by_alias=True).encode("utf-8")
    return KafkaRecord(
        key=data.order_id.encode("utf-8"),
        value=value,
        headers=[("content-type", STATUS_CONTENT_TYPE.encode("ascii"))],
    )
