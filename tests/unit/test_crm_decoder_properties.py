"""Property tests: whatever a producer puts on the topic, the decoder answers with a CrmEvent or an
InvalidEventError, never with any other exception (which would stall the consumer on a poison pill)."""

from __future__ import annotations

import copy
import json
from typing import Any

from crm_samples import ORDER_ID, SECRETS, assigned_item, leased_item, ported_item, structured, submitted_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.events import (
    CrmEvent,
    DlqReason,
    InvalidEventError,
    LineItemUpdatedEvent,
    OrderCancelledEvent,
    OrderSubmittedEvent,
    decode_crm_event,
    line_item_payload,
    parse_line_item,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
header_names = st.sampled_from(
    [
        "content-type",
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "ce_x",
        "other",
    ]
)
header_values = (
    st.none()
    | st.binary(max_size=40)
    | st.sampled_from(
        [
            b"application/json",
            b"application/cloudevents+json",
            b"1.0",
            b"crm.order.submitted",
            ORDER_ID.encode(),
        ]
    )
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)


def decode_or_refuse(**record: Any) -> CrmEvent | InvalidEventError:
    """The decoder's answer; any other exception propagates and fails the property."""
    try:
        return decode_crm_event(**record)
    except InvalidEventError as exc:
        return exc


@PROPERTY_SETTINGS
@given(key=st.none() | st.binary(max_size=20), value=st.none() | st.binary(max_size=200), headers=headers)
def test_any_bytes_give_an_event_or_an_invalid_event_error(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    outcome = decode_or_refuse(key=key, value=value, headers=headers)

    if isinstance(outcome, InvalidEventError):
        assert isinstance(outcome.reason, DlqReason)
        assert outcome.dlq_error
    else:
        assert isinstance(outcome, OrderSubmittedEvent | LineItemUpdatedEvent | OrderCancelledEvent)
        assert outcome.specversion == "1.0"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for name, child in node.items():
            found += _paths(child, (*prefix, name))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


BASE_EVENT = structured(
    "crm.order.submitted", submitted_data(assigned_item(), leased_item(), ported_item(temp=True))
)
BASE_PATHS = _paths(BASE_EVENT)


@PROPERTY_SETTINGS
@given(path=st.sampled_from(BASE_PATHS), replacement=json_values, binary_mode=st.booleans())
def test_any_mutation_of_a_valid_event_gives_an_event_or_an_invalid_event_error(
    path: tuple[Any, ...], replacement: Any, binary_mode: bool
) -> None:
    event = _replace(copy.deepcopy(BASE_EVENT), path, replacement)
    if binary_mode and isinstance(event, dict):
        ce_headers = [(f"ce_{k}", json.dumps(v).strip('"').encode()) for k, v in event.items() if k != "data"]
        record = {"key": None, "value": json.dumps(event.get("data")).encode(), "headers": ce_headers}
    else:
        record = {"key": None, "value": json.dumps(event).encode(), "headers": []}

    outcome = decode_or_refuse(**record)

    if isinstance(outcome, InvalidEventError):
        for secret in SECRETS:
            assert secret not in outcome.dlq_error
    else:
        assert isinstance(outcome, OrderSubmittedEvent)
        assert outcome.subject == outcome.data.order_id


msisdns = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
secret_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@PROPERTY_SETTINGS
@given(msisdn=msisdns, account=secret_text, passcode=secret_text, temp=st.booleans())
def test_a_valid_subscription_round_trips_through_its_revealed_payload(
    msisdn: str, account: str, passcode: str, temp: bool
) -> None:
    item = parse_line_item(
        {
            "type": "SUBSCRIPTION",
            "lineItemId": "li",
            "productOfferingId": "p",
            "msisdn": msisdn,
            "tempNumber": temp,
            "porting": {"details": {"accountNumber": account, "passcode": passcode}},
        }
    )

    payload = line_item_payload(item, reveal_secrets=True)

    assert parse_line_item(payload) == item
    assert payload["porting"]["details"] == {"accountNumber": account, "passcode": passcode}
