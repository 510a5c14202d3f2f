"""Shared pydantic configuration and field types for every event model.

Wire names are camelCase (the CRM and Connect contracts); Python attributes are snake_case. Inputs
hide their values in validation errors (`hide_input_in_errors`) because a CRM event can carry porting
secrets, and a `ValidationError` often ends up in a log or a DLQ header.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ContractModel(BaseModel):
    """Base of every contract model: camelCase on the wire, immutable, unknown fields rejected.

    Unknown fields are rejected rather than ignored on purpose: a misspelt `scheduleActivationAt` would
    otherwise silently turn a scheduled activation into an immediate one.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        # In output schemas, a field with a default is still always present: say so.
        json_schema_serialization_defaults_required=True,
    )


def _date_string_only(value: Any) -> Any:
    """Accept `YYYY-MM-DD` strings (or date objects), not pydantic's lax ints or datetimes."""
    if isinstance(value, datetime):
        raise ValueError("expected a date (YYYY-MM-DD), not a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    raise ValueError("expected a date as a YYYY-MM-DD string")


def _timestamp_string_only(value: Any) -> Any:
    """Accept RFC 3339 strings (or aware datetimes), not pydantic's lax unix-epoch numbers."""
    if isinstance(value, datetime | str):
        return value
    raise ValueError("expected an RFC 3339 timestamp string")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


IsoDate = Annotated[date, BeforeValidator(_date_string_only)]
"""A calendar date; on the wire exactly `YYYY-MM-DD`."""

Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_string_only), AfterValidator(_to_utc)]
"""An RFC 3339 timestamp with an offset, normalised to UTC (serialised with a `Z`)."""

Msisdn = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164 phone number")]
"""A phone number in E.164 form (`+` and up to 15 digits)."""

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=255)]
"""An identifier or name: present, not empty, bounded."""

Metadata = dict[str, JsonValue]
"""Free-form key/value pairs, passed through untouched."""
