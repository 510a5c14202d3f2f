"""CRM order events (consumed from `crm.orders.v1`): CloudEvents 1.0 envelopes and their `data`.

The envelope classes are what the decoder returns; `CrmEvent` is their union, discriminated by the
CloudEvents `type`. Envelopes accept CloudEvents extension attributes (the spec allows them); `data`
rejects unknown fields (see `ContractModel`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from orchestrator.events._base import ContractModel, Metadata, NonEmptyStr, Timestamp
from orchestrator.events._line_items import LineItem, SubscriptionItem


class CrmEventType(StrEnum):
    """The CloudEvents `type` values the CRM sends."""

    ORDER_SUBMITTED = "crm.order.submitted"
    LINE_ITEM_UPDATED = "crm.order.line_item.updated"
    ORDER_CANCELLED = "crm.order.cancelled"


class CustomerType(StrEnum):
    CONSUMER = "CONSUMER"
    BUSINESS = "BUSINESS"


class CancellationReason(StrEnum):
    """Connect's cancellation reasons (connect-api.md §3); `OTHER` needs a comment."""

    BETTER_DEAL_PRICE = "BETTER_DEAL_PRICE"
    NOT_HAPPY_MISSING_FUNCTIONS = "NOT_HAPPY_MISSING_FUNCTIONS"
    NOT_HAPPY_COVERAGE_SLA = "NOT_HAPPY_COVERAGE_SLA"
    NOT_HAPPY_COMPLEX_ADMIN = "NOT_HAPPY_COMPLEX_ADMIN"
    NOT_HAPPY_SUPPORT_ENGAGEMENT = "NOT_HAPPY_SUPPORT_ENGAGEMENT"
    FRAUD = "FRAUD"
    FRAUD_ATTEMPT = "FRAUD_ATTEMPT"
    TEST_OR_MARKETING = "TEST_OR_MARKETING"
    NO_NEED = "NO_NEED"
    WRONG_ORDER = "WRONG_ORDER"
    OTHER = "OTHER"


# --- customer -------------------------------------------------------------------------------------


class ExistingCustomer(ContractModel):
    """A customer Connect already knows."""

    customer_id: NonEmptyStr


