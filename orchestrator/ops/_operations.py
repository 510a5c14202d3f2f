"""`Operations`: every operator action as one library object, shared by the CLI and the admin API.

Reads go straight to the store; writes go through the engine's journal under the engine's locks,
and every write is recorded in `operator_audit` first.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.connect import ConnectClient, Requests
from orchestrator.engine import Clock, ConnectReader, Journal, ProviderReader, SystemClock
from orchestrator.logs import get_logger
from orchestrator.ops import _audit
from orchestrator.ops._actions import cancel_workflow
from orchestrator.ops._actions import retry_now as _retry_now
from orchestrator.ops._errors import ActionRefused, InvalidInput, PlanChanged, ReasonRequired
from orchestrator.ops._filters import WorkflowFilter, check_text
from orchestrator.ops._replay import (
    ReplayPlan,
    execute_replay,
    load_selection,
    plan_replay,
    replay_filter,
    validate_from_state,
)
from orchestrator.ops._story import list_workflows, show, state_counts
from orchestrator.ops._tracing import span
from orchestrator.settings import Settings
from orchestrator.store import open_pool, timers

log = get_logger(__name__)

REASON_MIN = 3
REASON_MAX = 500
DEFAULT_RATE_PER_S = 5.0


async def probe_provider(reader: ProviderReader) -> None:
    """One cheap read: any answer but an error means the provider is reachable and accepts our key."""
    await reader.get(Requests.list_subscriptions(limit=1))


def check_reason(reason: str | None) -> str:
    """A reason is required for every change, and must say something."""
    text = (check_text(reason, field_name="reason") or "").strip()
    if len(text) < REASON_MIN:
        raise ReasonRequired(f"reason: required (at least {REASON_MIN} characters) for the audit trail")
    if len(text) > REASON_MAX:
        raise InvalidInput(f"reason: at most {REASON_MAX} characters", field="reason")
    return text


def check_actor(actor: str | None) -> str:
    text = (check_text(actor, field_name="actor") or "").strip()
    if not text:
        raise InvalidInput("actor: who is acting must be known for the audit trail", field="actor")
    return text[:100]


class Operations:
    """Inspect, replay, cancel and retry-now over one database and one provider reader."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        reader: ProviderReader,
        status_topic: str,
        clock: Clock | None = None,
        rate_per_s: float = DEFAULT_RATE_PER_S,
    ) -> None:
        self.pool = pool
        self.reader = reader
        self._journal = Journal(status_topic=status_topic)
        self._clock = clock or SystemClock()
        self._rate_per_s = rate_per_s

    async def list(self, flt: WorkflowFilter) -> dict[str, Any]:
        with span("ops.list"):
            async with self.pool.acquire() as conn:
                return await list_workflows(conn, flt, now=self._clock.now())

    async def counts(self) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            return await state_counts(conn)

    async def show(self, ident: str) -> dict[str, Any]:
        check_text(ident, field_name="id")
        with span("ops.show", ident=ident):
            async with self.pool.acquire() as conn:
                return await show(conn, ident)

    async def plan_replay(
        self, flt: WorkflowFilter, *, reason: str | None, from_state: str | None = None
    ) -> ReplayPlan:
        """The dry run: no writes, provider GETs only."""
        reason = check_reason(reason)
        state = validate_from_state(from_state)
        flt = replay_filter(flt)
        now = self._clock.now()
        with span("ops.replay.plan"):
            async with self.pool.acquire() as conn:
                selection = await load_selection(conn, flt, now=now)
                if not selection:
                    raise ActionRefused("no workflow matches: nothing to replay", filter=flt.to_dict())
                return await plan_replay(
                    conn, self.reader, selection=selection, from_state=state, reason=reason, flt=flt, now=now
                )

    async def replay(
        self,
        flt: WorkflowFilter,
        *,
        reason: str | None,
        actor: str,
        from_state: str | None = None,
        plan: ReplayPlan | None = None,
        expect_fingerprint: str | None = None,
        rate_per_s: float | None = None,
    ) -> dict[str, Any]:
        """Execute a replay. Pass the `plan` the operator saw (CLI), or the `expect_fingerprint` of
        it (API, console): a different plan now is refused with `PlanChanged`, never executed."""
        actor = check_actor(actor)
        if plan is None:
            plan = await self.plan_replay(flt, reason=reason, from_state=from_state)
        if expect_fingerprint is not None and plan.fingerprint != expect_fingerprint:
            raise PlanChanged(
                "the replay plan changed since it was shown; review the new plan and confirm again",
                fingerprint=plan.fingerprint,
            )
        rate = rate_per_s or self._rate_per_s
        if rate <= 0:
            raise InvalidInput("rate: must be above 0 workflows per second", field="rate")
        ids = [uuid.UUID(w.workflow_id) for w in plan.workflows]
        with span("ops.replay.execute", workflows=len(ids), fingerprint=plan.fingerprint):
            audit_id = await _audit.begin(
                self.pool,
                actor=actor,
                action="replay",
                reason=plan.reason,
                workflow_ids=ids,
                filter_=plan.filter,
                plan=plan.to_dict(),
                now=self._clock.now(),
            )
            try:
                results = await execute_replay(
                    self.pool,
                    plan,
                    actor=actor,
                    audit_id=audit_id,
                    journal=self._journal,
                    now=self._clock.now,
                    rate_per_s=rate,
                )
            except Exception as exc:
                await _audit.finish(
                    self.pool, audit_id, outcome={"error": repr(exc)[:1000]}, now=self._clock.now()
                )
                raise
            outcome = {
                "resumed": sum(r.result == "resumed" for r in results),
                "stale": sum(r.result == "stale" for r in results),
                "refused": sum(r.result == "refused" for r in results),
                "results": [asdict(r) for r in results],
            }
            await _audit.finish(self.pool, audit_id, outcome=outcome, now=self._clock.now())
            await _wake_workers(self.pool)
        return {"audit_id": audit_id, "plan": plan.to_dict(), "outcome": outcome}

    async def cancel(self, workflow_id: uuid.UUID, *, reason: str | None, actor: str) -> dict[str, Any]:
        reason = check_reason(reason)
        actor = check_actor(actor)

        async def act(conn: asyncpg.Connection, audit_id: int) -> dict[str, Any]:
            return await cancel_workflow(
                conn,
                workflow_id,
                actor=actor,
                reason=reason,
                audit_id=audit_id,
                journal=self._journal,
                now=self._clock.now(),
            )

        return await self._audited("cancel", workflow_id, reason=reason, actor=actor, act=act)

    async def retry_now(self, workflow_id: uuid.UUID, *, reason: str | None, actor: str) -> dict[str, Any]:
        reason = check_reason(reason)
        actor = check_actor(actor)

        async def act(conn: asyncpg.Connection, audit_id: int) -> dict[str, Any]:
            return await _retry_now(conn, workflow_id)

        return await self._audited("retry_now", workflow_id, reason=reason, actor=actor, act=act)

    async def _audited(
        self,
        action: str,
        workflow_id: uuid.UUID,
        *,
        reason: str,
        actor: str,
        act: Callable[[asyncpg.Connection, int], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """One workflow's action in one transaction with its audit row: begun, `act`, finished."""
        with span(f"ops.{action}", workflow_id=str(workflow_id)):
            async with self.pool.acquire() as conn, conn.transaction():
                audit_id = await _audit.begin(
                    conn,
                    actor=actor,
                    action=action,
                    reason=reason,
                    workflow_ids=[workflow_id],
                    filter_=None,
                    plan=None,
                    now=self._clock.now(),
                )
                result = await act(conn, audit_id)
                await _audit.finish(conn, audit_id, outcome=result, now=self._clock.now())
                faults.reach("operator.before_commit", action)
            faults.reach("operator.after_commit", action)
            await _wake_workers(self.pool)
        return {"audit_id": audit_id, **result}


async def _wake_workers(pool: asyncpg.Pool) -> None:
    """The steps an action scheduled run now rather than at the workers' next idle poll. Best
    effort: the action has committed, and the poll finds its steps anyway."""
    try:
        async with pool.acquire() as conn:
            await timers.wake_workers(conn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not wake the workers; they find the steps at their next poll", error=repr(exc))


@contextlib.asynccontextmanager
async def open_operations(
    settings: Settings, *, clock: Clock | None = None, rate_per_s: float = DEFAULT_RATE_PER_S
) -> AsyncIterator[Operations]:
    """`Operations` with its own small pool and Connect client, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            open_pool(settings.database.url.get_secret_value(), min_size=1, max_size=4)
        )
        client = await stack.enter_async_context(ConnectClient(config=settings.connect.to_config()))
        yield Operations(
            pool=pool,
            reader=ConnectReader(client, timeout_s=settings.connect.total_timeout_s),
            status_topic=settings.kafka.status_topic,
            clock=clock,
            rate_per_s=rate_per_s,
        )
