"""The HTTP edge: pooled httpx clients, per-call timeouts, limits, and error translation.

Every httpx exception becomes a ProviderError here (with the cause kept), and every answer that
arrived becomes a classified ProviderResponse, so nothing above this module sees httpx.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import structlog

from orchestrator.connect._config import ConnectConfig
from orchestrator.connect._errors import (
    IdempotencyKeyMismatch,
    ProviderConnectError,
    ProviderConnectionLost,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    classify_response,
)
from orchestrator.connect._limits import ApiKeyLimiter
from orchestrator.connect._requests import PreparedRequest
from orchestrator.connect._response import ProviderResponse

__all__ = ["HttpSender", "ShardedClient", "build_http_client"]

_log = structlog.get_logger("orchestrator.connect")

REPLAY_HEADER = "idempotent-replayed"


# httpcore 1.0's pool looks at every pooled connection (a getpeername and a poll for each idle one)
# on every request and every response, so its cost grows with the pool: with 64 connections it took
# 56% of the worker's CPU (py-spy, docs/benchmarks.md; upstream: encode/httpcore#928, #1035). Pools
# of at most this many connections, the least busy taking each request, keep that cost flat.
SHARD_CONNECTIONS = 8


class ShardedClient:
    """Several small httpx clients behind one `request`; the least busy one sends each request."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._clients = clients
        self._busy = [0] * len(clients)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        shard = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[shard] += 1
        try:
            return await self._clients[shard].request(method, url, **kwargs)
        finally:
            self._busy[shard] -= 1

    def in_flight(self) -> list[int]:
        """Requests in flight per pool."""
        return list(self._busy)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def build_http_client(
    config: ConnectConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> ShardedClient:
    """Pooled HTTP/1.1 keep-alive clients with `max_concurrency` connections between them; the API
    key is a default header, so it is set in one place."""
    shards = math.ceil(config.max_concurrency / SHARD_CONNECTIONS)
    size = math.ceil(config.max_concurrency / shards)
    return ShardedClient([_pooled_client(config, size, transport) for _ in range(shards)])


def _pooled_client(
    config: ConnectConfig, connections: int, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=config.base_url,
        headers={
            "X-API-Key": config.api_key,
            "Accept": "application/json",
            "User-Agent": "provisioning-orchestrator",
        },
        timeout=httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.read_timeout_s,
            pool=config.total_timeout_s,
        ),
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=config.keepalive_expiry_s,
        ),
        http1=True,
        http2=False,
        follow_redirects=False,
        transport=transport,
    )


@contextmanager
def _translate(prepared: PreparedRequest) -> Iterator[None]:
    """httpx and timeout exceptions → ProviderError, keeping the cause."""
    method, path = prepared.method, prepared.path
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ProviderConnectError(f"cannot connect: {exc!r}", method=method, path=path) from exc
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise ProviderTimeout(f"no answer in time: {exc!r}", method=method, path=path) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ProviderConnectionLost(f"connection lost: {exc!r}", method=method, path=path) from exc
    except httpx.HTTPError as exc:
        raise ProviderConnectionLost(f"transport failure: {exc!r}", method=method, path=path) from exc


class HttpSender:
    """Sends prepared requests under the key's limits and classifies what comes back."""

    def __init__(self, *, http: ShardedClient, limiter: ApiKeyLimiter, config: ConnectConfig) -> None:
        self._http = http
        self._limiter = limiter
        self._total_timeout_s = config.total_timeout_s
        self._max_retry_after_s = config.max_retry_after_s

    async def send(self, prepared: PreparedRequest, *, timeout_s: float | None = None) -> ProviderResponse:
        headers: dict[str, str] = {}
        if prepared.body is not None:
            headers["Content-Type"] = "application/json"
        if prepared.idempotency_key is not None:
            headers["X-Idempotency-Key"] = prepared.idempotency_key
        started = time.monotonic()
        with _translate(prepared):
            # The total budget starts once a slot is held: waiting our own turn is not the provider's delay.
            async with self._limiter.slot(), asyncio.timeout(timeout_s or self._total_timeout_s):
                answer = await self._http.request(
                    prepared.method, prepared.path, content=prepared.body, headers=headers
                )
        error = classify_response(
            status=answer.status_code,
            headers=answer.headers,
            content=answer.content,
            method=prepared.method,
            path=prepared.path,
            max_retry_after_s=self._max_retry_after_s,
        )
        self._observe(prepared, answer.status_code, error, time.monotonic() - started)
        return ProviderResponse(
            method=prepared.method,
            path=prepared.path,
            status=answer.status_code,
            headers=dict(answer.headers),
            content=answer.content,
            error=error,
            replayed=answer.headers.get(REPLAY_HEADER, "").lower() == "true",
        )

    def _observe(
        self, prepared: PreparedRequest, status: int, error: ProviderError | None, elapsed_s: float
    ) -> None:
        fields = {
            "method": prepared.method,
            "path": prepared.path,
            "status": status,
            "idempotency_key": prepared.idempotency_key,
            "elapsed_ms": round(elapsed_s * 1000, 1),
        }
        if isinstance(error, ProviderRateLimited) and error.retry_after_s:
            self._limiter.bucket.pause_for(error.retry_after_s)
        if isinstance(error, IdempotencyKeyMismatch):
            # A key reused for a different request is a bug in key derivation or serialisation:
            # it must reach a human, not just a retry counter.
            _log.error("connect.idempotency_key_mismatch", **fields, provider_message=error.provider_message)
        elif error is not None:
            _log.info("connect.call_failed", **fields, code=error.code)
        else:
            _log.debug("connect.call", **fields)
