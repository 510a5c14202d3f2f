"""One worker per step: while a worker holds a claim on an order's (or a line item's) step, no other
worker claims that step's pending twin, so two workers never send the step's call at once (the
provider would answer `idempotency_key_locked`). The worker holding the claim does claim the twin:
its scheduler runs it after the step in hand (tests/engine/test_claims.py::…_runs_after)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg

from orchestrator.engine import Scheduler
from orchestrator.store.timers import Claims, TimerKind, schedule

DEAD_AFTER = timedelta(seconds=5)


async def _pending_and_claimed(conn: asyncpg.Connection, order_id: str, claimant: str) -> None:
    """An order step claimed by `claimant`, and its pending twin (asked for while it runs)."""
    await conn.execute(
        "INSERT INTO orders (order_id, customer, state) VALUES ($1, '{}', 'in_progress')", order_id
    )
    await conn.execute(
        "INSERT INTO timers (order_id, kind, due_at, fired_at, claimed_by) VALUES ($1, $2, now(), now(), $3)",
        order_id,
        str(TimerKind.ORDER_STEP),
        claimant,
    )
    await schedule(
        conn, kind=TimerKind.ORDER_STEP, order_id=order_id, due_at=await conn.fetchval("SELECT now()")
    )


async def test_a_step_claimed_by_one_worker_is_not_claimed_by_another(migrated_database: str) -> None:
    pool = await asyncpg.create_pool(migrated_database, min_size=1, max_size=2)
    assert pool is not None
    try:
        a, b = Claims(pool, worker_id="worker-a"), Claims(pool, worker_id="worker-b")
        await a.register()
        await b.register()
        async with pool.acquire() as conn:
            await _pending_and_claimed(conn, "o-held", "worker-a")
            await conn.execute(
                "INSERT INTO orders (order_id, customer, state) VALUES ('o-free', '{}', 'in_progress')"
            )
            await schedule(
                conn, kind=TimerKind.ORDER_STEP, order_id="o-free", due_at=await conn.fetchval("SELECT now()")
            )
        claimed_by_b = [
            r["order_id"] for r in await b.claim(batch=10, dead_after=DEAD_AFTER, finished=[]) if r["id"]
        ]
        assert claimed_by_b == ["o-free"], "worker B claimed the twin of a step worker A is running"
        claimed_by_a = [
            r["order_id"] for r in await a.claim(batch=10, dead_after=DEAD_AFTER, finished=[]) if r["id"]
        ]
        assert claimed_by_a == ["o-held"], "the worker running the step must take its twin (and run it after)"
    finally:
        await pool.close()


async def test_a_dead_workers_claim_is_taken_over_before_its_twin(migrated_database: str) -> None:
    """The twin waits for the takeover, and then belongs to the worker that took the claim over."""
    pool = await asyncpg.create_pool(migrated_database, min_size=1, max_size=2)
    assert pool is not None
    try:
        b = Claims(pool, worker_id="worker-b")
        await b.register()
        async with pool.acquire() as conn:
            await _pending_and_claimed(conn, "o-orphan", "worker-dead")  # never heartbeated: dead
        first = [
            (r["order_id"], r["id"])
            for r in await b.claim(batch=10, dead_after=DEAD_AFTER, finished=[])
            if r["id"]
        ]
        assert [order for order, _ in first] == ["o-orphan"], first  # the stale claim only
        second = [
            r["order_id"] for r in await b.claim(batch=10, dead_after=DEAD_AFTER, finished=[]) if r["id"]
        ]
        assert second == ["o-orphan"], second  # now its own claim: the twin too
    finally:
        await pool.close()


async def test_a_twin_claimed_while_its_step_runs_here_runs_after(migrated_database: str) -> None:
    """The scheduler runs a step's twin after the step in hand, never beside it."""
    pool = await asyncpg.create_pool(migrated_database, min_size=1, max_size=4)
    assert pool is not None
    running: list[str] = []
    overlaps: list[str] = []
    runs: list[str] = []
    release = asyncio.Event()

    async def order_step(order_id: str) -> None:
        if order_id in running:
            overlaps.append(order_id)
        running.append(order_id)
        runs.append(order_id)
        try:
            if len(runs) == 1:
                await release.wait()  # the first run is slow: its twin is claimed meanwhile
        finally:
            running.remove(order_id)

    async def workflow_step(workflow_id: uuid.UUID, order_id: str | None) -> None:
        raise AssertionError("no line item steps here")

    scheduler = Scheduler(
        pool=pool,
        database_url=migrated_database,
        run_workflow_step=workflow_step,
        run_order_step=order_step,
        worker_id="worker-solo",
        idle_poll_s=0.1,
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO orders (order_id, customer, state) VALUES ('o-1', '{}', 'in_progress')"
            )
            await schedule(
                conn, kind=TimerKind.ORDER_STEP, order_id="o-1", due_at=await conn.fetchval("SELECT now()")
            )
        await scheduler.start()
        for _ in range(100):
            if runs:
                break
            await asyncio.sleep(0.05)
        async with pool.acquire() as conn:  # asked again while the first run is in progress
            await schedule(
                conn, kind=TimerKind.ORDER_STEP, order_id="o-1", due_at=await conn.fetchval("SELECT now()")
            )
        for _ in range(100):
            pending = await pool.fetchval("SELECT count(*) FROM timers WHERE fired_at IS NULL")
            if pending == 0:
                break
            await asyncio.sleep(0.05)
        assert pending == 0, "the twin was never claimed"
        release.set()
        for _ in range(100):
            if len(runs) >= 2 and not running:
                break
            await asyncio.sleep(0.05)
        assert runs == ["o-1", "o-1"], runs
        assert overlaps == [], "the twin ran beside its step"
    finally:
        release.set()
        await scheduler.stop(grace_s=2)
        await pool.close()