class NewCustomerDetails(ContractModel):
    """A customer to create in Connect together with the order."""

    customer_type: CustomerType
    name: NonEmptyStr
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    identity: str | None = None
    locale: str | None = Field(None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47")
    contact: Metadata | None = None
    billing: Metadata | None = None
    shipping_address: Metadata | None = None
    metadata: Metadata | None = None


class NewCustomer(ContractModel):
    """`{new: {...}}`: the CRM asks for a new Connect customer."""

    new: NewCustomerDetails


def _customer_kind(value: Any) -> str | None:
    if isinstance(value, ExistingCustomer | NewCustomer):
        return "existing" if isinstance(value, ExistingCustomer) else "new"
    if isinstance(value, dict):
        if "customerId" in value or "customer_id" in value:
            return "existing"
        if "new" in value:
            return "new"
    return None


Customer = Annotated[
    Annotated[ExistingCustomer, Tag("existing")] | Annotated[NewCustomer, Tag("new")],
    Discriminator(
        _customer_kind,
        custom_error_type="customer_shape",
        custom_error_message="customer must be {customerId} or {new: {...}}",
    ),
]


# --- data of the three event types ----------------------------------------------------------------


class _OrderData(ContractModel):
    order_id: NonEmptyStr


class OrderSubmitted(_OrderData):
    """`data` of `crm.order.submitted`: a new order to provision."""

    customer: Customer
    line_items: list[LineItem] = Field(min_length=1)
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _line_items_consistent(self) -> Self:
        ids = [item.line_item_id for item in self.line_items]
        duplicates = sorted({line_item_id for line_item_id in ids if ids.count(line_item_id) > 1})
        if duplicates:
            raise ValueError(f"lineItemId must be unique within the order; repeated: {', '.join(duplicates)}")
        subscriptions = {item.line_item_id for item in self.line_items if isinstance(item, SubscriptionItem)}
        for item in self.line_items:
            target = getattr(item, "subscription_line_item_id", None)
            if target is not None and target not in subscriptions:
                raise ValueError(
                    f"line item {item.line_item_id}: subscriptionLineItemId {target} is not a SUBSCRIPTION "
                    "line item of this order"
                )
        return self


class LineItemUpdated(_OrderData):
    """`data` of `crm.order.line_item.updated`: replaces one line item's specification."""

    line_item: LineItem


class OrderCancelled(_OrderData):
    """`data` of `crm.order.cancelled`: cancel the whole order, or only `lineItemIds`."""

    reason: CancellationReason
    comment: str | None = None
    line_item_ids: list[NonEmptyStr] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reason is CancellationReason.OTHER and not self.comment:
            raise ValueError("comment is required when reason is OTHER")
        if self.line_item_ids is not None and len(set(self.line_item_ids)) != len(self.line_item_ids):
            raise ValueError("lineItemIds must not repeat")
        return self


# --- CloudEvents envelopes ------------------------------------------------------------------------


class DedupKey(NamedTuple):
    """CloudEvents `source` + `id`: an event seen twice under this key has no further effect."""

    source: str
    id: str


class CloudEventEnvelope(ContractModel):
    """The CloudEvents 1.0 context attributes the orchestrator relies on.

    `subject` is required here (the contract says it is the CRM orderId); extension attributes are
    kept (they are legal CloudEvents) but not interpreted.
    """

    model_config = ContractModel.model_config | ConfigDict(extra="allow", alias_generator=None)

    specversion: Literal["1.0"]
    id: NonEmptyStr
    source: NonEmptyStr
    type: NonEmptyStr
    subject: NonEmptyStr
    time: Timestamp | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: str | None = None

    @property
    def dedup_key(self) -> DedupKey:
        """The inbox key: `source` + `id`."""
        return DedupKey(source=self.source, id=self.id)

    @property
    def order_id(self) -> str:
        """The CRM order this event belongs to."""
        return self.subject


class _CrmEnvelope(CloudEventEnvelope):
    @model_validator(mode="after")
    def _subject_is_order_id(self) -> Self:
        data = getattr(self, "data", None)
        if isinstance(data, _OrderData) and data.order_id != self.subject:
            raise ValueError("subject must equal data.orderId")
        return self


class OrderSubmittedEvent(_CrmEnvelope):
    """`crm.order.submitted`."""

    type: Literal["crm.order.submitted"]
    data: OrderSubmitted


class LineItemUpdatedEvent(_CrmEnvelope):
    """`crm.order.line_item.updated`."""

    type: Literal["crm.order.line_item.updated"]
    data: LineItemUpdated


class OrderCancelledEvent(_CrmEnvelope):
    """`crm.order.cancelled`."""

    type: Literal["crm.order.cancelled"]
    data: OrderCancelled


CrmEvent = Annotated[OrderSubmittedEvent | LineItemUpdatedEvent | OrderCancelledEvent, Discriminator("type")]
"""A valid CRM event; narrow with `isinstance` or `match`."""

CRM_EVENT_CLASSES: dict[
    CrmEventType, type[OrderSubmittedEvent | LineItemUpdatedEvent | OrderCancelledEvent]
] = {
    CrmEventType.ORDER_SUBMITTED: OrderSubmittedEvent,
    CrmEventType.LINE_ITEM_UPDATED: LineItemUpdatedEvent,
    CrmEventType.ORDER_CANCELLED: OrderCancelledEvent,
}

CRM_DATA_CLASSES: dict[CrmEventType, type[OrderSubmitted | LineItemUpdated | OrderCancelled]] = {
    CrmEventType.ORDER_SUBMITTED: OrderSubmitted,
    CrmEventType.LINE_ITEM_UPDATED: LineItemUpdated,
    CrmEventType.ORDER_CANCELLED: OrderCancelled,
}
