"""Pydantic models of the Connect API's requests and responses.

Responses are read leniently: unknown fields are kept (``extra="allow"``) and enum-like fields accept
values we have never seen (they stay plain strings), because a provider adding a state or a field
must never crash a running workflow. Requests are built by us, so their known fields are typed; they
still allow extra fields so a line item from the CRM can carry Connect fields we do not model yet.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny
from pydantic.alias_generators import to_camel

_E = TypeVar("_E", bound=StrEnum)


def _open_enum(enum: type[_E]) -> BeforeValidator:
    """Known values become members of `enum`; unknown strings pass through unchanged."""

    def convert(value: object) -> object:
        if isinstance(value, str) and value in enum._value2member_map_:
            return enum(value)
        return value

    return BeforeValidator(convert)


class ConnectModel(BaseModel):
    """Base of every Connect model: camelCase on the wire, snake_case in Python, extras kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)


# --- enums (open: see _open_enum) -------------------------------------------------------------


class OrderState(StrEnum):
    PENDING = "PENDING"
    CONFIGURED = "CONFIGURED"
    SUBMITTED = "SUBMITTED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class SubscriptionStatus(StrEnum):
    PENDING = "PENDING"
    ACTIVATED = "ACTIVATED"
    BLOCKED = "BLOCKED"
    PAUSED = "PAUSED"
    CANCELLED = "CANCELLED"


class PortingStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    SCHEDULED = "SCHEDULED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class AddonStatus(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class Requirement(StrEnum):
    NOT_REQUIRED = "NOT_REQUIRED"
    OPTIONAL = "OPTIONAL"
    REQUIRED = "REQUIRED"


# LineItemType and CancelReason are also the CRM contract's (`orchestrator.events`): the CRM passes
# Connect's values through. They are defined twice on purpose, because the client depends on nothing
# of ours (the `connect-alone` import contract); tests/connect holds the two definitions equal.
class LineItemType(StrEnum):
    SUBSCRIPTION = "SUBSCRIPTION"
    LICENSE = "LICENSE"
    ADD_ON = "ADD_ON"
    TOP_UP = "TOP_UP"
    EXTERNAL_PRODUCT = "EXTERNAL_PRODUCT"
    EXTERNAL_ITEM = "EXTERNAL_ITEM"
    SUBSCRIPTION_CHANGE = "SUBSCRIPTION_CHANGE"
    LICENSE_CHANGE = "LICENSE_CHANGE"
    ADD_ON_CHANGE = "ADD_ON_CHANGE"


class CancelWhen(StrEnum):
    NEXT_DAY = "CancelNextDay"
    BEGINNING_OF_NEXT_MONTH = "CancelAtBeginningOfNextMonth"
    AT_DATE = "CancelAtDate"


class CancelReason(StrEnum):
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


OrderStateValue = Annotated[OrderState | str, _open_enum(OrderState)]
SubscriptionStatusValue = Annotated[SubscriptionStatus | str, _open_enum(SubscriptionStatus)]
PortingStatusValue = Annotated[PortingStatus | str, _open_enum(PortingStatus)]
AddonStatusValue = Annotated[AddonStatus | str, _open_enum(AddonStatus)]
RequirementValue = Annotated[Requirement | str, _open_enum(Requirement)]
LineItemTypeValue = Annotated[LineItemType | str, _open_enum(LineItemType)]

# --- shared pieces ------------------------------------------------------------------------------


class Address(ConnectModel):
    street1: str | None = None
    street2: str | None = None
    city: str | None = None
    zip: str | None = None
    country: str | None = None
    state: str | None = None
    region: str | None = None
    attention: str | None = None


class PortingDetails(ConnectModel):
    """US shape seen in the docs; other countries' fields ride along as extras.

    Account number and passcode are customer secrets: kept out of `repr` so a logged model cannot
    leak them.
    """

    account_number: str | None = Field(None, repr=False)
    passcode: str | None = Field(None, repr=False)
    first_name: str | None = None
    last_name: str | None = None
    address: Address | None = None


