"""Hostile input, property-based: whatever arrives, the answer is clean — never a crash, a hang, a
5xx or a half-applied write.

- CRM records (the consumer's handler, decode + intake, through the real database): huge
  payloads, deep nesting, wrong types, invalid UTF-8, injection strings in every text field, and
  hostile binary-mode headers. Each one is processed (its inbox row and every line item written)
  or dead-lettered with nothing written at all; any other exception would stall the partition.
- The webhook endpoint (served for real, publishing to the real broker): 2xx or 4xx only, and a
  caller without the right key always gets 401.
- The admin API (served for real on the session's database): 4xx or 2xx, never 5xx; without the
  bearer token, 401.

Example counts are bounded so the module runs in seconds. The examples come from TEST_SEED
(tests/seeds.py); the ids made with uuid4 only keep one example's rows apart from another's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.admin import create_admin_app, serve_admin
from orchestrator.engine import CrmIntake, ProviderEventIntake, SystemClock
from orchestrator.events import InvalidEventError, OrderSubmittedEvent, decode_crm_event
from orchestrator.kafka import ConsumedRecord, DeadLetter
from orchestrator.localstack import LocalStack
from orchestrator.settings import Settings
from orchestrator.store import open_pool
from orchestrator.webhooks import WEBHOOK_PATH, create_webhook_app, serve_webhooks
from orchestrator.worker import crm_handler, provider_event_handler
from tests.e2e.conftest import control, sandbox, settings, webhook_port  # noqa: F401 - fixtures

FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE_TEXT = [
    "'; DROP TABLE workflows; --",
    '" OR 1=1 --',
    "$(rm -rf /)",
    "{{7*7}}${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "\x00\x01\x1b[2J",
    "\u202e\ufeff\U0001f4a9" * 50,
    "%s%n%x" * 20,
    "A" * 300_000,
    "",
    " ",
]
TABLES = ("orders", "workflows", "inbox", "outbox", "timers", "transitions")

# Regressions, each once a poison pill that stalled the partition forever (handler retried, never
# committed past): absurd nesting (RecursionError), a NUL in a text field (Postgres refuses it) and
# a number where an id belongs (a query parameter of the wrong type).
DEEP = (
    b'{"eventId": "e", "type": "t", "occurredAt": "2026-01-01T00:00:00Z", "data": {"x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}}"
)
NUL_ID = b'{"eventId": "\\u0000", "type": "t", "occurredAt": "2026-01-01T00:00:00Z", "data": {}}'
NUMERIC_ID = (
    b'{"eventId": "e2", "type": "t", "occurredAt": "2026-01-01T00:00:00Z", "data": {"subscriptionId": 0}}'
)


def base_event(order_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:crm:fuzz",
        "type": "crm.order.submitted",
        "subject": order_id,
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "orderId": order_id,
            "customer": {"customerId": "c-1", "name": "Ada"},
            "metadata": {"channel": "web"},
            "lineItems": [
                {"type": "SUBSCRIPTION", "lineItemId": "li-1", "productOfferingId": "p"},
                {
                    "type": "SUBSCRIPTION",
                    "lineItemId": "li-2",
                    "productOfferingId": "p",
                    "msisdn": "+15550001234",
                    "porting": {
                        "details": {
                            "accountNumber": "ACC-1",
                            "passcode": "1234",
                            "firstName": "Ada",
                            "lastName": "L",
                            "address": {"street1": "1 St", "city": "X", "zip": "1", "country": "US"},
                        }
                    },
                },
            ],
        },
    }


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every leaf's path in a JSON document."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))]
    return [prefix]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


wrong_types = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@st.composite
def hostile_records(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of one hostile CRM record."""
    order_id = f"fz-{uuid.uuid4().hex[:10]}"
    event = base_event(order_id)
    headers = [("content-type", b"application/cloudevents+json")]
    how = draw(st.sampled_from(["text", "type", "deep", "huge", "utf8", "bytes", "binary_mode", "drop"]))
    leaves = _paths(event)
    if how == "text":
        for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=4)):
            _set(event, path, draw(st.sampled_from(HOSTILE_TEXT) | st.text(max_size=50)))
    elif how == "type":
        _set(event, draw(st.sampled_from(leaves)), draw(wrong_types))
    elif how == "drop":
        path = draw(st.sampled_from(leaves))
        parent = event
        for part in path[:-1]:
            parent = parent[part]
        del parent[path[-1]]
    value = json.dumps(event).encode()
    if how == "deep":
        depth = draw(st.sampled_from([100, 2_000, 200_000]))
        nested = "[" * depth + "]" * depth
        value = value.replace(b'{"channel": "web"}', nested.encode())
    elif how == "huge":
        value = value.replace(b'"Ada"', b'"' + b"x" * draw(st.sampled_from([1_000_000, 5_000_000])) + b'"', 1)
    elif how == "utf8":
        at = draw(st.integers(min_value=0, max_value=len(value) - 1))
        value = (
            value[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + value[at:]
        )
    elif how == "bytes":
        value = draw(st.binary(max_size=200))
    elif how == "binary_mode":
        headers = [("content-type", draw(st.sampled_from([b"application/json", b"\xff\xfe", b""])))]
        headers += [
            (name, draw(st.binary(max_size=30) | st.sampled_from([b"1.0", b"crm.order.submitted", b"x"])))
            for name in draw(
                st.lists(st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type"]), max_size=4)
            )
        ]
        value = json.dumps(event["data"]).encode()
    key = draw(st.sampled_from([order_id.encode(), None, b"\xff\x00", b"other-order"]))
    return key, value, headers


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}


@pytest.fixture
async def pool(migrated_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with open_pool(migrated_database, min_size=1, max_size=2) as opened:
        yield opened


@FUZZ
@given(record=hostile_records())
async def test_crm_records_are_processed_or_dead_lettered_never_crash_hang_or_half_write(
    pool: asyncpg.Pool, record: tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
) -> None:
    key, value, headers = record
    intake = crm_handler(CrmIntake(pool=pool, status_topic="status", clock=SystemClock()))
    consumed = ConsumedRecord(
        topic="crm.orders.v1",
        partition=0,
        offset=0,
        key=key,
        value=value,
        headers=tuple(headers),
        timestamp_ms=0,
    )
    try:
        expected: OrderSubmittedEvent | None = None
        decoded = decode_crm_event(key=key, value=value, headers=headers)
        expected = decoded if isinstance(decoded, OrderSubmittedEvent) else None
    except InvalidEventError:
        pass
    async with pool.acquire() as conn:
        before = await _counts(conn)
        try:
            await asyncio.wait_for(intake(consumed), timeout=20)
            outcome = "processed"
        except DeadLetter:
            outcome = "dead_letter"
        after = await _counts(conn)
        if outcome == "dead_letter":
            assert after == before, f"a dead-lettered record wrote something: {before} -> {after}"
            return
        assert expected is not None, "the intake processed a record the decoder refuses"
        items = len(expected.data.line_items)
        assert after["inbox"] == before["inbox"] + 1
        assert after["orders"] == before["orders"] + 1
        assert after["workflows"] == before["workflows"] + items
        assert after["transitions"] == before["transitions"] + items
        stored = await conn.fetchval(
            "SELECT count(*) FROM workflows WHERE order_id = $1", expected.data.order_id
        )
        assert stored == items


# --- webhook endpoint --------------------------------------------------------------------------------

WEBHOOK_KEY = "fuzz-webhook-key"


@pytest.fixture
async def webhook_url(stack: LocalStack, topic_name: str) -> AsyncIterator[str]:
    app = create_webhook_app(
        bootstrap_servers=stack.kafka.bootstrap_servers, api_key=SecretStr(WEBHOOK_KEY), topic=topic_name
    )
    async with serve_webhooks(app) as base:
        yield base + WEBHOOK_PATH


def _envelope() -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "type": "subscription.updated",
        "occurredAt": "2026-01-01T00:00:00Z",
        "data": {"subscriptionId": "sub-1", "status": "ACTIVATED"},
    }


@st.composite
def webhook_bodies(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["valid", "text", "type", "deep", "huge", "utf8", "bytes", "array"]))
    envelope = _envelope()
    if how == "text":
        _set(envelope, draw(st.sampled_from(_paths(envelope))), draw(st.sampled_from(HOSTILE_TEXT)))
    elif how == "type":
        _set(envelope, draw(st.sampled_from(_paths(envelope))), draw(wrong_types))
    body = json.dumps(envelope).encode()
    if how == "deep":
        depth = draw(st.sampled_from([1_000, 100_000]))
        body = body.replace(b'"ACTIVATED"', b"[" * depth + b"]" * depth)
    elif how == "huge":
        body = body.replace(b'"ACTIVATED"', b'"' + b"x" * 2_000_000 + b'"')
    elif how == "utf8":
        body = body[:10] + b"\xff\xfe" + body[10:]
    elif how == "bytes":
        body = draw(st.binary(max_size=300))
    elif how == "array":
        body = b"[1, 2, 3]"
    return body


