"""Durable time: claims due timers with SKIP LOCKED and runs their steps.

A timer is claimed by setting `fired_at` and `claimed_by`, and deleted once its step is done (in
the worker's next claim statement, so a busy worker spends one commit per claim, not one per
step; a crash before that only runs an idempotent step once more). A worker restarted under the
same id frees its previous run's claims at start. A
worker heartbeats into `workers`; a claim whose worker has not been seen for `dead_after_s` is
taken over by any live worker, so a SIGKILLed process delays its steps by seconds, not minutes.
Data commits do not NOTIFY (a NOTIFY serialises commits cluster-wide): the worker wakes the loop
(`wake()`) after its own commits that schedule steps, each finished step wakes it, other
processes (an operator's action) NOTIFY channel `timers` after their commit, and otherwise it
sleeps at most `idle_poll_s` (another worker's timers, a dead worker's claims). Steps of started
work are claimed before the first steps of new work (`timers.fresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from orchestrator.errors import OrchestratorError
from orchestrator.lifecycle import AsyncLifecycle, RunState
from orchestrator.logs import get_logger
from orchestrator.store import connect
from orchestrator.store.timers import TIMERS_CHANNEL, Claims, TimerKind

log = get_logger(__name__)


class Scheduler(AsyncLifecycle):
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        database_url: str,
        run_workflow_step: Callable[[uuid.UUID, str | None], Awaitable[None]],
        run_order_step: Callable[[str], Awaitable[None]],
        worker_id: str,
        concurrency: int = 16,
        batch: int = 64,
        heartbeat_s: float = 1.0,
        dead_after_s: float = 5.0,
        idle_poll_s: float = 1.0,
        min_claim_interval_s: float = 0.01,
        after_step: Callable[[], None] | None = None,
    ) -> None:
        self._claims = Claims(pool, worker_id=worker_id)
        self._database_url = database_url
        self._run_workflow_step = run_workflow_step
        self._run_order_step = run_order_step
        self.worker_id = worker_id
        self._slots = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._heartbeat_s = heartbeat_s
        self._dead_after = timedelta(seconds=dead_after_s)
        self._idle_poll_s = idle_poll_s
        # Under load every finished step and every wake-up wakes the loop: claiming at most this
        # often lets one claim take many timers (one commit) instead of one each.
        self._min_claim_interval_s = min_claim_interval_s
        # Told when a step has finished (its commits are durable): the worker wakes its outbox
        # relay with it, since no NOTIFY does that any more.
        self._after_step = after_step
        self._finished: list[int] = []  # timers whose steps are done, deleted with the next claim
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        # Claims of failed steps whose release failed too (the database was away). Nobody else takes
        # a live worker's claims, so unless we put them back once Postgres returns, they are stranded.
        self._unreleased: set[int] = set()
        # Steps running now, by (kind, target) -> asked again meanwhile: a twin claimed while its
        # step runs here runs after it, never beside it (other workers do not claim it at all).
        self._running: dict[tuple[str, str], bool] = {}
        self._listener: asyncpg.Connection | None = None
        self._state = RunState.NEW
        self.steps_run = 0
        self.steps_failed = 0

    async def start(self) -> None:
        if self._state is not RunState.NEW:
            raise OrchestratorError(f"scheduler is {self._state.value}; it starts once")
        await self._claims.register()
        await self._release_previous_claims()
        self._state = RunState.RUNNING
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="scheduler-heartbeat"),
            asyncio.create_task(self._listen(), name="scheduler-listen"),
            asyncio.create_task(self._loop(), name="scheduler-loop"),
        ]

    async def stop(self, *, grace_s: float = 20.0) -> None:
        """Stop claiming, let in-flight steps finish (up to `grace_s`), release our claims."""
        if self._state is not RunState.RUNNING:
            self._state = RunState.STOPPED
            return
        self._state = RunState.STOPPED
        self._wake.set()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace_s)
        for task in [*self._tasks, *self._inflight]:
            task.cancel()
        for task in [*self._tasks, *self._inflight]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            finished, self._finished = self._finished, []
            await self._claims.delete(finished)
            await self._claims.release_all()
            await self._claims.unregister()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def _release_previous_claims(self) -> None:
        for _ in range(3):  # a concurrent schedule() may add a pending twin in between: try again
            try:
                await self._claims.release_previous()
                return
            except asyncpg.UniqueViolationError:
                await asyncio.sleep(0.05)
        log.warning("claims of a previous run stay until another worker takes them", worker_id=self.worker_id)

    async def _heartbeat(self) -> None:
        while self._state is RunState.RUNNING:
            try:
                await self._claims.heartbeat()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("heartbeat failed", error=str(exc))
            await asyncio.sleep(self._heartbeat_s)

    async def _listen(self) -> None:
        """Keep a LISTEN connection; reconnect with backoff if Postgres goes away."""
        delay = 0.5
        while self._state is RunState.RUNNING:
            try:
                self._listener = await connect(self._database_url)
                await self._listener.add_listener(TIMERS_CHANNEL, self._on_notify)
                delay = 0.5
                while self._state is RunState.RUNNING and not self._listener.is_closed():  # noqa: ASYNC110
                    await asyncio.sleep(1.0)
            except (OrchestratorError, OSError, asyncpg.PostgresError) as exc:
                log.warning("timer listener lost", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def wake(self) -> None:
        """Claim now: an in-process writer has just committed a due timer (data commits do not
        NOTIFY; only other processes' rare writes, such as an operator's, do)."""
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_claim = 0.0
        while self._state is RunState.RUNNING:
            pause = last_claim + self._min_claim_interval_s - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            self._wake.clear()
            last_claim = loop.time()
            finished, self._finished = self._finished, []
            try:
                await self._retry_releases()
                rows = await self._claims.claim(
                    batch=self._batch, dead_after=self._dead_after, finished=finished
                )
            except Exception as exc:  # any: if this loop died, heartbeats would keep our claims ours forever
                log.warning("claiming timers failed", error=repr(exc))
                self._finished.extend(finished)  # deleted with a later claim
                rows = []
                await asyncio.sleep(1.0)
            claimed = [row for row in rows if row["id"] is not None]
            next_due_s = next((row["next_due_s"] for row in rows if row["id"] is None), None)
            for timer in claimed:
                await self._slots.acquire()
                task = asyncio.create_task(self._run(timer))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if len(claimed) < self._batch:
                # Sleep until woken, or until the next timer is due (a poll in 0.5 s runs then,
                # not at the next idle poll), or the idle poll (other workers' dead claims).
                wait_s = self._idle_poll_s if next_due_s is None else min(self._idle_poll_s, next_due_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait_s, 0.0))

    async def _run(self, timer: asyncpg.Record) -> None:
        try:
            await self._run_once_at_a_time(timer)
            self._finished.append(timer["id"])  # deleted with the next claim, in its statement
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
            if self._after_step is not None:
                self._after_step()

    async def _run_once_at_a_time(self, timer: asyncpg.Record) -> None:
        """Run the timer's step; if that step is already running here, have it run once more after."""
        key = (str(timer["kind"]), str(timer["workflow_id"] or timer["order_id"]))
        if key in self._running:
            self._running[key] = True
            return
        self._running[key] = False
        try:
            while True:
                if timer["kind"] == TimerKind.STEP:
                    await self._run_workflow_step(timer["workflow_id"], timer["order_id"])
                elif timer["kind"] == TimerKind.ORDER_STEP:
                    await self._run_order_step(timer["order_id"])
                if not self._running[key]:
                    return
                self._running[key] = False
        finally:
            del self._running[key]

    async def _retry_releases(self) -> None:
        for timer_id in sorted(self._unreleased):
            try:
                await self._release(timer_id)
            except Exception as exc:  # the database is still away: retried next round
                log.warning("releasing a failed step's claim failed", timer_id=timer_id, error=repr(exc))
                return
            self._unreleased.discard(timer_id)

    async def _release(self, timer_id: int) -> None:
        await self._claims.release(timer_id)
