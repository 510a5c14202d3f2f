"""Webhook delivery: POST `{eventId, type, occurredAt, data}` with `X-Api-Key: <webhook secret>`.

Each event is delivered until a 2xx, with exponential backoff (real time) and the same `eventId`
on every attempt. Scenario switches add duplicate deliveries and random extra delays (which reorder
events). Deliveries run as tasks on the sandbox's loop; one shared httpx client keeps it cheap.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import structlog

from orchestrator.sandbox._clock import iso
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._numbers import IdSource
from orchestrator.sandbox._scenario import Scenario

_log = structlog.get_logger("orchestrator.sandbox")
_MAX_SENDING = 8


class WebhookDispatcher:
    def __init__(self, *, config: SandboxConfig, scenario: Callable[[], Scenario]) -> None:
        self._config = config
        self._scenario = scenario
        self._ids = IdSource(seed=config.seed + 1, number_prefix=config.number_prefix)
        self._dice = random.Random(config.seed ^ 0x3EB)  # noqa: S311 - seeded dice are the point
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Deliveries in flight at once. Without a cap, a receiver that is down (a worker being
        # restarted) turns every event into a retrying task and the sandbox spends its CPU on them
        # instead of answering the API (seen in the benchmark's SIGKILL scenario).
        # Few, too: httpcore scans every pooled connection on each request, so 32 of them cost the
        # sandbox more CPU than the API it serves (profiled in the benchmark); 8 keep up with it.
        self._sending = asyncio.Semaphore(_MAX_SENDING)
        self.events: deque[dict[str, Any]] = deque(maxlen=config.ledger_max_entries)

    async def start(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=self._config.webhook_timeout_real_s,
            limits=httpx.Limits(max_connections=_MAX_SENDING, max_keepalive_connections=_MAX_SENDING),
        )

    async def stop(self) -> None:
        await self.cancel_pending()
        if self._http is not None:
            await self._http.aclose()

    async def reset(self) -> None:
        await self.cancel_pending()
        self.events.clear()
        self._ids = IdSource(seed=self._config.seed + 1, number_prefix=self._config.number_prefix)
        self._dice = random.Random(self._config.seed ^ 0x3EB)  # noqa: S311 - seeded dice are the point

    async def cancel_pending(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def emit(self, event_type: str, data: dict[str, Any], at: datetime) -> None:
        """Record the event and schedule its delivery; `data` is serialised now (the snapshot)."""
        event_id = self._ids.uuid()
        body = json.dumps(
            {"eventId": event_id, "type": event_type, "occurredAt": iso(at), "data": data}
        ).encode()
        record: dict[str, Any] = {
            "eventId": event_id,
            "type": event_type,
            "occurredAt": iso(at),
            "entityId": data.get("orderId") or data.get("subscriptionId"),
            "attempts": [],
            "delivered": False,
        }
        self.events.append(record)
        scenario = self._scenario()
        url = scenario.webhook_url or self._config.webhook_url
        if not url:
            return
        secret = scenario.webhook_secret or self._config.webhook_secret
        copies = 2 if self._dice.random() < scenario.webhook_duplicate_probability else 1
        for _ in range(copies):
            delay = self._dice.uniform(0, scenario.webhook_reorder_max_delay_s)
            self._spawn(self._deliver(url=url, secret=secret, body=body, record=record, delay=delay))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(
        self, *, url: str, secret: str | None, body: bytes, record: dict[str, Any], delay: float
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Api-Key"] = secret
        backoff = self._config.webhook_retry_base_real_s
        for attempt in range(1, self._config.webhook_max_attempts + 1):
            status: int | None = None
            try:
                assert self._http is not None
                async with self._sending:
                    answer = await self._http.post(
                        url, content=body, headers={**headers, "X-Sandbox-Attempt": str(attempt)}
                    )
                status = answer.status_code
            except httpx.HTTPError as exc:
                # the first failure of an event at info; its retries at debug (a dead receiver
                # would otherwise cost a log line per event per attempt)
                (_log.info if attempt == 1 else _log.debug)(
                    "sandbox.webhook_failed", url=url, attempt=attempt, error=repr(exc)
                )
            record["attempts"].append(status)
            if status is not None and 200 <= status < 300:
                record["delivered"] = True
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._config.webhook_retry_max_real_s)
        _log.warning("sandbox.webhook_gave_up", url=url, event_id=record["eventId"])
