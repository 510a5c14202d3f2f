"""Client-side limits per API key: a concurrency cap and a token bucket.

The provider's rate limit is undocumented, so the client keeps itself below a configured rate instead
of discovering the limit through 429s. A 429's Retry-After also pauses the bucket for every caller
sharing the key, not only the one that was refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["ApiKeyLimiter", "TokenBucket"]


class TokenBucket:
    """`rate_per_s` tokens a second, up to `burst` saved; `acquire` waits for one token (FIFO)."""

    def __init__(self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()  # FIFO: waiters are served in arrival order

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def pause_for(self, seconds: float) -> None:
        """Hand out no token for `seconds` (a Retry-After applies to the key, not to one call)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)


class ApiKeyLimiter:
    """Both limits for one API key. Share one instance between clients that use the same key."""

    def __init__(self, *, max_concurrency: int, rate_per_s: float, burst: int) -> None:
        self.bucket = TokenBucket(rate_per_s=rate_per_s, burst=burst)
        self._slots = asyncio.Semaphore(max_concurrency)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot for the duration of a call, after taking a rate token."""
        async with self._slots:
            await self.bucket.acquire()
            yield
