"""Why a CRM event was refused: a stable reason code for the DLQ plus readable field errors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orchestrator.errors import OrchestratorError

_MAX_DLQ_ERROR_CHARS = 2000  # a Kafka header, not a document: keep it readable and bounded


class DlqReason(StrEnum):
    """Values of the `dlq_reason` header. Stable: operators and alerts key on them."""

    MISSING_VALUE = "missing_value"
    """The record has no value (a tombstone)."""
    INVALID_UTF8 = "invalid_utf8"
    """The value or a `ce_*` header is not UTF-8."""
    MALFORMED_JSON = "malformed_json"
    """The value is not JSON."""
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    """`content-type` is neither CloudEvents structured JSON nor `application/json`."""
    INVALID_ENVELOPE = "invalid_envelope"
    """The CloudEvents attributes are missing or wrong."""
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    """A CloudEvents `type` the orchestrator does not handle."""
    UNKNOWN_LINE_ITEM_TYPE = "unknown_line_item_type"
    """A line item whose `type` is none of the nine Connect types."""
    INVALID_DATA = "invalid_data"
    """`data` breaks the schema or a cross-field rule."""
    SUBJECT_MISMATCH = "subject_mismatch"
    """CloudEvents `subject` differs from `data.orderId`."""
    KEY_MISMATCH = "key_mismatch"
    """The Kafka key differs from `data.orderId` (would break per-order ordering)."""
    UNKNOWN_ORDER = "unknown_order"
    """Set by the engine, not the decoder: an update or cancellation for an order it never received."""


class FieldError(NamedTuple):
    """One problem, located: `loc` is a dotted path such as `data.lineItems.0.msisdn`."""

    loc: str
    message: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class InvalidEventError(OrchestratorError):
    """A CRM record that is not a valid event; it goes to the DLQ with `dlq_reason` and `dlq_error`.

    The message never contains input values (porting secrets could be among them): only locations,
    pydantic's value-free messages and our own rule texts.
    """

    code = "invalid_event"
    retryable = False

    def __init__(self, *, reason: DlqReason, errors: Sequence[FieldError]) -> None:
        self.reason = reason
        self.errors = tuple(errors)
        super().__init__(_summary(reason, self.errors), reason=reason.value)

    @property
    def dlq_error(self) -> str:
        """The human text for the `dlq_error` header (bounded in length)."""
        return self.message

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        """`dlq_reason` and `dlq_error`; the engine adds the source topic/partition/offset and time."""
        return [("dlq_reason", self.reason.value.encode()), ("dlq_error", self.dlq_error.encode())]


def _summary(reason: DlqReason, errors: Sequence[FieldError]) -> str:
    text = f"{reason.value}: " + "; ".join(str(error) for error in errors)
    if len(text) > _MAX_DLQ_ERROR_CHARS:
        text = text[: _MAX_DLQ_ERROR_CHARS - 15] + " ... (truncated)"
    return text


def field_errors(exc: ValidationError, *, prefix: Iterable[str | int] = ()) -> list[FieldError]:
    """pydantic errors as `FieldError`s, without the offending input values."""
    head = [str(part) for part in prefix]
    return [_one(detail, head) for detail in exc.errors(include_input=False, include_url=False)]


def _one(detail: ErrorDetails, head: list[str]) -> FieldError:
    loc = ".".join([*head, *(str(part) for part in detail["loc"])])
    message = detail["msg"].removeprefix("Value error, ")
    return FieldError(loc=loc, message=message)
