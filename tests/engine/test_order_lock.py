"""The order row's lock: the items of one order step side by side, what changes the order waits for
them, and items that settle at the same moment still derive the order's state from each other's
final states. Against a real database, with the interleavings forced by holding transactions open.

Before, every item step took the order row FOR UPDATE, so five items made due together by their
order's create ran one at a time (seen in a 100k drain: most sessions waiting on that lock).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg

from orchestrator.engine import CrmIntake, SystemClock
from orchestrator.engine._journal import lock_workflow, refresh_order_state
from orchestrator.engine._steps import lock_order
from orchestrator.events import OrderState
from orchestrator.kafka import ConsumedRecord
from orchestrator.store import open_pool
from tests.e2e.support import STRUCTURED, crm_event, order_submitted, subscription

T = TypeVar("T")
_offsets = itertools.count()
GUARD_S = 20.0  # only a bound on a hang; nothing here is timed


async def _order_of_two(pool: asyncpg.Pool, order_id: str) -> list[uuid.UUID]:
    intake = CrmIntake(pool=pool, status_topic="status", clock=SystemClock())
    data = order_submitted(order_id, subscription("li-1"), subscription("li-2"))
    await intake(
        ConsumedRecord(
            topic="crm", partition=0, offset=next(_offsets), key=order_id.encode(),
            value=crm_event("crm.order.submitted", data), headers=tuple(STRUCTURED), timestamp_ms=0,
        )
    )  # fmt: skip
    rows = await pool.fetch(
        "SELECT workflow_id FROM workflows WHERE order_id = $1 ORDER BY line_item_id", order_id
    )
    return [r["workflow_id"] for r in rows]


async def _waits_for_a_lock(pool: asyncpg.Pool, conn: asyncpg.Connection, task: asyncio.Task[Any]) -> None:
    """Until `conn`'s backend is blocked on a lock (bounded); fails if `task` finished instead."""
    pid = conn.get_server_pid()
    for _ in range(2000):
        assert not task.done(), "expected to wait for the lock, but it was granted"
        if await pool.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid) == "Lock":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the statement neither waited for a lock nor finished")


async def _done(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, GUARD_S)


async def test_sibling_steps_share_the_order_and_its_writers_wait_for_them(migrated_database: str) -> None:
    async with open_pool(migrated_database) as pool:
        first, second = await _order_of_two(pool, "o-share")
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as writer:
            ta, tb, tw = a.transaction(), b.transaction(), writer.transaction()
            for tx in (ta, tb, tw):
                await tx.start()
            assert await lock_order(a, "o-share", shared=True) is not None
            assert await lock_workflow(a, first) is not None
            # the sibling's step is granted both locks while the first step's transaction is open
            assert await _done(lock_order(b, "o-share", shared=True)) is not None
            assert await _done(lock_workflow(b, second)) is not None
            # what changes the order (its create/submit step, intake, operators) waits for both
            exclusive = asyncio.create_task(lock_order(writer, "o-share"))
            await _waits_for_a_lock(pool, writer, exclusive)
            await ta.commit()
            await _waits_for_a_lock(pool, writer, exclusive)
            await tb.commit()
            assert await _done(exclusive) is not None
            await tw.commit()


async def test_items_settling_at_once_each_see_the_other_and_the_order_event_comes_once(
    migrated_database: str,
) -> None:
    async with open_pool(migrated_database) as pool:
        first, second = await _order_of_two(pool, "o-settle")
        async with pool.acquire() as a, pool.acquire() as b:
            ta, tb = a.transaction(), b.transaction()
            await ta.start()
            await tb.start()
            for conn, workflow_id in ((a, first), (b, second)):
                await lock_order(conn, "o-settle", shared=True)
                await lock_workflow(conn, workflow_id)
                await conn.execute(
                    "UPDATE workflows SET state = 'activated' WHERE workflow_id = $1", workflow_id
                )
            # the first to refresh sees its sibling still in progress (not committed)
            assert await _done(refresh_order_state(a, "o-settle", now=_now(), status_topic="status")) == (
                OrderState.IN_PROGRESS
            )
            late = asyncio.create_task(refresh_order_state(b, "o-settle", now=_now(), status_topic="status"))
            await _waits_for_a_lock(pool, b, late)
            await ta.commit()
            # ... and the second, let in after the first committed, sees both activated
            assert await _done(late) == OrderState.ACTIVATED
            await tb.commit()
        events = [
            json.loads(r["value"])
            for r in await pool.fetch("SELECT value FROM outbox WHERE key = $1 ORDER BY id", b"o-settle")
        ]
        order_events = [
            (e["data"]["state"], e["data"]["sequence"])
            for e in events
            if e["type"] == "provisioning.order.state_changed"
        ]
        assert order_events == [("in_progress", 1), ("activated", 2)]
        assert await pool.fetchval("SELECT state FROM orders WHERE order_id = 'o-settle'") == "activated"


def _now() -> Any:
    return SystemClock().now()