class Porting(ConnectModel):
    details: PortingDetails


class SubscriberInput(ConnectModel):
    name: str | None = None
    email: str | None = None
    msisdn: str | None = None
    identity: str | None = None


class Sim(ConnectModel):
    esim: bool | None = None
    imei: str | None = None
    iccid: str | None = None


# --- line items (requests) ----------------------------------------------------------------------


class LineItem(ConnectModel):
    """Any of the nine variants; only SUBSCRIPTION's fields are documented, the rest are extras."""

    type: LineItemTypeValue
    line_item_id: str
    product_offering_id: str | None = None
    metadata: dict[str, Any] | None = None


class SubscriptionLineItem(LineItem):
    type: LineItemTypeValue = LineItemType.SUBSCRIPTION
    msisdn: str | None = None
    lease_token: str | None = None
    temp_number: bool | None = None
    porting: Porting | None = None
    extensions: dict[str, Any] | None = None
    display: str | None = None
    subscriber: SubscriberInput | None = None
    sim: Sim | None = None
    schedule_activation_at: date | None = None


class ExternalPayment(ConnectModel):
    reference: str
    receipt_description: str | None = None


class CreateOrderRequest(ConnectModel):
    customer: dict[str, Any]
    user: dict[str, Any] | None = None
    billing: dict[str, Any] | None = None
    shipping: dict[str, Any] | None = None
    # SerializeAsAny: a SubscriptionLineItem must keep its own fields when dumped as a LineItem.
    line_items: list[SerializeAsAny[LineItem]] = Field(default_factory=list)
    promo_code: str | None = None
    metadata: dict[str, Any] | None = None


class SubmitOrderRequest(ConnectModel):
    external_payment: ExternalPayment | None = None
    metadata: dict[str, Any] | None = None


class CancelOrderRequest(ConnectModel):
    reason: str | None = None
    comment: str | None = None


class LeaseNumbersRequest(ConnectModel):
    types: list[str] = Field(default_factory=lambda: ["CELL"])
    count: int = Field(1, ge=1, le=10)


class CreateSubscriptionRequest(ConnectModel):
    product_offering_id: str
    customer_id: str
    reference_id: str | None = Field(None, max_length=255)
    subscriber: SubscriberInput | None = None
    sim: Sim | None = None
    metadata: dict[str, Any] | None = None


class ActivateSubscriptionRequest(ConnectModel):
    msisdn: str | None = None
    lease_token: str | None = None
    temp_number: bool | None = None
    porting: Porting | None = None
    sim: Sim | None = None
    schedule_activation_at: date | None = None


class CancelSubscriptionRequest(ConnectModel):
    when: CancelWhen
    cancel_date: date | None = Field(None, alias="date")  # only with CancelAtDate
    reason: CancelReason
    comment: str | None = None  # required by the provider when reason is OTHER
    metadata: dict[str, Any] | None = None


class UpdatePortingRequest(ConnectModel):
    details: PortingDetails


class AddAddonRequest(ConnectModel):
    product_offering_id: str
    scheduled_at: date | None = None
    metadata: dict[str, Any] | None = None


class ChangeAddonRequest(ConnectModel):
    subscription_addon_id: str
    product_offering_id: str
    scheduled_at: date | None = None
    reason: str | None = None
    metadata: dict[str, Any] | None = None


class AddTopupRequest(ConnectModel):
    product_offering_id: str
    metadata: dict[str, Any] | None = None


class ChangeLicenseRequest(ConnectModel):
    product_offering_id: str
    scheduled_at: date | None = None
    metadata: dict[str, Any] | None = None


# --- responses ----------------------------------------------------------------------------------


class ValidationIssue(ConnectModel):
    message: str | None = None
    property: str | None = None


