"""CRM line items: the nine Connect line item shapes, discriminated by `type`.

Only the SUBSCRIPTION shape is documented by the provider (connect-api.md §3); the other eight carry
the plausible fields listed there. Cross-field rules that would make an item meaningless are checked
here, so that the engine never starts a workflow it cannot finish.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, cast

from pydantic import (
    Discriminator,
    Field,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from orchestrator.events._base import ContractModel, IsoDate, Metadata, Msisdn, NonEmptyStr, Timestamp
from orchestrator.events._secrets import REVEAL_SECRETS_CONTEXT, reveals_secrets


class LineItemType(StrEnum):
    """The nine Connect line item types (the `type` discriminator)."""

    SUBSCRIPTION = "SUBSCRIPTION"
    LICENSE = "LICENSE"
    ADD_ON = "ADD_ON"
    TOP_UP = "TOP_UP"
    EXTERNAL_PRODUCT = "EXTERNAL_PRODUCT"
    EXTERNAL_ITEM = "EXTERNAL_ITEM"
    SUBSCRIPTION_CHANGE = "SUBSCRIPTION_CHANGE"
    LICENSE_CHANGE = "LICENSE_CHANGE"
    ADD_ON_CHANGE = "ADD_ON_CHANGE"


class SubscriptionPath(StrEnum):
    """How a subscription gets its number; decides which states its workflow passes through."""

    ASSIGNED = "assigned"
    """No msisdn: the provider assigns a number."""
    LEASED = "leased"
    """msisdn + leaseToken: a number the customer picked from the pool."""
    PORT_IN = "port_in"
    """msisdn + porting details: the customer's existing number is ported in."""
    PORT_IN_WITH_TEMP = "port_in_with_temp"
    """As PORT_IN, with a temporary number live until the port completes."""


# --- parts of a subscription line item -------------------------------------------------------------


class PortingAddress(ContractModel):
    """The current owner's address as the losing operator knows it (US shape)."""

    street1: str | None = None
    street2: str | None = None
    city: str | None = None
    zip: str | None = None
    country: str | None = None
    state: str | None = None
    region: str | None = None
    attention: str | None = None


