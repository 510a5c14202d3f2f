"""Durable time: claims due timers with SKIP LOCKED and runs their steps.

A timer is claimed by setting `fired_at` and `claimed_by`, and deleted when its step is done. A
worker heartbeats into `workers`; a claim whose worker has not been seen for `dead_after_s` is
taken over by any live worker, so a SIGKILLed process delays its steps by seconds, not minutes.
LISTEN/NOTIFY on channel `timers` wakes the loop as soon as a step is scheduled; without a notify
it sleeps at most `idle_poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from orchestrator.engine._journal import ORDER_STEP, STEP
from orchestrator.errors import OrchestratorError
from orchestrator.logs import get_logger
from orchestrator.store import connect

log = get_logger(__name__)

_CLAIM = """
WITH live AS (SELECT worker_id FROM workers WHERE last_seen > now() - $3::interval),
due AS (
    SELECT id FROM timers
    WHERE (fired_at IS NULL AND due_at <= now())
       OR (fired_at IS NOT NULL AND claimed_by IS DISTINCT FROM $1
           AND claimed_by NOT IN (SELECT worker_id FROM live))
    ORDER BY due_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE timers t SET fired_at = now(), claimed_by = $1
FROM due WHERE t.id = due.id
RETURNING t.id, t.workflow_id, t.order_id, t.kind
"""


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Scheduler:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        database_url: str,
        run_workflow_step: Callable[[uuid.UUID], Awaitable[None]],
        run_order_step: Callable[[str], Awaitable[None]],
        worker_id: str,
        concurrency: int = 16,
        batch: int = 64,
        heartbeat_s: float = 1.0,
        dead_after_s: float = 5.0,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._run_workflow_step = run_workflow_step
        self._run_order_step = run_order_step
        self.worker_id = worker_id
        self._slots = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._heartbeat_s = heartbeat_s
        self._dead_after = timedelta(seconds=dead_after_s)
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        # Claims of failed steps whose release failed too (the database was away). Nobody else takes
        # a live worker's claims, so unless we put them back once Postgres returns, they are stranded.
        self._unreleased: set[int] = set()
        self._listener: asyncpg.Connection | None = None
        self._state = _State.NEW
        self.steps_run = 0
        self.steps_failed = 0

    async def start(self) -> None:
        if self._state is not _State.NEW:
            raise OrchestratorError(f"scheduler is {self._state.value}; it starts once")
        await self._pool.execute(
            "INSERT INTO workers (worker_id) VALUES ($1) "
            "ON CONFLICT (worker_id) DO UPDATE SET last_seen = now()",
            self.worker_id,
        )
        self._state = _State.RUNNING
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="scheduler-heartbeat"),
            asyncio.create_task(self._listen(), name="scheduler-listen"),
            asyncio.create_task(self._loop(), name="scheduler-loop"),
        ]

    async def stop(self, *, grace_s: float = 20.0) -> None:
        """Stop claiming, let in-flight steps finish (up to `grace_s`), release our claims."""
        if self._state is not _State.RUNNING:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        self._wake.set()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace_s)
        for task in [*self._tasks, *self._inflight]:
            task.cancel()
        for task in [*self._tasks, *self._inflight]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Unfinished claims go back to pending now, rather than after dead_after_s.
            await self._pool.execute(
                "UPDATE timers SET fired_at = NULL, claimed_by = NULL WHERE claimed_by = $1 "
                "AND NOT EXISTS (SELECT 1 FROM timers p "
                "WHERE p.target = timers.target AND p.kind = timers.kind "
                "AND p.fired_at IS NULL)",
                self.worker_id,
            )
            await self._pool.execute("DELETE FROM workers WHERE worker_id = $1", self.worker_id)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _heartbeat(self) -> None:
        while self._state is _State.RUNNING:
            try:
                await self._pool.execute(
                    "UPDATE workers SET last_seen = now() WHERE worker_id = $1", self.worker_id
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("heartbeat failed", error=str(exc))
            await asyncio.sleep(self._heartbeat_s)

    async def _listen(self) -> None:
        """Keep a LISTEN connection; reconnect with backoff if Postgres goes away."""
        delay = 0.5
        while self._state is _State.RUNNING:
            try:
                self._listener = await connect(self._database_url)
                await self._listener.add_listener("timers", self._on_notify)
                delay = 0.5
                while self._state is _State.RUNNING and not self._listener.is_closed():  # noqa: ASYNC110
                    await asyncio.sleep(1.0)
            except (OrchestratorError, OSError, asyncpg.PostgresError) as exc:
                log.warning("timer listener lost", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while self._state is _State.RUNNING:
            self._wake.clear()
            try:
                await self._retry_releases()
                claimed = await self._pool.fetch(_CLAIM, self.worker_id, self._batch, self._dead_after)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("claiming timers failed", error=str(exc))
                claimed = []
                await asyncio.sleep(1.0)
            for timer in claimed:
                await self._slots.acquire()
                task = asyncio.create_task(self._run(timer))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if len(claimed) < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)

    async def _run(self, timer: asyncpg.Record) -> None:
        try:
            if timer["kind"] == STEP:
                await self._run_workflow_step(timer["workflow_id"])
            elif timer["kind"] == ORDER_STEP:
                await self._run_order_step(timer["order_id"])
            await self._pool.execute("DELETE FROM timers WHERE id = $1", timer["id"])
            self.steps_run += 1
        except Exception as exc:
            self.steps_failed += 1
            log.warning(
                "step failed; it will run again", timer_id=timer["id"], kind=timer["kind"], error=repr(exc)
            )
            try:
                await self._release(timer["id"])
            except Exception:  # whatever the cause, the claim must not stay ours forever
                self._unreleased.add(timer["id"])
        finally:
            self._slots.release()
            self._wake.set()

    async def _retry_releases(self) -> None:
        for timer_id in sorted(self._unreleased):
            try:
                await self._release(timer_id)
            except Exception as exc:  # the database is still away: retried next round
                log.warning("releasing a failed step's claim failed", timer_id=timer_id, error=repr(exc))
                return
            self._unreleased.discard(timer_id)

    async def _release(self, timer_id: int) -> None:
        """Put a failed step back, a little later; if a newer pending timer exists, this one goes."""
        try:
            await self._pool.execute(
                "UPDATE timers SET fired_at = NULL, claimed_by = NULL, due_at = now() + interval '1 second' "
                "WHERE id = $1",
                timer_id,
            )
        except asyncpg.UniqueViolationError:
            await self._pool.execute("DELETE FROM timers WHERE id = $1", timer_id)
