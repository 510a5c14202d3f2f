"""Provider errors and the classification of every Connect answer.

One family under `ProviderError`, so the engine catches one type and decides from data: `code` is
stable (stored on failed workflows), `retryable` says whether the same request may be sent again,
and `outcome` groups codes into the handful of decisions the step protocol makes.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from orchestrator.errors import OrchestratorError

__all__ = [
    "IdempotencyKeyLocked",
    "IdempotencyKeyMismatch",
    "Outcome",
    "ProviderAuthError",
    "ProviderBadResponse",
    "ProviderConnectError",
    "ProviderConnectionLost",
    "ProviderError",
    "ProviderNotFound",
    "ProviderPreconditionFailed",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderStateConflict",
    "ProviderTimeout",
    "ProviderUnavailable",
    "classify_response",
    "parse_retry_after",
]


class Outcome(StrEnum):
    """What the engine should do with an answer."""

    SUCCESS = "success"
    RETRY = "retry"  # send the identical request again (same key, same bytes), after a pause
    PERMANENT = "permanent"  # the provider refused this request; retrying cannot help
    BUG = "bug"  # our side broke the idempotency contract; alert, never retry
    RECONCILE = "reconcile"  # the provider's state differs from ours; GET it, then decide


class ProviderError(OrchestratorError):
    """Root of every Connect API failure."""

    code: ClassVar[str] = "provider_error"
    retryable: ClassVar[bool] = False
    outcome: ClassVar[Outcome] = Outcome.PERMANENT

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider_code: str | None = None,
        provider_message: str | None = None,
        provider_details: list[dict[str, Any]] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.provider_code = provider_code
        self.provider_message = provider_message
        self.provider_details = provider_details or []
        self.method = method
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        """Everything an operator needs, JSON-ready; never contains the API key or request body."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "outcome": self.outcome.value,
            "status": self.status,
            "retry_after_s": self.retry_after_s,
            "provider_code": self.provider_code,
            "provider_message": self.provider_message,
            "provider_details": self.provider_details,
            "method": self.method,
            "path": self.path,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class ProviderConnectError(ProviderError):
    """No connection could be made: the request was certainly not received."""

    code = "provider_connect_failed"
    retryable = True
    outcome = Outcome.RETRY


class ProviderConnectionLost(ProviderError):
    """The connection broke after the request was sent: it may or may not have taken effect."""

    code = "provider_connection_lost"
    retryable = True
    outcome = Outcome.RETRY


class ProviderTimeout(ProviderError):
    """No answer in time: the request may or may not have taken effect."""

    code = "provider_timeout"
    retryable = True
    outcome = Outcome.RETRY


class ProviderUnavailable(ProviderError):
    """A 5xx answer."""

    code = "provider_unavailable"
    retryable = True
    outcome = Outcome.RETRY


class ProviderRateLimited(ProviderError):
    """429; `retry_after_s` carries the provider's Retry-After when it sent one."""

    code = "provider_rate_limited"
    retryable = True
    outcome = Outcome.RETRY


class IdempotencyKeyLocked(ProviderError):
    """409 `idempotency_key_locked`: the first request with this key is still running."""

    code = "idempotency_key_locked"
    retryable = True
    outcome = Outcome.RETRY


class IdempotencyKeyMismatch(ProviderError):
    """409 `idempotency_key_mismatch`: the key was reused for a different request. A bug on our side."""

    code = "idempotency_key_mismatch"
    outcome = Outcome.BUG


class ProviderStateConflict(ProviderError):
    """Any other 409: the resource is not in the state the request needs."""

    code = "provider_state_conflict"
    outcome = Outcome.RECONCILE


class ProviderRejected(ProviderError):
    """A 4xx refusal of this request (validation and the like)."""

    code = "provider_rejected"


class ProviderAuthError(ProviderRejected):
    """401/403: the API key is wrong or lacks access; no request will succeed until config changes."""

    code = "provider_auth_failed"


class ProviderNotFound(ProviderRejected):
    """404: the resource does not exist (or not for this API key)."""

    code = "provider_not_found"


class ProviderPreconditionFailed(ProviderRejected):
    """412: submission preconditions are not met (validation, requirements, an expired lease)."""

    code = "provider_precondition_failed"


class ProviderBadResponse(ProviderError):
    """A 2xx whose body is not what the API promises; retrying returns the same cached body."""

    code = "provider_bad_response"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _error_body(content: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(content) if content else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def classify_response(
    *,
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    method: str,
    path: str,
    max_retry_after_s: float = 300.0,
    now: datetime | None = None,
) -> ProviderError | None:
    """None for a 2xx/3xx; otherwise the error this answer means. Branches on status first, then
    on the provider's `code` (only 409 needs it), as the docs advise."""
    if status < 400:
        return None
    body = _error_body(content)
    provider_code = body.get("code") if isinstance(body.get("code"), str) else None
    provider_message = body.get("message") if isinstance(body.get("message"), str) else None
    raw_details = body.get("details")
    details = [d for d in raw_details if isinstance(d, dict)] if isinstance(raw_details, list) else []
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if retry_after is not None:
        retry_after = min(retry_after, max_retry_after_s)

    error_type: type[ProviderError]
    if status == 409 and provider_code == IdempotencyKeyLocked.code:
        error_type = IdempotencyKeyLocked
    elif status == 409 and provider_code == IdempotencyKeyMismatch.code:
        error_type = IdempotencyKeyMismatch
    elif status == 409:
        error_type = ProviderStateConflict
    elif status == 429:
        error_type = ProviderRateLimited
    elif status >= 500:
        error_type = ProviderUnavailable
    elif status in (401, 403):
        error_type = ProviderAuthError
    elif status == 404:
        error_type = ProviderNotFound
    elif status == 412:
        error_type = ProviderPreconditionFailed
    else:
        error_type = ProviderRejected
    summary = provider_message or f"HTTP {status}"
    return error_type(
        f"{method} {path} -> {status}: {summary}",
        status=status,
        retry_after_s=retry_after,
        provider_code=provider_code,
        provider_message=provider_message,
        provider_details=details,
        method=method,
        path=path,
    )
