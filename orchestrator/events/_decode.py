"""Decoding a Kafka record from `crm.orders.v1` into a `CrmEvent`, in either CloudEvents binding.

Structured mode: `content-type: application/cloudevents+json` and the whole event as the value.
Binary mode: `ce_*` headers carry the attributes and the value is `data` (`content-type:
application/json`). Anything else raises `InvalidEventError` with a `DlqReason`; no other exception
escapes, whatever the bytes (a property test holds us to that).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from orchestrator.events._crm import (
    CRM_DATA_CLASSES,
    CRM_EVENT_CLASSES,
    CloudEventEnvelope,
    CrmEvent,
    CrmEventType,
    LineItemUpdated,
    OrderCancelled,
    OrderSubmitted,
)
from orchestrator.events._errors import DlqReason, FieldError, InvalidEventError, field_errors
from orchestrator.events._line_items import PortingAddress, PortingDetails
from orchestrator.events._secrets import REDACTED, is_sensitive_key

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BINARY_CONTENT_TYPE = "application/json"
_CE_PREFIX = "ce_"
_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
# Field names of the porting objects: not secrets, and error locations stay readable with them.
_KNOWN_PORTING_KEYS = frozenset(
    {"details"}
    | {field.alias or name for name, field in PortingDetails.model_fields.items()}
    | {field.alias or name for name, field in PortingAddress.model_fields.items()}
)


def decode_crm_event(
    *, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> CrmEvent:
    """Decode and validate one CRM record, or raise `InvalidEventError` saying why.

    A missing key is accepted; a key that is present must equal `data.orderId`, because the key is
    what keeps one order's events in order on one partition. Header values may be None (Kafka allows
    it); only `content-type` and `ce_*` headers are read.
    """
    try:
        raw_headers = _decode_headers(headers)
        content_type = _media_type(raw_headers.get("content-type"))
        if value is None:
            _fail(DlqReason.MISSING_VALUE, "", "the record has no value")
        body = _parse_json(value)
        secrets = frozenset(_secret_strings(body))
        try:
            envelope = _envelope(content_type=content_type, headers=raw_headers, body=body)
            event = _validate(envelope)
            _check_key(key=key, order_id=event.data.order_id)
        except InvalidEventError as exc:
            clean = _scrubbed(exc, secrets)
            if clean is exc:
                raise
            raise clean from None  # the original text held a secret: do not chain it into a traceback
    except InvalidEventError:
        raise
    except RecursionError as exc:  # absurdly nested JSON: refuse it like any other malformed value
        raise InvalidEventError(
            reason=DlqReason.MALFORMED_JSON, errors=[FieldError("", "JSON nested too deeply")]
        ) from exc
    return event


def _fail(reason: DlqReason, loc: str, message: str) -> NoReturn:
    raise InvalidEventError(reason=reason, errors=[FieldError(loc, message)])


def _decode_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    """Lower-cased header names → UTF-8 values, for `content-type` and the `ce_*` headers only."""
    decoded: dict[str, str] = {}
    for name, raw in headers:
        lowered = name.lower()
        if lowered != "content-type" and not lowered.startswith(_CE_PREFIX):
            continue  # tracing and other headers are not ours to judge
        if raw is None:  # Kafka allows a header without a value
            _fail(DlqReason.INVALID_ENVELOPE, f"header {lowered}", "header has no value")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            _fail(DlqReason.INVALID_UTF8, f"header {lowered}", "header value is not UTF-8")
        if lowered in decoded and decoded[lowered] != text:
            _fail(DlqReason.INVALID_ENVELOPE, f"header {lowered}", "header repeated with different values")
        decoded[lowered] = text
    return decoded


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def _parse_json(value: bytes) -> Any:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        _fail(DlqReason.INVALID_UTF8, "value", "the value is not UTF-8")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and the NaN/Infinity refusal
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        _fail(DlqReason.MALFORMED_JSON, "value", f"not JSON: {message}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _envelope(*, content_type: str | None, headers: dict[str, str], body: Any) -> dict[str, Any]:
    """The event as one CloudEvents JSON object, whichever binding carried it."""
    if content_type == _BATCH_CONTENT_TYPE:
        _fail(
            DlqReason.UNSUPPORTED_CONTENT_TYPE, "header content-type", "CloudEvents batches are not accepted"
        )
    structured = content_type == STRUCTURED_CONTENT_TYPE or (
        content_type is None and "ce_specversion" not in headers
    )
    if structured:
        if not isinstance(body, dict):
            _fail(DlqReason.INVALID_ENVELOPE, "", "a structured CloudEvent must be a JSON object")
        return body
    if content_type not in (None, BINARY_CONTENT_TYPE):
        _fail(
            DlqReason.UNSUPPORTED_CONTENT_TYPE,
            "header content-type",
            f"expected {STRUCTURED_CONTENT_TYPE} or {BINARY_CONTENT_TYPE}",
        )
    if "ce_specversion" not in headers:
        _fail(DlqReason.INVALID_ENVELOPE, "header ce_specversion", "binary mode needs the ce_* headers")
    envelope: dict[str, Any] = {
        name[len(_CE_PREFIX) :]: text for name, text in headers.items() if name != "content-type"
    }
    if content_type is not None:
        envelope["datacontenttype"] = content_type
    envelope["data"] = body
    return envelope


def _validate(envelope: dict[str, Any]) -> CrmEvent:
    try:
        head = CloudEventEnvelope.model_validate({k: v for k, v in envelope.items() if k != "data"})
    except ValidationError as exc:
        raise InvalidEventError(reason=DlqReason.INVALID_ENVELOPE, errors=field_errors(exc)) from exc
    if "data" not in envelope:
        _fail(DlqReason.INVALID_ENVELOPE, "data", "the event has no data")
    try:
        event_type = CrmEventType(head.type)
    except ValueError:
        _fail(DlqReason.UNKNOWN_EVENT_TYPE, "type", f"unknown event type {head.type!r}")
    data = _validate_data(event_type, envelope["data"])
    if data.order_id != head.subject:
        _fail(DlqReason.SUBJECT_MISMATCH, "subject", "subject must equal data.orderId")
    attributes = head.model_dump(exclude_unset=True)
    return CRM_EVENT_CLASSES[event_type].model_validate({**attributes, "data": data})


def _validate_data(event_type: CrmEventType, data: Any) -> OrderSubmitted | LineItemUpdated | OrderCancelled:
    try:
        return CRM_DATA_CLASSES[event_type].model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        unknown_item_type = any(
            error["type"] == "union_tag_invalid" and error["loc"][:1] in (("lineItems",), ("lineItem",))
            for error in errors
        )
        reason = DlqReason.UNKNOWN_LINE_ITEM_TYPE if unknown_item_type else DlqReason.INVALID_DATA
        raise InvalidEventError(reason=reason, errors=field_errors(exc, prefix=["data"])) from exc


def _check_key(*, key: bytes | None, order_id: str) -> None:
    if key is None:
        return
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        _fail(DlqReason.INVALID_UTF8, "key", "the Kafka key is not UTF-8")
    if text != order_id:
        _fail(DlqReason.KEY_MISMATCH, "key", "the Kafka key must equal data.orderId")


def _secret_strings(node: Any, *, inside_secret: bool = False) -> Iterator[str]:
    """Every string under a sensitive key, so that no error message can echo one by accident."""
    if isinstance(node, dict):
        for name, child in node.items():
            if inside_secret and len(str(name)) >= 3 and str(name) not in _KNOWN_PORTING_KEYS:
                yield str(name)  # a key inside a secret object can be a secret pasted in the wrong place
            yield from _secret_strings(child, inside_secret=inside_secret or is_sensitive_key(str(name)))
    elif isinstance(node, list):
        for child in node:
            yield from _secret_strings(child, inside_secret=inside_secret)
    elif inside_secret and isinstance(node, str) and len(node) >= 3:
        yield node


def _scrubbed(exc: InvalidEventError, secrets: frozenset[str]) -> InvalidEventError:
    """Defence in depth: the same error with any secret string masked out of its messages."""
    if not secrets or not any(secret in exc.message for secret in secrets):
        return exc
    cleaned = []
    for error in exc.errors:
        loc, message = error.loc, error.message
        for secret in sorted(secrets, key=len, reverse=True):
            loc, message = loc.replace(secret, REDACTED), message.replace(secret, REDACTED)
        cleaned.append(FieldError(loc, message))
    return InvalidEventError(reason=exc.reason, errors=cleaned)
