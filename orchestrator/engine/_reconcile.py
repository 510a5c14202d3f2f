"""Does the provider already have a call's effect? Decided by reading provider state (GETs only),
then turned into one of three actions. Used by the engine when a stored call's key is past the
provider's window, and by an operator's replay (orchestrator.ops) for its dry-run plan:

- `skip`: the effect is there; the call is settled as `skipped` with the read as its answer, and
  the engine's `prepare_intent` treats it as done (it is never sent again);
- `resend`: the effect is absent (or cannot be read) and the key still protects us: same key,
  same bytes, and the provider applies it at most once;
- `rekey`: the effect is absent and the old key no longer protects or helps: it is past the 24 h
  window (minus the margin), or the provider answered it with a refusal that it caches for the
  key's lifetime (a resend would only replay that refusal). The workflow's generation is bumped,
  so every key changes.

`blocked` is the fourth answer: the effect could not be verified and re-sending is not safe
(past the window, or the provider answered and we cannot see whether it applied). Such a
workflow is left alone and the plan says why.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from orchestrator.connect import (
    ConnectClient,
    PreparedRequest,
    ProviderError,
    ProviderNotFound,
    Requests,
    parse_path,
)
from orchestrator.engine._calls import KEY_WINDOW, KEY_WINDOW_MARGIN
from orchestrator.errors import OrchestratorError


class ProviderReadFailed(OrchestratorError):
    """A GET to the provider failed, so its state is unknown."""

    code = "provider_read_failed"
    retryable = True


# Answers the provider does not cache under the key (gateway-level: try again later).
_UNCACHED_STATUSES = frozenset({429})
_UNCACHED_CODES = frozenset({"idempotency_key_locked"})
_CART_STATES = frozenset({"PENDING", "CONFIGURED"})


class Action(enum.StrEnum):
    SKIP = "skip"
    RESEND = "resend"
    REKEY = "rekey"
    BLOCKED = "blocked"


class ProviderReader(Protocol):
    """GETs against the provider (a `Requests.get_*` request). `None` for 404; `ProviderReadFailed`
    when state is unknowable."""

    async def get(self, request: PreparedRequest) -> dict[str, Any] | None: ...


class ConnectReader:
    """`ProviderReader` over the Connect client (one attempt per read: an operator waits)."""

    def __init__(self, client: ConnectClient, *, timeout_s: float | None = None) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def get(self, request: PreparedRequest) -> dict[str, Any] | None:
        path = request.path
        try:
            response = await self._client.send(request, timeout_s=self._timeout_s)
        except ProviderError as exc:
            raise ProviderReadFailed(f"GET {path}: {exc.message}", path=path, cause=exc.code) from exc
        if isinstance(response.error, ProviderNotFound):
            return None
        if response.error is not None:
            raise ProviderReadFailed(
                f"GET {path}: {response.error.message}", path=path, cause=response.error.code
            )
        body = response.json() if response.content else None
        return body if isinstance(body, dict) else None


@dataclass(frozen=True)
class Evidence:
    """What a read showed: `present` True/False, or None when it could not be told."""

    present: bool | None
    note: str
    body: Any = None


@dataclass(frozen=True)
class CallFacts:
    """The stored call a replay must decide about (a `provider_calls` row, secrets-free)."""

    idempotency_key: str
    step: str
    method: str
    path: str
    status: str
    generation: int
    first_sent_at: datetime | None
    response_status: int | None
    error_code: str | None
    workflow_level: bool
    line_item_id: str | None
    request: Any  # the decoded request body (used to compare an update), never shown unredacted

    def past_window(self, now: datetime) -> bool:
        return self.first_sent_at is not None and now - self.first_sent_at > KEY_WINDOW - KEY_WINDOW_MARGIN

    def answer_is_cached(self) -> bool:
        """The provider answered with a refusal that it keeps under this key for 24 h."""
        return (
            self.status == "failed"
            and self.response_status is not None
            and self.response_status >= 400
            and self.response_status not in _UNCACHED_STATUSES
            and self.error_code not in _UNCACHED_CODES
        )


def _decoded(body: bytes | None) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def request_facts(request: PreparedRequest, *, step: str, line_item_id: str, error_code: str) -> CallFacts:
    """A call just refused (not yet stored as such) as the facts `check_effect` reads: its request."""
    assert request.idempotency_key is not None
    return CallFacts(
        idempotency_key=request.idempotency_key,
        step=step,
        method=request.method,
        path=request.path,
        status="failed",
        generation=0,
        first_sent_at=None,
        response_status=None,
        error_code=error_code,
        workflow_level=True,
        line_item_id=line_item_id,
        request=_decoded(request.body),
    )


def call_facts(record: Any, line_item_id: str | None) -> CallFacts:
    """A `provider_calls` row as the facts a decision needs."""
    request = _decoded(record["body"])
    return CallFacts(
        idempotency_key=record["idempotency_key"],
        step=record["step"],
        method=record["method"],
        path=record["path"],
        status=record["status"],
        generation=record["generation"],
        first_sent_at=record["first_sent_at"],
        response_status=record["response_status"],
        error_code=(record["error"] or {}).get("code"),
        workflow_level=record["workflow_id"] is not None,
        line_item_id=line_item_id,
        request=request,
    )


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def decide(call: CallFacts, evidence: Evidence, *, now: datetime) -> Decision:
    """The pure rule (see the module docstring); unit-tested branch by branch."""
    late = call.past_window(now)
    if evidence.present is True:
        return Decision(Action.SKIP, f"the provider already has the effect ({evidence.note})")
    if evidence.present is False:
        if late:
            return Decision(
                Action.REKEY, f"effect absent ({evidence.note}) and the key is past its 24 h window"
            )
        if call.answer_is_cached():
            return Decision(
                Action.REKEY,
                f"effect absent ({evidence.note}); the provider answered HTTP {call.response_status} under "
                "this key and would replay that answer to a resend",
            )
        return Decision(Action.RESEND, f"effect absent ({evidence.note}); same key, same bytes")
    if not late and not call.answer_is_cached():
        return Decision(
            Action.RESEND, f"provider state unknown ({evidence.note}); the key makes a resend safe"
        )
    return Decision(Action.BLOCKED, f"provider state unknown ({evidence.note}) and a resend is not safe")


def _id_from(path: str, collection: str) -> str | None:
    parts = parse_path(path)
    return parts[1] if len(parts) >= 2 and parts[0] == collection else None


def _line_item(order: dict[str, Any], line_item_id: str | None) -> dict[str, Any] | None:
    for item in order.get("lineItems") or []:
        if isinstance(item, dict) and item.get("lineItemId") == line_item_id:
            return item
    return None


def _matches(requested: Any, echoed: dict[str, Any]) -> bool:
    """An update is there when every requested field the provider echoes has the requested value
    (the provider never echoes `porting` or `leaseToken`)."""
    if not isinstance(requested, dict):
        return False
    wanted = requested.get("lineItem", requested)
    if not isinstance(wanted, dict):
        return False
    return all(echoed.get(k) == v for k, v in wanted.items() if k not in ("porting", "leaseToken"))


async def check_effect(reader: ProviderReader, call: CallFacts, *, provider_order_id: str | None) -> Evidence:
    """Read what the provider has for this call's effect. Never raises for an unreadable state:
    that is `Evidence(present=None)`."""
    try:
        if call.step == "create_order":
            if provider_order_id is None:
                return Evidence(None, "no provider order id is known to look up")
            request = Requests.get_order(provider_order_id)
            order = await reader.get(request)
            return Evidence(order is not None, f"GET {request.path}", order)
        if call.step in _ORDER_STEPS:
            return await _order_effect(reader, call)
        if call.step == "cancel_subscription":
            return await _subscription_effect(reader, call)
    except ProviderReadFailed as exc:
        return Evidence(None, exc.message)
    return Evidence(None, f"no read is known that shows the effect of {call.step}")


_ORDER_STEPS = frozenset(
    {"add_item", "update_item", "remove_item", "remove_failed_item", "submit_order", "cancel_order"}
)


async def _order_effect(reader: ProviderReader, call: CallFacts) -> Evidence:  # noqa: PLR0911 - one rule per step
    order_id = _id_from(call.path, "orders")
    if order_id is None:
        return Evidence(None, f"no order id in {call.path}")
    order = await reader.get(Requests.get_order(order_id))
    if order is None:
        return Evidence(False, f"provider order {order_id} not found")
    state = order.get("state")
    item = _line_item(order, call.line_item_id)
    if call.step == "add_item":
        return Evidence(item is not None, f"order {state}, line item {'in' if item else 'not in'} it", item)
    if call.step == "update_item":
        done = item is not None and _matches(call.request, item)
        return Evidence(done, f"line item {'matches' if done else 'differs from'} the update", item)
    if call.step in ("remove_item", "remove_failed_item"):
        return Evidence(item is None, f"line item {'gone' if item is None else 'still there'}", None)
    if call.step == "submit_order":
        return Evidence(state not in _CART_STATES, f"order is {state}", order)
    return Evidence(state == "CANCELLED", f"order is {state}", order)


async def _subscription_effect(reader: ProviderReader, call: CallFacts) -> Evidence:
    subscription_id = _id_from(call.path, "subscriptions")
    if subscription_id is None:
        return Evidence(None, f"no subscription id in {call.path}")
    sub = await reader.get(Requests.get_subscription(subscription_id))
    if sub is None:
        return Evidence(None, f"subscription {subscription_id} not found")
    pending = (sub.get("pendingStatus") or {}).get("status")
    done = sub.get("status") == "CANCELLED" or pending == "CANCELLED"
    return Evidence(done, f"subscription {sub.get('status')}, pending {pending}", sub)