class PortingDetails(ContractModel):
    """Port-in credentials. Secret: masked in reprs and dumps unless secrets are explicitly revealed.

    The US shape is modelled; other countries' fields (the Swedish shape is undocumented) are accepted
    as extra string fields and are treated as secrets too.
    """

    model_config = ContractModel.model_config | {"extra": "allow"}

    account_number: SecretStr | None = None
    passcode: SecretStr | None = None
    first_name: str | None = None
    last_name: str | None = None
    address: PortingAddress | None = None
    __pydantic_extra__: dict[str, SecretStr] = Field(init=False)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set and not self.__pydantic_extra__:
            raise ValueError("porting details must not be empty")
        return self

    @model_serializer(mode="wrap")
    def _reveal_on_request(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        dumped = handler(self)
        if reveals_secrets(info) and isinstance(dumped, dict):
            for name, value in self._secret_fields().items():
                dumped[name] = value.get_secret_value()
        return dumped

    def _secret_fields(self) -> dict[str, SecretStr]:
        found: dict[str, SecretStr] = dict(self.__pydantic_extra__ or {})
        if self.account_number is not None:
            found["accountNumber"] = self.account_number
        if self.passcode is not None:
            found["passcode"] = self.passcode
        return found

    def secret_values(self) -> frozenset[str]:
        """The raw secret strings, so that tests and scrubbers can check they never leak."""
        return frozenset(value.get_secret_value() for value in self._secret_fields().values())


class Porting(ContractModel):
    """Connect's `porting` object on a subscription line item."""

    details: PortingDetails


class Subscriber(ContractModel):
    """The person using the subscription (Connect's line item input shape)."""

    name: str | None = None
    email: str | None = None
    msisdn: Msisdn | None = None
    identity: str | None = None


class Sim(ContractModel):
    """SIM configuration; a physical SIM needs an ICCID before the order can be submitted."""

    esim: bool | None = None
    imei: str | None = None
    iccid: str | None = Field(None, pattern=r"^[0-9]{18,22}F?$")


# --- the nine line item shapes ---------------------------------------------------------------------


class _LineItemBase(ContractModel):
    line_item_id: NonEmptyStr
    metadata: Metadata | None = None


class SubscriptionItem(_LineItemBase):
    """A new phone subscription (Connect's SUBSCRIPTION line item plus the CRM's `leaseExpiresAt`)."""

    type: Literal["SUBSCRIPTION"]
    product_offering_id: NonEmptyStr
    msisdn: Msisdn | None = None
    lease_token: NonEmptyStr | None = None
    lease_expires_at: Timestamp | None = Field(None, description="CRM extra: when the number lease lapses")
    temp_number: bool | None = None
    porting: Porting | None = None
    extensions: Metadata | None = None
    display: str | None = None
    subscriber: Subscriber | None = None
    sim: Sim | None = None
    schedule_activation_at: IsoDate | None = None

    @model_validator(mode="after")
    def _number_choice_is_meaningful(self) -> Self:
        if self.lease_token is not None and self.msisdn is None:
            raise ValueError("leaseToken requires msisdn (the leased number)")
        if self.porting is not None and self.msisdn is None:
            raise ValueError("porting requires msisdn (the number being ported)")
        if self.lease_token is not None and self.porting is not None:
            raise ValueError("leaseToken and porting exclude each other: a number is leased or ported")
        if self.temp_number and self.porting is None:
            raise ValueError("tempNumber: true is only meaningful with porting")
        if self.lease_expires_at is not None and self.lease_token is None:
            raise ValueError("leaseExpiresAt requires leaseToken")
        if self.msisdn is not None and self.lease_token is None and self.porting is None:
            raise ValueError("msisdn requires leaseToken (pool number) or porting (port-in)")
        return self

    @property
    def path(self) -> SubscriptionPath:
        """How this subscription gets its number (the validated fields allow exactly one answer)."""
        if self.porting is not None:
            return SubscriptionPath.PORT_IN_WITH_TEMP if self.temp_number else SubscriptionPath.PORT_IN
        if self.lease_token is not None:
            return SubscriptionPath.LEASED
        return SubscriptionPath.ASSIGNED

    @property
    def scheduled(self) -> bool:
        """True if activation waits for `scheduleActivationAt`."""
        return self.schedule_activation_at is not None


class _OnSubscription(_LineItemBase):
    """An item that applies to a subscription: an existing one, or one created by this order."""

    subscription_id: NonEmptyStr | None = None
    subscription_line_item_id: NonEmptyStr | None = Field(
        None, description="a SUBSCRIPTION line item of the same order, when the subscription is new"
    )

    def _exactly_one_target(self, *, required: bool) -> None:
        both = self.subscription_id is not None and self.subscription_line_item_id is not None
        if both:
            raise ValueError("give subscriptionId or subscriptionLineItemId, not both")
        if required and self.subscription_id is None and self.subscription_line_item_id is None:
            raise ValueError("subscriptionId or subscriptionLineItemId is required")


class LicenseItem(_OnSubscription):
    """A license, optionally assigned to a subscription."""

    type: Literal["LICENSE"]
    product_offering_id: NonEmptyStr

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._exactly_one_target(required=False)
        return self


class AddOnItem(_OnSubscription):
    """An add-on on a subscription, now or from a date."""

    type: Literal["ADD_ON"]
    product_offering_id: NonEmptyStr
    scheduled_at: IsoDate | None = None

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._exactly_one_target(required=True)
        return self


class TopUpItem(_OnSubscription):
    """A one-off top-up applied to a subscription."""

    type: Literal["TOP_UP"]
    product_offering_id: NonEmptyStr

    @model_validator(mode="after")
    def _target(self) -> Self:
        self._exactly_one_target(required=True)
        return self


class ExternalProductItem(_LineItemBase):
    """A product from an external catalogue, billed through the order."""

    type: Literal["EXTERNAL_PRODUCT"]
    external_product_id: NonEmptyStr
    quantity: int = Field(1, ge=1)


class ExternalItem(_LineItemBase):
    """A free-form billable item."""

    type: Literal["EXTERNAL_ITEM"]
    description: NonEmptyStr
    amount: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")
    quantity: int = Field(1, ge=1)


class SubscriptionChangeItem(_LineItemBase):
    """A plan change on an existing subscription."""

    type: Literal["SUBSCRIPTION_CHANGE"]
    subscription_id: NonEmptyStr
    product_offering_id: NonEmptyStr
    scheduled_at: IsoDate | None = None


class LicenseChangeItem(_LineItemBase):
    """An offering change on an existing license."""

    type: Literal["LICENSE_CHANGE"]
    license_id: NonEmptyStr
    product_offering_id: NonEmptyStr


class AddOnChangeItem(_LineItemBase):
    """An offering change on an existing subscription add-on."""

    type: Literal["ADD_ON_CHANGE"]
    subscription_id: NonEmptyStr
    subscription_addon_id: NonEmptyStr
    product_offering_id: NonEmptyStr
    scheduled_at: IsoDate | None = None
    reason: str | None = None


LineItem = Annotated[
    SubscriptionItem
    | LicenseItem
    | AddOnItem
    | TopUpItem
    | ExternalProductItem
    | ExternalItem
    | SubscriptionChangeItem
    | LicenseChangeItem
    | AddOnChangeItem,
    Discriminator("type"),
]
"""Any of the nine line item shapes; pydantic picks the class from `type`."""

_LINE_ITEM_ADAPTER: TypeAdapter[LineItem] = TypeAdapter(LineItem)


def parse_line_item(data: object) -> LineItem:
    """Validate one line item (e.g. a stored specification); raises pydantic's ValidationError."""
    return _LINE_ITEM_ADAPTER.validate_python(data)


def line_item_payload(item: LineItem, *, reveal_secrets: bool) -> dict[str, Any]:
    """The line item as wire JSON (camelCase, unset fields left out).

    `reveal_secrets=True` gives the real porting credentials: only for the provider request and the
    workflow's own row, never for logs, events or display (use `redact()` there). No default, on
    purpose: every caller has to decide.
    """
    context = {REVEAL_SECRETS_CONTEXT: reveal_secrets}
    dumped = _LINE_ITEM_ADAPTER.dump_python(
        item, mode="json", by_alias=True, exclude_unset=True, context=context
    )
    return cast("dict[str, Any]", dumped)