class LineItemValidation(ConnectModel):
    line_item_id: str | None = None
    is_valid: bool = True
    missing_fields: list[str] = Field(default_factory=list)
    errors: list[ValidationIssue] = Field(default_factory=list)


class OrderValidation(ConnectModel):
    is_valid: bool = True
    missing_fields: list[str] = Field(default_factory=list)
    errors: list[ValidationIssue] = Field(default_factory=list)
    line_item_validation: list[LineItemValidation] = Field(default_factory=list)


class OrderRequirements(ConnectModel):
    requires_payment: RequirementValue | None = None
    requires_payment_profile: RequirementValue | None = None
    requires_signing: RequirementValue | None = None


class CreatedSubscription(ConnectModel):
    subscription_id: str
    status: SubscriptionStatusValue | None = None
    msisdn: str | None = None
    created_by_line_item: str | None = None


class CreatedLicense(ConnectModel):
    license_id: str
    created_by_line_item: str | None = None


class CreatedEntities(ConnectModel):
    subscriptions: list[CreatedSubscription] = Field(default_factory=list)
    licenses: list[CreatedLicense] = Field(default_factory=list)


class OrderLineItem(ConnectModel):
    """A line item as the provider echoes it (porting credentials replaced by `portingRequested`)."""

    type: LineItemTypeValue
    line_item_id: str
    product_offering_id: str | None = None
    msisdn: str | None = None
    porting_requested: bool | None = None


class Order(ConnectModel):
    order_id: str
    state: OrderStateValue
    line_items: list[OrderLineItem] = Field(default_factory=list)
    validation: OrderValidation | None = None
    requirements: OrderRequirements | None = None
    created_entities: CreatedEntities | None = None
    metadata: dict[str, Any] | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    completed_at: datetime | None = None


class LeasedNumber(ConnectModel):
    msisdn: str
    type: str | None = None
    grade: int | None = None
    expires_at: datetime | None = None


class Lease(ConnectModel):
    lease_token: str
    expires_at: datetime
    numbers: list[LeasedNumber]


class PendingChange(ConnectModel):
    """`pendingMsisdn` / `pendingStatus`: a scheduled change; `scheduledAt` may be a date or a time."""

    scheduled_at: str | None = None
    msisdn: str | None = None
    status: str | None = None


class PortingSummary(ConnectModel):
    status: PortingStatusValue | None = None
    msisdn: str | None = None
    scheduled_at: str | None = None


class Subscription(ConnectModel):
    subscription_id: str
    status: SubscriptionStatusValue
    msisdn: str | None = None
    display: str | None = None
    type: str | None = None
    customer_id: str | None = None
    product_offering_id: str | None = None
    reference_id: str | None = None
    sim: Sim | None = None
    pending_msisdn: PendingChange | None = None
    pending_status: PendingChange | None = None
    porting: PortingSummary | None = None
    activated_at: datetime | None = None
    cancelled_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class SubscriptionPage(ConnectModel):
    items: list[Subscription]


class InPorting(ConnectModel):
    msisdn: str | None = None
    status: PortingStatusValue
    direction: str | None = None
    scheduled_at: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class InPortingUpdated(ConnectModel):
    subscription: Subscription


class SubscriptionAddon(ConnectModel):
    subscription_addon_id: str
    subscription_id: str | None = None
    status: AddonStatusValue
    product_offering_id: str | None = None
    pending_status: PendingChange | None = None


class AddonPage(ConnectModel):
    items: list[SubscriptionAddon]


class Topup(ConnectModel):
    product_offering_id: str
    applied_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class TopupApplied(ConnectModel):
    topup: Topup


class License(ConnectModel):
    license_id: str
    status: str | None = None
    type: str | None = None
    product_offering_id: str | None = None


class Pagination(ConnectModel):
    total: int | None = None
    limit: int | None = None
    offset: int | None = None
    next_cursor: str | None = None  # the third-party doc's cursor shape; both are read


class LicensePage(ConnectModel):
    items: list[License]
    pagination: Pagination | None = None
