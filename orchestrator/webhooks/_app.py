"""Provider webhook ingress: check the caller, validate the envelope, put the raw body on Kafka,
and answer 2xx only once the broker acknowledged it (design-notes guarantee 1).

Answers (JSON bodies `{"error": code, "detail": ...}` on failure):

- 200 `{"status": "accepted", "eventId", "partition", "offset"}` — the event is on the topic;
- 401 `unauthorized` — `X-Api-Key` missing or wrong (compared in constant time);
- 413 `body_too_large` — more than `max_body_bytes` (checked on Content-Length and while reading);
- 400 `invalid_json` — not UTF-8 JSON, or not a JSON object;
- 422 `invalid_envelope` — `eventId`, `type` (1 to 255 characters), `occurredAt` (RFC 3339 with
  offset) or `data` (object) missing or wrong; the detail lists each field's problem. The envelope
  is `orchestrator.events.ProviderWebhookEvent`, the model the engine reads the topic with;
- 503 `kafka_unavailable` with `Retry-After` — the broker did not ack in time: the provider retries.

The record: value = the request body byte for byte; key = `ProviderWebhookEvent.kafka_key()`
(`data.subscriptionId`, else `data.orderId`, else `data.order.orderId`, else `eventId`); headers
`eventId`, `type` (UTF-8) and `content-type: application/json`. Redeliveries carry the same
`eventId`, which the consumer dedups on. Bodies and the API key are never logged: webhook data can
carry personal data.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr, ValidationError

from orchestrator.events import ProviderWebhookEvent
from orchestrator.kafka import IdempotentProducer, KafkaEdgeError
from orchestrator.logs import get_logger

log = get_logger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_PATH = "/webhooks/connect"


class _BodyTooLarge(Exception):
    pass


class _Rejected(Exception):
    """A request refused before anything was published; carries the answer."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _problem(status: int, error: str, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers or None)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _accept(
    request: Request, *, secret: bytes, max_body_bytes: int
) -> tuple[bytes, ProviderWebhookEvent]:
    """Check the caller, then the size, then the JSON, then the envelope; raise _Rejected."""
    provided = request.headers.get("x-api-key", "").encode("utf-8")
    if not hmac.compare_digest(provided, secret):
        raise _Rejected(_problem(401, "unauthorized", "missing or wrong X-Api-Key"))
    try:
        body = await _read_limited(request, max_body_bytes)
    except _BodyTooLarge:
        raise _Rejected(
            _problem(413, "body_too_large", f"the body must be at most {max_body_bytes} bytes")
        ) from None
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
        raise _Rejected(_problem(400, "invalid_json", f"the body is not UTF-8 JSON: {exc}")) from exc
    if not isinstance(parsed, dict):
        raise _Rejected(_problem(400, "invalid_json", "the body must be a JSON object"))
    try:
        envelope = ProviderWebhookEvent.model_validate(parsed)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()]
        raise _Rejected(_problem(422, "invalid_envelope", problems)) from exc
    return body, envelope


def create_webhook_app(
    *,
    bootstrap_servers: str,
    api_key: SecretStr,
    topic: str = "connect.events.v1",
    client_id: str = "provisioning-orchestrator-webhooks",
    send_timeout_s: float = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    retry_after_s: int = 5,
) -> FastAPI:
    """The ingress app. Its lifespan owns one idempotent producer, started lazily: the app starts
    (and `/healthz` answers) while Kafka is down, and each webhook then gets 503 until it is back."""
    secret = api_key.get_secret_value().encode("utf-8")
    if not secret:
        raise ValueError("the webhook API key must not be empty: the ingress would accept anyone")
    producer = IdempotentProducer(
        bootstrap_servers=bootstrap_servers, client_id=client_id, start_timeout_s=send_timeout_s
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await producer.ensure()
        except KafkaEdgeError as exc:
            log.warning("webhook_producer_start_failed", error=str(exc))
        try:
            yield
        finally:
            await producer.close()

    app = FastAPI(title="Connect webhook ingress", lifespan=lifespan, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(WEBHOOK_PATH)
    async def receive(request: Request) -> JSONResponse:
        try:
            body, envelope = await _accept(request, secret=secret, max_body_bytes=max_body_bytes)
        except _Rejected as rejected:
            return rejected.response
        key = envelope.kafka_key()
        headers = [
            ("eventId", envelope.event_id.encode("utf-8")),
            ("type", envelope.type.encode("utf-8")),
            ("content-type", b"application/json"),
        ]
        try:
            partition, offset = await producer.send_and_wait(
                topic, key=key, value=body, headers=headers, timeout_s=send_timeout_s
            )
        except KafkaEdgeError as exc:
            # aiokafka reconnects by itself; a producer that never started is retried next request
            log.warning(
                "webhook_not_published", event_id=envelope.event_id, type=envelope.type, error=str(exc)
            )
            return _problem(
                503,
                "kafka_unavailable",
                "the event could not be stored; retry later",
                **{"Retry-After": str(retry_after_s)},
            )
        log.info(
            "webhook_published",
            event_id=envelope.event_id,
            type=envelope.type,
            partition=partition,
            offset=offset,
        )
        return JSONResponse(
            {"status": "accepted", "eventId": envelope.event_id, "partition": partition, "offset": offset}
        )

    return app
