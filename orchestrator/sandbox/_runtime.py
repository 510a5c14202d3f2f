"""One sandbox instance: every piece of state, built from the config and rebuilt by reset."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.sandbox._clock import SandboxClock, Timeline
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._faults import FaultInjector, ServerRateLimit
from orchestrator.sandbox._idempotency import IdempotencyStore
from orchestrator.sandbox._ledger import Ledger
from orchestrator.sandbox._scenario import Scenario
from orchestrator.sandbox._webhooks import WebhookDispatcher
from orchestrator.sandbox._world import World


class Stats:
    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.requests = 0

    def enter(self, api_key: str) -> None:
        self.requests += 1
        now = self.in_flight.get(api_key, 0) + 1
        self.in_flight[api_key] = now
        self.max_in_flight[api_key] = max(now, self.max_in_flight.get(api_key, 0))

    def leave(self, api_key: str) -> None:
        self.in_flight[api_key] -= 1


class Runtime:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.accepted_keys = config.accepted_keys()
        self.webhooks = WebhookDispatcher(config=config, scenario=lambda: self.scenario)
        self.clock = self._new_clock()
        self.timeline = Timeline(self.clock)
        self._build()

    def _new_clock(self) -> SandboxClock:
        start = self.config.start_at or datetime.now(UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        return SandboxClock(start=start, speed=self.config.clock_speed)

    def _build(self) -> None:
        config = self.config
        self.ledger = Ledger(now=self.clock.now, max_entries=config.ledger_max_entries)
        self.scenario = Scenario()
        self.faults = FaultInjector(seed=config.seed)
        self.idempotency = IdempotencyStore(now=self.clock.now, ttl_s=config.idempotency_ttl_s)
        self.stats = Stats()
        self._rate_limit: ServerRateLimit | None = None
        self.world = World(
            config=config,
            clock=self.clock,
            timeline=self.timeline,
            ledger=self.ledger,
            scenario=lambda: self.scenario,
            emit=self.webhooks.emit,
        )

    async def reset(self) -> None:
        await self.webhooks.reset()
        self.clock = self._new_clock()
        self.timeline.reset(self.clock)
        self._build()

    def rate_limit(self) -> ServerRateLimit | None:
        wanted = self.scenario.rate_limit
        if wanted is None:
            self._rate_limit = None
        elif self._rate_limit is None or (self._rate_limit.per_s, self._rate_limit.burst) != (
            wanted.per_s,
            float(wanted.burst),
        ):
            self._rate_limit = ServerRateLimit(per_s=wanted.per_s, burst=wanted.burst)
        return self._rate_limit

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.timeline.run_due()
        self.timeline.poke()
