"""A bounded, in-memory retry for callers that want one (tests, tools, the CLI).

The engine does not use it for steps: its retries are durable timers in Postgres. This helper is
for places where a short retry loop is right. It only repeats retryable outcomes and relies on the
caller re-sending the same prepared request (same key, same bytes).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from orchestrator.connect._errors import ProviderError

__all__ = ["RetryPolicy", "retry_call"]

_T = TypeVar("_T")
_log = structlog.get_logger("orchestrator.connect")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, at least the provider's Retry-After, capped."""

    max_attempts: int = 5
    base_delay_s: float = 0.2  # the docs suggest 100–500 ms for idempotency_key_locked
    max_delay_s: float = 10.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def delay_for(self, attempt: int, error: ProviderError) -> float:
        """Delay after failed attempt number `attempt` (1-based)."""
        ceiling: float = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if error.retry_after_s is not None:
            delay = max(delay, error.retry_after_s)
        return delay


async def retry_call(fn: Callable[[], Awaitable[_T]], *, policy: RetryPolicy) -> _T:
    """Run `fn` until it succeeds, raises a non-retryable error, or attempts run out."""
    attempt = 1
    while True:
        try:
            return await fn()
        except ProviderError as exc:
            if not exc.retryable or attempt >= policy.max_attempts:
                raise
            delay = policy.delay_for(attempt, exc)
            _log.info("connect.retry", code=exc.code, attempt=attempt, delay_s=round(delay, 3), path=exc.path)
            await policy.sleep(delay)
            attempt += 1
