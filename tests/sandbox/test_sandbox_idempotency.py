"""The four idempotency cases, the 24 h window on the sandbox clock, and per-key scoping."""

from __future__ import annotations

import asyncio
import json

import httpx

from orchestrator.sandbox import RunningSandbox, SandboxControl
from tests.sandbox.conftest import API_KEY

ORDER = {"customer": {"customerId": "cust-1"}, "lineItems": [{"type": "EXTERNAL_ITEM", "lineItemId": "x1"}]}


def _body(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


async def _post(http: httpx.AsyncClient, key: str, body: bytes, path: str = "/orders") -> httpx.Response:
    return await http.post(
        path, content=body, headers={"X-Idempotency-Key": key, "Content-Type": "application/json"}
    )


async def _created(control: SandboxControl) -> list[dict[str, object]]:
    return await control.ledger(kind="effect", effect="order.created")


async def test_first_request_is_processed_and_identical_retry_is_replayed(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    first = await _post(http, "k-1", _body(ORDER))
    again = await _post(http, "k-1", _body(ORDER))
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await _created(control)) == 1


async def test_same_key_different_body_is_a_mismatch(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    await _post(http, "k-2", _body(ORDER))
    changed = await _post(http, "k-2", _body({**ORDER, "promoCode": "X"}))
    other_path = await _post(http, "k-2", _body(ORDER), path="/inventory/lease-numbers")
    assert changed.status_code == 409
    assert changed.json()["code"] == "idempotency_key_mismatch"
    assert other_path.json()["code"] == "idempotency_key_mismatch"
    assert len(await _created(control)) == 1


async def test_identical_request_while_first_runs_is_locked(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    await control.faults({"match": "POST /orders", "kind": "latency", "latencyMs": 300, "times": 1})
    first = asyncio.ensure_future(_post(http, "k-3", _body(ORDER)))
    second = None
    for _ in range(100):  # bounded: wait until the first request holds the key
        await asyncio.sleep(0.01)
        second = await _post(http, "k-3", _body(ORDER))
        if second.status_code == 409:
            break
    assert second is not None
    assert second.json()["code"] == "idempotency_key_locked"
    assert (await first).status_code == 201
    assert (await _post(http, "k-3", _body(ORDER))).status_code == 201
    assert len(await _created(control)) == 1


async def test_key_expires_after_24_hours_of_sandbox_time(
    http: httpx.AsyncClient, control: SandboxControl
) -> None:
    await _post(http, "k-4", _body(ORDER))
    await control.advance(23 * 3600)
    assert (await _post(http, "k-4", _body(ORDER))).headers.get("idempotent-replayed") == "true"
    await control.advance(3600)
    fresh = await _post(http, "k-4", _body(ORDER))
    assert fresh.status_code == 201
    assert "idempotent-replayed" not in fresh.headers
    assert len(await _created(control)) == 2


async def test_keys_are_scoped_per_api_key(http: httpx.AsyncClient, control: SandboxControl) -> None:
    await _post(http, "k-5", _body(ORDER))
    other = await http.post(
        "/orders",
        content=_body({**ORDER, "promoCode": "Y"}),
        headers={"X-Idempotency-Key": "k-5", "Content-Type": "application/json", "X-API-Key": "other-key"},
    )
    assert other.status_code == 201
    assert len(await _created(control)) == 2


async def test_error_answers_are_cached_too(http: httpx.AsyncClient) -> None:
    bad = _body({"customer": {"customerId": "c"}, "lineItems": [{"type": "NOPE", "lineItemId": "a"}]})
    first = await _post(http, "k-6", bad)
    again = await _post(http, "k-6", bad)
    assert first.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_overlong_key_is_rejected(http: httpx.AsyncClient) -> None:
    answer = await _post(http, "k" * 257, _body(ORDER))
    assert answer.status_code == 400


async def test_wrong_api_key_is_401(http: httpx.AsyncClient) -> None:
    answer = await http.get("/orders/x", headers={"X-API-Key": "nope"})
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


async def test_a_client_killed_mid_body_leaves_no_trace_under_its_key(
    sandbox: RunningSandbox, http: httpx.AsyncClient, control: SandboxControl
) -> None:
    # A worker SIGKILLed while sending: the headers and half the body arrive, then the socket closes.
    body = _body(ORDER)
    url = httpx.URL(sandbox.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST /orders HTTP/1.1\r\nHost: {url.host}\r\nX-API-Key: {API_KEY}\r\n"
        f"X-Idempotency-Key: k-cut\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    del reader
    gone: list[dict[str, object]] = []
    for _ in range(200):  # bounded: the server notices the closed socket asynchronously
        gone = [e for e in await control.ledger(kind="request") if e["outcome"] == "client_gone"]
        if gone:
            break
        await asyncio.sleep(0.01)
    assert [e["idempotencyKey"] for e in gone] == ["k-cut"]
    # Its honest retry (the whole body, same key) is processed, not refused as a mismatch.
    retry = await _post(http, "k-cut", body)
    assert retry.status_code == 201, retry.text
    assert len(await _created(control)) == 1