@FUZZ
@given(
    body=webhook_bodies(),
    key=st.sampled_from([WEBHOOK_KEY, None, "", "wrong", WEBHOOK_KEY + "x", "\u00e9" + WEBHOOK_KEY]),
)
@example(body=DEEP, key=WEBHOOK_KEY)  # regression: was a 500 (RecursionError)
async def test_webhook_endpoint_answers_2xx_or_4xx_and_401_without_the_key(
    webhook_url: str, body: bytes, key: str | None
) -> None:
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"x-api-key", key.encode("utf-8")))
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(webhook_url, content=body, headers=headers)
    if key != WEBHOOK_KEY:
        assert answer.status_code == 401, (answer.status_code, answer.text[:200])
    else:
        assert answer.status_code in (200, 400, 413, 422), (answer.status_code, answer.text[:300])


@FUZZ
@given(body=webhook_bodies())
@example(body=DEEP)
@example(body=NUL_ID)
@example(body=NUMERIC_ID)
async def test_provider_events_on_kafka_are_processed_or_dead_lettered(
    pool: asyncpg.Pool, body: bytes
) -> None:
    """What the consumer of connect.events.v1 gets when something other than our ingress (which
    refuses these) published to the topic: a DLQ record or a poke, never a poison pill."""
    intake = provider_event_handler(ProviderEventIntake(pool=pool, clock=SystemClock()))
    record = ConsumedRecord(
        topic="connect.events.v1", partition=0, offset=0, key=None, value=body, headers=(), timestamp_ms=0
    )
    async with pool.acquire() as conn:
        before = await _counts(conn)
        try:
            await asyncio.wait_for(intake(record), timeout=20)
        except DeadLetter:
            assert await _counts(conn) == before, "a dead-lettered provider event wrote something"


