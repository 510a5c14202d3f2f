"""The webhook ingress over real HTTP (uvicorn on 127.0.0.1) and a real broker: the caller is
checked, bad bodies get a clear 4xx, and 2xx means the event is already on the topic."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from orchestrator.localstack import LocalStack
from orchestrator.webhooks import WEBHOOK_PATH, create_webhook_app, serve_webhooks
from tests.kafka.support import read_all

KEY = "webhook-secret-123"
PARTITIONS = 3


NO_EVENT_ID = {"type": "x", "occurredAt": "2026-11-25T10:00:00Z", "data": {}}
NAIVE_TIME = "2026-11-25T10:00:00"  # no offset: ambiguous, refused


def event(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "eventId": f"evt-{uuid.uuid4().hex[:8]}",
        "type": "subscription.activated",
        "occurredAt": "2026-11-25T10:00:00Z",
        "data": {"subscriptionId": "sub-42", "orderId": "ord-7"},
    }
    body.update(overrides)
    return body


@pytest.fixture
async def topic(stack: LocalStack) -> str:
    """A fresh connect-events topic per test."""
    name = f"connect-events-{uuid.uuid4().hex[:8]}"
    await stack.kafka.create_topics([name], partitions=PARTITIONS)
    return name


@pytest.fixture
async def client(stack: LocalStack, topic: str) -> AsyncIterator[httpx.AsyncClient]:
    """The ingress served by uvicorn on a free loopback port, talking to the session broker."""
    app = create_webhook_app(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        api_key=SecretStr(KEY),
        topic=topic,
        max_body_bytes=64 * 1024,
    )
    async with serve_webhooks(app, port=0) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield http


async def end_offsets(bootstrap: str, topic: str) -> int:
    """Records acknowledged on `topic` so far (sum of the partitions' high watermarks)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": KEY + "x"}])
async def test_a_caller_without_the_key_is_refused(
    client: httpx.AsyncClient, stack: LocalStack, topic: str, headers: dict[str, str]
) -> None:
    response = await client.post(WEBHOOK_PATH, json=event(), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert await end_offsets(stack.kafka.bootstrap_servers, topic) == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", (400, "invalid_json", "not UTF-8 JSON")),
        (b"\xff\xfe", (400, "invalid_json", "not UTF-8 JSON")),
        (b"[1, 2]", (400, "invalid_json", "JSON object")),
        (json.dumps(event(eventId="")).encode(), (422, "invalid_envelope", "eventId")),
        (json.dumps(NO_EVENT_ID).encode(), (422, "invalid_envelope", "eventId")),
        (json.dumps(event(occurredAt="yesterday")).encode(), (422, "invalid_envelope", "occurredAt")),
        (json.dumps(event(occurredAt=NAIVE_TIME)).encode(), (422, "invalid_envelope", "occurredAt")),
        (json.dumps(event(data=[1])).encode(), (422, "invalid_envelope", "data")),
        (json.dumps(event(type=7)).encode(), (422, "invalid_envelope", "type")),
    ],
)
async def test_bad_bodies_get_a_clear_reason(
    client: httpx.AsyncClient,
    stack: LocalStack,
    topic: str,
    content: bytes,
    expected: tuple[int, str, str],
) -> None:
    status, error, mentions = expected
    response = await client.post(
        WEBHOOK_PATH, content=content, headers={"X-Api-Key": KEY, "content-type": "application/json"}
    )
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert mentions in json.dumps(body["detail"])
    assert await end_offsets(stack.kafka.bootstrap_servers, topic) == 0


async def test_a_huge_body_is_refused(client: httpx.AsyncClient) -> None:
    huge = json.dumps(event(data={"orderId": "o", "blob": "x" * 200_000})).encode()
    response = await client.post(WEBHOOK_PATH, content=huge, headers={"X-Api-Key": KEY})
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 10_000

    streamed = await client.post(WEBHOOK_PATH, content=chunks(), headers={"X-Api-Key": KEY})
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"subscriptionId": "sub-42", "orderId": "ord-7"}, b"sub-42"),
        ({"orderId": "ord-7"}, b"ord-7"),
        ({"order": {"orderId": "ord-8", "status": "DONE"}}, b"ord-8"),
        ({"somethingElse": 1}, None),  # falls back to the eventId
    ],
)
async def test_a_valid_event_is_on_the_topic_before_the_answer(
    client: httpx.AsyncClient, stack: LocalStack, topic: str, data: dict[str, object], key: bytes | None
) -> None:
    sent = event(data=data)
    raw = json.dumps(sent, separators=(",", ":")).encode() + b"  "  # raw bytes are carried as sent
    response = await client.post(WEBHOOK_PATH, content=raw, headers={"X-Api-Key": KEY})
    assert response.status_code == 200
    # Asked right after the answer: the broker already holds the record (the ack came first).
    assert await end_offsets(stack.kafka.bootstrap_servers, topic) == 1
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["eventId"] == sent["eventId"]

    [record] = await read_all(stack.kafka.bootstrap_servers, topic, partitions=PARTITIONS, expect_at_least=1)
    assert record.value == raw
    assert record.key == (key if key is not None else str(sent["eventId"]).encode())
    assert (record.partition, record.offset) == (answer["partition"], answer["offset"])
    headers = dict(record.headers)
    assert headers["eventId"] == str(sent["eventId"]).encode()
    assert headers["type"] == b"subscription.activated"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_kafka_unreachable_answers_503_so_the_provider_retries() -> None:
    app = create_webhook_app(
        bootstrap_servers=f"127.0.0.1:{closed_port()}",
        api_key=SecretStr(KEY),
        topic="connect.events.v1",
        send_timeout_s=2.0,
    )
    async with serve_webhooks(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200  # the ingress is up without Kafka
        response = await http.post(WEBHOOK_PATH, json=event(), headers={"X-Api-Key": KEY})
    assert response.status_code == 503
    assert response.json()["error"] == "kafka_unavailable"
    assert response.headers["retry-after"] == "5"


def test_an_empty_key_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        create_webhook_app(bootstrap_servers="127.0.0.1:9", api_key=SecretStr(""))
