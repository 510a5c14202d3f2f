"""The request builders the engine sends through: the bytes it stored before keep coming out
unchanged, ids cannot add path levels, and keys always fit the provider's limit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.connect import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    CancelOrderRequest,
    CreateOrderRequest,
    InvalidRequestError,
    LineItem,
    PreparedRequest,
    Requests,
    SubmitOrderRequest,
    SubscriptionLineItem,
    bounded_key,
    canonical_json,
    parse_path,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=8)

# A CRM line item as the engine holds it: `None`s and extra fields included, all sent as they are.
LINE_ITEM: dict[str, Any] = {
    "type": "SUBSCRIPTION",
    "lineItemId": "li-1",
    "productOfferingId": "basic",
    "msisdn": None,
    "porting": {"details": {"accountNumber": "ACC", "passcode": "1234"}},
    "metadata": {"z": 1, "a": [None, 2]},
}
NASTY_IDS = ["a/b", "what?", "frag#ment", "with space", "per%cent", "ü", "..", "x" * 255]


def _before(method: str, path: str, body: Any, key: str | None) -> PreparedRequest:
    """A request exactly as the engine built it by hand before it called `Requests`."""
    data = None if method == "DELETE" else canonical_json(body)
    return PreparedRequest(method=method, path=path, body=data, idempotency_key=key)


def test_the_engines_calls_come_out_byte_for_byte_as_before() -> None:
    create = {"customer": {"customerId": "c"}, "lineItems": [], "metadata": {"crmOrderId": "o", "x": None}}
    cancel_sub = {"when": "CancelNextDay", "reason": "OTHER", "comment": "cancelled by the CRM order"}
    cases = [
        (Requests.create_order(create, idempotency_key="k1"), _before("POST", "/orders", create, "k1")),
        (
            Requests.add_line_item("ord", LINE_ITEM, idempotency_key="k2"),
            _before("POST", "/orders/ord/line-items", LINE_ITEM, "k2"),
        ),
        (
            Requests.update_line_item("ord", LINE_ITEM, line_item_id="li-1", idempotency_key="k3"),
            _before("PUT", "/orders/ord/line-items/li-1", {"lineItem": LINE_ITEM}, "k3"),
        ),
        (
            Requests.remove_line_item("ord", "li-1", idempotency_key="k4"),
            _before("DELETE", "/orders/ord/line-items/li-1", None, "k4"),
        ),
        (Requests.submit_order("ord", idempotency_key="k5"), _before("POST", "/orders/ord/submit", {}, "k5")),
        (
            Requests.cancel_order("ord", {"reason": "CRM order cancelled"}, idempotency_key="k6"),
            _before("POST", "/orders/ord/cancel", {"reason": "CRM order cancelled"}, "k6"),
        ),
        (
            Requests.cancel_subscription("sub", cancel_sub, idempotency_key="k7"),
            _before("POST", "/subscriptions/sub/cancel", cancel_sub, "k7"),
        ),
        (Requests.get_order("ord"), PreparedRequest(method="GET", path="/orders/ord")),
        (Requests.get_subscription("sub"), PreparedRequest(method="GET", path="/subscriptions/sub")),
        (Requests.get_in_porting("sub"), PreparedRequest(method="GET", path="/subscriptions/sub/in-porting")),
    ]
    for built, before in cases:
        assert built == before


@given(bodies)
def test_a_mapping_is_sent_as_given(body: dict[str, Any]) -> None:
    # Stored intents are re-sent byte for byte: a mapping is never reshaped (no `None` dropped).
    assert Requests.add_line_item("o", body, idempotency_key="k").body == canonical_json(body)
    updated = Requests.update_line_item("o", body, line_item_id="li", idempotency_key="k")
    assert updated.body == canonical_json({"lineItem": body})
    assert Requests.create_order(body, idempotency_key="k").body == canonical_json(body)


def test_models_still_serialise_by_alias_without_unset_fields() -> None:
    item = SubscriptionLineItem(line_item_id="li/1", product_offering_id="p")
    assert Requests.update_line_item("o", item, idempotency_key="k") == PreparedRequest(
        method="PUT",
        path="/orders/o/line-items/li%2F1",
        body=b'{"lineItem":{"lineItemId":"li/1","productOfferingId":"p","type":"SUBSCRIPTION"}}',
        idempotency_key="k",
    )
    explicit = Requests.update_line_item("o", item, line_item_id="other", idempotency_key="k")
    assert explicit.path == "/orders/o/line-items/other"
    assert Requests.create_order(
        CreateOrderRequest(customer={"customerId": "c"}), idempotency_key="k"
    ).body == (b'{"customer":{"customerId":"c"},"lineItems":[]}')
    assert Requests.submit_order("o", SubmitOrderRequest(), idempotency_key="k").body == b"{}"
    assert Requests.cancel_order("o", CancelOrderRequest(reason="r")).body == b'{"reason":"r"}'


def test_a_mapping_update_needs_its_line_item_id() -> None:
    with pytest.raises(TypeError, match="line_item_id"):
        Requests.update_line_item("o", LINE_ITEM, idempotency_key="k")  # type: ignore[call-overload]


def test_a_delete_may_go_without_a_key() -> None:
    assert Requests.remove_line_item("o", "li").idempotency_key is None


@pytest.mark.parametrize("nasty", NASTY_IDS)
def test_every_id_is_one_path_segment_and_reads_back(nasty: str) -> None:
    requests = [
        (Requests.get_order(nasty), ("orders", nasty)),
        (Requests.add_line_item(nasty, LINE_ITEM, idempotency_key="k"), ("orders", nasty, "line-items")),
        (
            Requests.update_line_item(nasty, LINE_ITEM, line_item_id=nasty, idempotency_key="k"),
            ("orders", nasty, "line-items", nasty),
        ),
        (Requests.remove_line_item("o", nasty), ("orders", "o", "line-items", nasty)),
        (Requests.submit_order(nasty, idempotency_key="k"), ("orders", nasty, "submit")),
        (Requests.cancel_order(nasty, {"reason": "r"}, idempotency_key="k"), ("orders", nasty, "cancel")),
        (Requests.get_subscription(nasty), ("subscriptions", nasty)),
        (Requests.get_in_porting(nasty), ("subscriptions", nasty, "in-porting")),
        (Requests.cancel_subscription(nasty, {}, idempotency_key="k"), ("subscriptions", nasty, "cancel")),
    ]
    for request, segments in requests:
        assert not any(c in request.path for c in "?# ")
        assert len(request.path.strip("/").split("/")) == len(segments)
        assert parse_path(request.path) == segments


def test_parse_path_reads_paths_stored_before_ids_were_escaped() -> None:
    assert parse_path("/orders/ord-1/line-items/li-1") == ("orders", "ord-1", "line-items", "li-1")
    assert parse_path("/subscriptions/sub-1/cancel") == ("subscriptions", "sub-1", "cancel")
    assert parse_path("/orders") == ("orders",)


def test_short_keys_are_unchanged() -> None:
    # Keys already stored with intents (and known to the provider) must come out the same.
    for key in ["k", "wf-6f1c0d9e-0000-4000-8000-000000000001-add_item-g0", "x" * MAX_IDEMPOTENCY_KEY_LENGTH]:
        assert bounded_key(key) == key


@given(st.text(min_size=MAX_IDEMPOTENCY_KEY_LENGTH + 1, max_size=2000))
def test_long_keys_are_shortened_deterministically(key: str) -> None:
    short = bounded_key(key)
    assert len(short) <= MAX_IDEMPOTENCY_KEY_LENGTH
    assert short == bounded_key(key)
    assert bounded_key(short) == short


def test_long_keys_sharing_a_prefix_stay_distinct() -> None:
    prefix = "order-" + "o" * 300
    keys = {bounded_key(f"{prefix}{n}-create_order-g0") for n in range(100)}
    assert len(keys) == 100
    assert all(k.startswith("order-ooo") for k in keys)


def test_an_order_id_of_255_characters_gives_a_valid_key() -> None:
    order_id = "o" * 255
    key = f"order-{order_id}-create_order-g0"
    request = Requests.create_order({"customer": {}}, idempotency_key=key)
    assert request.idempotency_key == bounded_key(key)
    assert len(request.idempotency_key) == MAX_IDEMPOTENCY_KEY_LENGTH
    item = Requests.add_line_item(order_id, LINE_ITEM, idempotency_key=f"wf-{order_id}-add_item-g12")
    assert item.idempotency_key is not None
    assert len(item.idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH


def test_a_hand_built_request_still_refuses_a_long_key() -> None:
    with pytest.raises(InvalidRequestError):
        PreparedRequest(method="POST", path="/orders", idempotency_key="k" * 257)


def test_line_item_models_accept_what_the_engine_sends() -> None:
    assert LineItem.model_validate(LINE_ITEM).line_item_id == "li-1"
