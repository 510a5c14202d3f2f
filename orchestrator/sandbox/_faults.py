"""Injected faults and the server-side rate limit.

A rule matches `"METHOD /path/glob"` (fnmatch, e.g. `"POST /orders/*/submit"` or `"* *"`), fires with
`probability` (seeded dice) at most `times` times, and is one of:

- `error`: answer `status` (default 503) before processing; nothing applied, nothing cached
  (after `latencyMs`, if given: a slow gateway's refusal, which a retry can overtake);
- `rate_limit`: 429 with `Retry-After: retryAfterS` before processing;
- `drop`: close the connection before processing;
- `latency`: wait `latencyMs` (real time) inside the idempotency lock, then process;
- `lost_response`: process and cache, then answer `status` (default 502) or, with `status: 0`,
  close the connection: the effect happened but the client cannot know.
"""

from __future__ import annotations

import fnmatch
import math
import random
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

FaultKind = Literal["error", "rate_limit", "drop", "latency", "lost_response"]
PRE_FAULTS = frozenset({"error", "rate_limit", "drop"})


class FaultRule(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    match: str = Field("* *", description='"METHOD /path-glob"')
    kind: FaultKind
    probability: float = Field(1.0, ge=0, le=1)
    times: int | None = Field(None, ge=0, description="fire at most this often; None = unlimited")
    status: int | None = Field(None, ge=0, le=599)
    retry_after_s: float = Field(1.0, ge=0)
    latency_ms: float = Field(0.0, ge=0)
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        want_method, _, want_path = self.match.partition(" ")
        return fnmatch.fnmatchcase(method, want_method or "*") and fnmatch.fnmatchcase(path, want_path or "*")


class FaultInjector:
    def __init__(self, *, seed: int) -> None:
        self._dice = random.Random(seed ^ 0xFA17)  # noqa: S311 - seeded dice are the point
        self.rules: list[FaultRule] = []

    def pick(self, method: str, path: str) -> list[FaultRule]:
        """The rules that fire for this request (each rolls its own die)."""
        fired: list[FaultRule] = []
        for rule in self.rules:
            if not rule.matches(method, path) or (rule.times is not None and rule.fired >= rule.times):
                continue
            if rule.probability < 1.0 and self._dice.random() >= rule.probability:
                continue
            rule.fired += 1
            fired.append(rule)
        return fired


class ServerRateLimit:
    """A real-time token bucket per API key; the answer to "too fast" is 429 + Retry-After."""

    def __init__(self, *, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, api_key: str) -> float | None:
        """None if allowed (a token is taken); else seconds until a token is available."""
        now = time.monotonic()
        tokens, updated = self._buckets.get(api_key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.per_s)
        if tokens >= 1.0:
            self._buckets[api_key] = (tokens - 1.0, now)
            return None
        self._buckets[api_key] = (tokens, now)
        return (1.0 - tokens) / self.per_s


def retry_after_header(seconds: float) -> str:
    """Retry-After is integer delta-seconds in HTTP; round up so a client honouring it is never early."""
    return str(max(1, math.ceil(seconds))) if seconds > 0 else "0"
