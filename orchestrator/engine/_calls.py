"""The step protocol's provider half: an intent stored before the call, the outcome after.

1. (in the caller's transaction, under the row lock) `prepare_intent` stores the exact request —
   key and body bytes — or finds the one stored by an earlier attempt, which is then re-sent
   byte for byte. A stored success is answered from the database without calling again.
2. `send` makes one attempt, outside any transaction.
3. (in the next transaction) `record_outcome` stores what came back.

A crash between 1 and 3 leaves an intent without an outcome; the next attempt re-sends it with the
same key, so the provider applies it at most once. Past the provider's 24 h key window (counted
from the intent, stored just before the first send), a key no longer protects us:
`prepare_intent` answers `KeyWindowPassed`, and the step reconciles by reading provider state
before anything is re-sent.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.connect import ConnectClient, PreparedRequest, ProviderError, ProviderResponse
from orchestrator.logs import get_logger
from orchestrator.store import provider_calls

log = get_logger(__name__)

# The provider forgets keys 24 h after use; leave an hour's margin for clock skew and slow retries.
KEY_WINDOW = timedelta(hours=24)
KEY_WINDOW_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class Send:
    request: PreparedRequest


@dataclass(frozen=True)
class AlreadyDone:
    status: int
    body: Any


@dataclass(frozen=True)
class KeyWindowPassed:
    request: PreparedRequest
    first_sent_at: datetime


Intent = Send | AlreadyDone | KeyWindowPassed


@dataclass(frozen=True)
class CallOutcome:
    response: ProviderResponse | None
    error: ProviderError | None
    latency_ms: int
    # A refused call whose effect a read showed after all (`reconciled`), and that read, which
    # stands in for the answer.
    reconciled: bool = False
    reconciled_body: Any = None
    # Another attempt of the same key settled the call first (see `provider_calls.record_outcome`):
    # this answer was counted, not recorded, and must not be acted on.
    superseded: bool = False

    def body(self) -> Any:
        return self.response.json() if self.response is not None and self.response.content else None


async def prepare_intent(
    conn: asyncpg.Connection,
    *,
    workflow_id: uuid.UUID | None,
    order_id: str,
    step: str,
    generation: int,
    request: PreparedRequest,
    now: datetime,
) -> Intent:
    key = request.idempotency_key
    assert key is not None, "provider steps always carry an idempotency key"
    # The first attempt (the common case) costs one statement: the insert finds no earlier intent.
    inserted = await provider_calls.insert_intent(
        conn,
        workflow_id=workflow_id,
        order_id=order_id,
        step=step,
        generation=generation,
        idempotency_key=key,
        method=request.method,
        path=request.path,
        body=request.body,
        now=now,
    )
    if inserted:
        return Send(request)
    stored = await provider_calls.stored_call(conn, key)
    assert stored is not None, "the conflicting intent is there: provider_calls rows are never deleted"
    if stored["status"] in ("succeeded", "skipped"):
        # `skipped`: reconciled as already applied (an operator's replay, or past the key window).
        return AlreadyDone(status=stored["response_status"], body=stored["response_body"])
    original = PreparedRequest(
        method=stored["method"], path=stored["path"], body=stored["body"], idempotency_key=key
    )
    first = stored["first_sent_at"]
    if first is not None and now - first > KEY_WINDOW - KEY_WINDOW_MARGIN:
        return KeyWindowPassed(request=original, first_sent_at=first)
    if first is None:  # stored before the window was recorded with the intent
        await provider_calls.mark_sending(conn, key, now=now)
    return Send(original)


async def send(
    client: ConnectClient, request: PreparedRequest, *, step: str, timeout_s: float | None = None
) -> CallOutcome:
    """One attempt of `step`'s request. A keyed (mutating) one passes the provider crash points."""
    effect = request.idempotency_key is not None  # reads (GET) are no effects: no crash points
    if effect:
        faults.reach("provider.before_call", step)
    started = time.monotonic()
    try:
        response = await client.send(request, timeout_s=timeout_s)
    except ProviderError as exc:
        return CallOutcome(response=None, error=exc, latency_ms=int((time.monotonic() - started) * 1000))
    if effect:
        faults.reach("provider.after_call", step)
    return CallOutcome(
        response=response, error=response.error, latency_ms=int((time.monotonic() - started) * 1000)
    )


async def record_outcome(conn: asyncpg.Connection, *, key: str, outcome: CallOutcome, now: datetime) -> bool:
    """Store one attempt's answer; False if another attempt had settled the call already."""
    status = "succeeded" if outcome.error is None else ("retrying" if outcome.error.retryable else "failed")
    body: Any = None
    if outcome.response is not None:
        try:
            body = outcome.response.json()
        except ProviderError:
            body = {"unparsed": outcome.response.content[:2000].decode("utf-8", "replace")}
    if outcome.reconciled:  # refused, but a read showed the effect: done, with the read as answer
        status, body = "skipped", outcome.reconciled_body
    return await provider_calls.record_outcome(
        conn,
        idempotency_key=key,
        status=status,
        response_status=outcome.response.status if outcome.response else None,
        response_body=body,
        error=outcome.error.to_dict() if outcome.error else None,
        latency_ms=outcome.latency_ms,
        now=now,
    )
    if outcome.error is not None and outcome.error.code == "idempotency_key_mismatch":
        # A bug on our side: the same key went out with different bytes. Loud on purpose.
        log.error(
            "idempotency key mismatch: this is a bug", idempotency_key=key, error=outcome.error.to_dict()
        )
