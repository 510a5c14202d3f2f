"""The edge every API request passes: auth, rate limit, injected faults, idempotency, request ledger.

A pure ASGI middleware (no BaseHTTPMiddleware task hops): it buffers the small JSON bodies so it can
fingerprint requests, cache complete responses and deliberately lose them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.sandbox._errors import error_body
from orchestrator.sandbox._faults import PRE_FAULTS, FaultRule, retry_after_header
from orchestrator.sandbox._idempotency import CachedResponse, fingerprint
from orchestrator.sandbox._ledger import current_idempotency_key
from orchestrator.sandbox._runtime import Runtime

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_PATHS = frozenset({"/_sandbox/health", "/openapi.json", "/docs"})
MAX_KEY = 256


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> CachedResponse:
    body = error_body(status, code, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return CachedResponse(status=status, headers=raw, body=body)


async def _send(send: Send, response: CachedResponse, *, replayed: bool = False) -> None:
    headers = list(response.headers)
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _drop(send: Send) -> None:
    """Start a response that never completes: the server closes the connection mid-answer."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4096")]})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None if the client went away before sending all of it.

    A client killed mid-request leaves a truncated body: processing it would cache a response
    under the key for bytes the client never meant, and its honest retry would then be refused as
    a mismatch. A real server never sees such a request complete, so neither does the sandbox.
    """
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class SandboxMiddleware:
    def __init__(self, app: ASGIApp, *, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        rt = self.runtime
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        api_key = headers.get("x-api-key", "")
        method, path = scope["method"], scope["path"]
        idem_key = headers.get("x-idempotency-key") if method in MUTATING else None

        def record(status: int, outcome: str) -> None:
            rt.ledger.request(
                api_key=api_key,
                method=method,
                path=path,
                idempotency_key=idem_key,
                status=status,
                outcome=outcome,
            )

        if api_key not in rt.accepted_keys:
            record(401, "unauthorized")
            await _send(send, _error(401, "unauthorized", "missing or invalid X-API-Key"))
            return
        if path.startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            record(499, "client_gone")
            return
        status, outcome = await self._guarded(
            scope, receive, send, body=body, api_key=api_key, idem_key=idem_key, headers=headers
        )
        record(status, outcome)

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        body: bytes,
        api_key: str,
        idem_key: str | None,
        headers: dict[str, str],
    ) -> tuple[int, str]:
        rt = self.runtime
        method, path = scope["method"], scope["path"]
        limiter = rt.rate_limit()
        wait = limiter.check(api_key) if limiter else None
        if wait is not None:
            await _send(
                send,
                _error(429, "rate_limited", "too many requests", {"Retry-After": retry_after_header(wait)}),
            )
            return 429, "rate_limited"
        rules = rt.faults.pick(method, path)
        pre = next((r for r in rules if r.kind in PRE_FAULTS), None)
        if pre is not None:
            return await self._pre_fault(send, pre)
        if idem_key is not None and not 0 < len(idem_key) <= MAX_KEY:
            await _send(
                send, _error(400, "validation_error", f"X-Idempotency-Key must be 1..{MAX_KEY} characters")
            )
            return 400, "processed"
        latency_s = sum(r.latency_ms for r in rules if r.kind == "latency") / 1000
        lost = next((r for r in rules if r.kind == "lost_response"), None)
        rt.stats.enter(api_key)
        try:
            response, outcome = await self._respond(
                scope,
                receive,
                body=body,
                api_key=api_key,
                idem_key=idem_key,
                headers=headers,
                latency_s=latency_s,
            )
        finally:
            rt.stats.leave(api_key)
        if lost is not None:
            if lost.status:
                await _send(send, _error(lost.status, "injected_fault", "response lost (injected)"))
            else:
                await _drop(send)
            return lost.status or 0, "fault:lost_response"
        await _send(send, response, replayed=outcome == "replayed")
        return response.status, outcome

    async def _pre_fault(self, send: Send, rule: FaultRule) -> tuple[int, str]:
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        if rule.kind == "drop":
            await _drop(send)
            return 0, "fault:drop"
        if rule.kind == "rate_limit":
            await _send(
                send,
                _error(
                    429,
                    "rate_limited",
                    "too many requests (injected)",
                    {"Retry-After": retry_after_header(rule.retry_after_s)},
                ),
            )
            return 429, "fault:rate_limit"
        status = rule.status or 503
        await _send(send, _error(status, "injected_fault", "service unavailable (injected)"))
        return status, "fault:error"

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        *,
        body: bytes,
        api_key: str,
        idem_key: str | None,
        headers: dict[str, str],
        latency_s: float,
    ) -> tuple[CachedResponse, str]:
        store = self.runtime.idempotency
        if idem_key is None:
            if latency_s:
                await asyncio.sleep(latency_s)
            return await self._run_app(scope, receive, body), "processed"
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        fp = fingerprint(
            method=scope["method"], target=target, content_type=headers.get("content-type", ""), body=body
        )
        entry = store.lookup(api_key, idem_key)
        if entry is not None:
            if entry.fingerprint != fp:
                return _error(
                    409, "idempotency_key_mismatch", "this idempotency key was used for a different request"
                ), "mismatch"
            if entry.response is None:
                return _error(
                    409,
                    "idempotency_key_locked",
                    "a request with this idempotency key is still being processed",
                ), "locked"
            return entry.response, "replayed"
        entry = store.begin(api_key, idem_key, fp)
        token = current_idempotency_key.set(idem_key)
        try:
            if latency_s:
                await asyncio.sleep(latency_s)
            entry.response = await self._run_app(scope, receive, body)
        except BaseException:
            store.abandon(api_key, idem_key)
            raise
        finally:
            current_idempotency_key.reset(token)
        return entry.response, "processed"

    async def _run_app(self, scope: Scope, receive: Receive, body: bytes) -> CachedResponse:
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay_receive, capture)
        return CachedResponse(
            status=int(start.get("status", 500)),
            headers=list(start.get("headers", [])),
            body=b"".join(chunks),
        )