# --- admin API ---------------------------------------------------------------------------------------

ADMIN_TOKEN = "fuzz-admin-token-0123456789"


@pytest.fixture
async def admin_url(settings: Settings) -> AsyncIterator[str]:  # noqa: F811 - the e2e fixture
    app = create_admin_app(settings=settings, token=ADMIN_TOKEN)
    async with serve_admin(app) as url:
        yield url


hostile_strings = st.sampled_from(HOSTILE_TEXT[:-3]) | st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_strings,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def admin_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], Any]:
    """(method, path, query, json body or None)."""
    segment = quote(draw(hostile_strings | st.uuids().map(str)), safe="")
    kind = draw(st.sampled_from(["list", "show", "order", "plan", "replay", "cancel", "retry"]))
    body = draw(
        json_values
        | st.fixed_dictionaries(
            {"reason": hostile_strings, "workflow_ids": st.lists(hostile_strings, max_size=2)},
            optional={"state": json_values, "limit": json_values, "expect_fingerprint": hostile_strings},
        )
    )
    if kind == "list":
        names = [
            "state",
            "type",
            "order_id",
            "msisdn",
            "error_code",
            "older_than",
            "newer_than",
            "stuck_longer_than",
            "limit",
        ]
        query = {n: draw(hostile_strings) for n in draw(st.lists(st.sampled_from(names), max_size=4))}
        return "GET", "/api/v1/workflows", query, None
    if kind == "show":
        return "GET", f"/api/v1/workflows/{segment}", {}, None
    if kind == "order":
        return "GET", f"/api/v1/orders/{segment}", {}, None
    if kind in ("plan", "replay"):
        return "POST", "/api/v1/replay" + ("/plan" if kind == "plan" else ""), {}, body
    return "POST", f"/api/v1/workflows/{segment}/{'cancel' if kind == 'cancel' else 'retry-now'}", {}, body


@FUZZ
@given(request=admin_requests(), authorised=st.booleans(), operator=hostile_strings)
# NUL in free text (Postgres text refuses it): an order id in the path, a filter, a reason.
@example(request=("GET", "/api/v1/orders/%00", {}, None), authorised=True, operator="op")
@example(request=("GET", "/api/v1/workflows", {"order_id": "a\x00"}, None), authorised=True, operator="op")
@example(
    request=("POST", f"/api/v1/workflows/{uuid.UUID(int=1)}/cancel", {}, {"reason": "no\x00pe"}),
    authorised=True,
    operator="op",
)
async def test_admin_api_answers_4xx_never_5xx_and_401_without_the_token(
    admin_url: str, request: tuple[str, str, dict[str, str], Any], authorised: bool, operator: str
) -> None:
    method, path, query, body = request
    # Any bytes HTTP allows in a header value (the client itself refuses control characters).
    printable = "".join(ch for ch in operator if ch >= " " and ch != "\x7f").strip()
    headers = [(b"x-operator", printable.encode("utf-8")[:200])]
    if authorised:
        headers.append((b"authorization", f"Bearer {ADMIN_TOKEN}".encode()))
    async with httpx.AsyncClient(base_url=admin_url, timeout=30) as http:
        answer = await http.request(method, path, params=query, json=copy.deepcopy(body), headers=headers)
    assert answer.status_code < 500, (method, path, query, body, answer.status_code, answer.text[:500])
    if not authorised:  # 404: a path no route matches (e.g. an id with an encoded slash) is refused first
        assert answer.status_code in (401, 404), (method, path, answer.status_code)
