"""Client pieces without a server: canonical bytes, classification, Retry-After, models, lifecycle."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from enum import StrEnum

import httpx
import pytest
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.connect import (
    CancelReason,
    ConnectClient,
    ConnectClientStateError,
    IdempotencyKeyLocked,
    IdempotencyKeyMismatch,
    InvalidRequestError,
    LineItemType,
    Order,
    OrderState,
    Outcome,
    PortingDetails,
    PreparedRequest,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderPreconditionFailed,
    ProviderRateLimited,
    ProviderRejected,
    ProviderStateConflict,
    ProviderUnavailable,
    Requests,
    SubmitOrderRequest,
    Subscription,
    SubscriptionStatus,
    canonical_json,
    classify_response,
    parse_retry_after,
)
from orchestrator.connect._transport import build_http_client
from orchestrator.events import CancellationReason
from orchestrator.events import LineItemType as CrmLineItemType
from orchestrator.settings import ConnectSettings

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8))
def test_canonical_json_ignores_key_order_and_round_trips(value: dict[str, object]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(reordered)
    assert json.loads(canonical_json(value)) == value


def test_canonical_json_of_models_is_compact_sorted_and_drops_nones() -> None:
    body = canonical_json(SubmitOrderRequest(metadata={"b": 1, "a": "å"}))
    assert body == '{"metadata":{"a":"å","b":1}}'.encode()


def test_canonical_json_refuses_naive_datetimes() -> None:
    with pytest.raises(TypeError):
        canonical_json({"at": datetime(2030, 1, 1)})


@pytest.mark.parametrize(
    ("status", "code", "expected", "outcome"),
    [
        (500, None, ProviderUnavailable, Outcome.RETRY),
        (503, None, ProviderUnavailable, Outcome.RETRY),
        (429, None, ProviderRateLimited, Outcome.RETRY),
        (409, "idempotency_key_locked", IdempotencyKeyLocked, Outcome.RETRY),
        (409, "idempotency_key_mismatch", IdempotencyKeyMismatch, Outcome.BUG),
        (409, "invalid_state", ProviderStateConflict, Outcome.RECONCILE),
        (400, "validation_error", ProviderRejected, Outcome.PERMANENT),
        (401, "unauthorized", ProviderAuthError, Outcome.PERMANENT),
        (404, "not_found", ProviderNotFound, Outcome.PERMANENT),
        (412, "order_invalid", ProviderPreconditionFailed, Outcome.PERMANENT),
    ],
)
def test_classification(
    status: int, code: str | None, expected: type[ProviderError], outcome: Outcome
) -> None:
    body = json.dumps({"message": "m", "code": code, "details": [{"message": "d", "property": "p"}]}).encode()
    error = classify_response(status=status, headers={}, content=body, method="POST", path="/x")
    assert type(error) is expected
    assert error.outcome is outcome
    assert error.retryable is (outcome is Outcome.RETRY)
    stored = error.to_dict()
    assert stored["code"] == expected.code
    assert stored["provider_details"] == [{"message": "d", "property": "p"}]
    assert json.loads(json.dumps(stored)) == stored


def test_success_is_not_an_error_and_garbage_bodies_still_classify() -> None:
    assert classify_response(status=201, headers={}, content=b"{}", method="GET", path="/x") is None
    error = classify_response(status=502, headers={}, content=b"<html>", method="GET", path="/x")
    assert isinstance(error, ProviderUnavailable)


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None
    error = classify_response(
        status=429, headers={"retry-after": "9999"}, content=b"", method="GET", path="/", max_retry_after_s=60
    )
    assert error is not None
    assert error.retry_after_s == 60


def test_unknown_enum_values_and_extra_fields_are_tolerated() -> None:
    order = Order.model_validate({"orderId": "o", "state": "ON_HOLD_NEW", "brandNewField": {"x": 1}})
    assert order.state == "ON_HOLD_NEW"
    assert order.model_extra == {"brandNewField": {"x": 1}}
    known = Subscription.model_validate({"subscriptionId": "s", "status": "ACTIVATED"})
    assert known.status is SubscriptionStatus.ACTIVATED
    assert Order.model_validate({"orderId": "o", "state": "COMPLETED"}).state is OrderState.COMPLETED


def test_secrets_stay_out_of_reprs() -> None:
    details = PortingDetails(account_number="ACC-SECRET", passcode="PIN-SECRET", first_name="Ada")
    assert "SECRET" not in repr(details)
    config = ConnectSettings(api_key=SecretStr("KEY-SECRET")).to_config()
    client = ConnectClient(config=config)
    assert config.api_key == "KEY-SECRET"
    assert "KEY-SECRET" not in repr(client)
    assert "KEY-SECRET" not in repr(config)


def test_idempotency_key_length_is_checked_before_sending() -> None:
    with pytest.raises(InvalidRequestError):
        Requests.get_order("o").__class__(method="POST", path="/orders", idempotency_key="k" * 257)


def test_prepared_requests_are_deterministic_and_storable() -> None:
    one = Requests.submit_order("ord/1", SubmitOrderRequest(metadata={"z": 1, "a": 2}), idempotency_key="k")
    two = Requests.submit_order("ord/1", SubmitOrderRequest(metadata={"a": 2, "z": 1}), idempotency_key="k")
    assert one == two
    assert one.path == "/orders/ord%2F1/submit"  # an id cannot add path levels
    assert PreparedRequest.from_dict(json.loads(json.dumps(one.to_dict()))) == one


async def test_lifecycle_guards_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"orderId": "o", "state": "PENDING"})

    client = ConnectClient(
        config=ConnectSettings(api_key=SecretStr("abc")).to_config(), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(ConnectClientStateError):
        await client.get_order("o")
    async with client:
        with pytest.raises(ConnectClientStateError):
            await client.start()
        await client.submit_order("o", idempotency_key="key-1")
    await client.close()  # idempotent
    [request] = seen
    assert request.headers["x-api-key"] == "abc"
    assert request.headers["x-idempotency-key"] == "key-1"
    assert request.content == b"{}"


async def test_mismatch_is_logged_loudly_and_raised() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"code": "idempotency_key_mismatch", "message": "different request"})

    config = ConnectSettings(api_key=SecretStr("abc")).to_config()
    async with ConnectClient(config=config, transport=httpx.MockTransport(handler)) as client:
        with structlog.testing.capture_logs() as logs:
            response = await client.send(Requests.submit_order("o", idempotency_key="k"))
        assert response.outcome is Outcome.BUG
        with pytest.raises(IdempotencyKeyMismatch) as caught:
            response.raise_for_outcome()
    assert caught.value.retryable is False
    assert [(e["event"], e["log_level"]) for e in logs] == [("connect.idempotency_key_mismatch", "error")]
    assert "abc" not in repr(logs)


async def test_requests_spread_over_small_pools_the_least_busy_first() -> None:
    # httpcore's per-request cost grows with its pool, so connections are split into pools of at
    # most eight; concurrent requests must spread evenly over them.
    gate = asyncio.Event()
    arrived = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        await gate.wait()
        return httpx.Response(200, json={})

    config = ConnectSettings(
        api_key=SecretStr("abc"), max_concurrency=20, rate_limit_per_s=1000.0
    ).to_config()
    http = build_http_client(config, transport=httpx.MockTransport(handler))
    requests = [asyncio.create_task(http.request("GET", "/orders/x")) for _ in range(20)]
    for _ in range(200):  # bounded: until every request reached the transport
        if arrived == 20:
            break
        await asyncio.sleep(0.005)
    assert sorted(http.in_flight()) == [6, 7, 7]
    gate.set()
    answers = await asyncio.gather(*requests)
    assert [a.status_code for a in answers] == [200] * 20
    assert http.in_flight() == [0, 0, 0]
    await http.aclose()


@pytest.mark.parametrize(
    ("ours", "crm"), [(LineItemType, CrmLineItemType), (CancelReason, CancellationReason)]
)
def test_connects_enums_and_the_crm_contracts_are_the_same(ours: type[StrEnum], crm: type[StrEnum]) -> None:
    # The CRM passes Connect's values straight through, so the two definitions must never drift.
    assert {m.name: m.value for m in ours} == {m.name: m.value for m in crm}