async def test_started_work_is_claimed_before_new_work_however_old(migrated_database: str) -> None:
    """A backlog finishes orders from its first minute: the first steps of new orders (`fresh`,
    set at intake) are claimed only in the room the steps of started orders leave, even when
    they have waited longer. A started step's upsert makes a fresh timer a started one."""
    pool = await asyncpg.create_pool(migrated_database, min_size=1, max_size=2)
    assert pool is not None
    try:
        worker = Claims(pool, worker_id="worker-a")
        await worker.register()
        async with pool.acquire() as conn:
            now = await conn.fetchval("SELECT now()")
            for n in range(4):
                await conn.execute(
                    "INSERT INTO orders (order_id, customer, state) VALUES ($1, '{}', 'in_progress')",
                    f"o-{n}",
                )
            # o-0 and o-1 are new and have waited a minute; o-2 was started and is due now
            for n in (0, 1):
                await schedule(
                    conn, kind=TimerKind.ORDER_STEP, order_id=f"o-{n}", due_at=now - timedelta(minutes=1),
                    fresh=True,
                )  # fmt: skip
            await schedule(conn, kind=TimerKind.ORDER_STEP, order_id="o-2", due_at=now)
            # o-3 was new, then its order moved on (a started step asked for it): no longer fresh
            await schedule(conn, kind=TimerKind.ORDER_STEP, order_id="o-3", due_at=now, fresh=True)
            await schedule(conn, kind=TimerKind.ORDER_STEP, order_id="o-3", due_at=now)
        first = [
            r["order_id"] for r in await worker.claim(batch=2, dead_after=DEAD_AFTER, finished=[]) if r["id"]
        ]
        assert sorted(first) == ["o-2", "o-3"], f"new work was claimed before started work: {first}"
        second = [
            r["order_id"] for r in await worker.claim(batch=2, dead_after=DEAD_AFTER, finished=[]) if r["id"]
        ]
        assert second == ["o-0", "o-1"], f"new work, oldest first, once started work is claimed: {second}"
    finally:
        await pool.close()
