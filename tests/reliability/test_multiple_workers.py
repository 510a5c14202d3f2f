"""Several workers: two `orchestrator run` processes share one consumer group; one is SIGKILLed and a
third joins mid-run. Partitions move to the newcomer, no line item is advanced by two workers at
once (each history is gap-free, chained and written in sequence order — the checker's
`transitions_valid`), no provider call is sent by two workers at the same time (the sandbox never
answers `idempotency_key_locked`) and nothing is lost or applied twice.

Every provider write is slowed (a sandbox latency fault, shorter than the client's timeout and the
dead-worker timeout) while the worker dies, the group rebalances and the second batch is shared, so
calls are in flight across the kill and the takeover: two workers sending one key would overlap at
the provider and be answered `locked`. That held for line items' calls from the start; an order's
own calls (create, submit) did overlap across live workers until a step's pending twin was kept
from other workers while one holds its claim (store/timers.py `_CLAIM`). The traffic and the
sandbox's dice come from TEST_SEED.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from orchestrator.localstack import LocalStack, free_port
from orchestrator.settings import Settings
from tests.reliability.harness import Rig, WorkerProcess, drain, order_messages, progress, publish, rig

GOOD = ("assigned", "port", "temp_port", "mixed", "cancel", "amend", "duplicate")
# Below the rig's client timeout (4 s) and the dead-worker timeout (5 s): a slow call is never
# re-sent by its own worker, nor taken over while its worker still lives, so `locked` can only
# mean two workers sending one key at once.
SLOW_WRITES = {"match": "POST *", "kind": "latency", "latencyMs": 1200, "probability": 0.6}


async def _until(condition: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float, r: Rig) -> None:
    """Poll `condition` until it holds; fail naming `what`, with the workers' logs, when it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{r.logs()}")
        await asyncio.sleep(0.1)


async def _calls_in_flight(settings: Settings) -> int:
    """Provider calls sent and not yet answered (their intent stored, no outcome yet)."""
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM provider_calls WHERE status = 'intent'")
        return count
    finally:
        await conn.close()


async def _slow_calls(settings: Settings) -> int:
    """Provider calls that took the injected latency (the fault was felt, not just installed)."""
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM provider_calls WHERE latency_ms >= $1", SLOW_WRITES["latencyMs"]
        )
        return count
    finally:
        await conn.close()


def _assigned_partitions(worker: WorkerProcess) -> set[str]:
    """Partitions the worker's consumer was ever assigned, from its INFO log."""
    seen: set[str] = set()
    for line in worker.log_tail(2_000_000).splitlines():
        if '"partitions_assigned"' in line:
            seen.update(json.loads(line).get("partitions", []))
    return seen


async def test_two_workers_one_killed_one_added_share_the_work_without_overlap(
    stack: LocalStack, migrated_database: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    async with rig(kafka=stack.kafka, database_url=migrated_database, log_dir=tmp_path, seed=seed) as r:
        await r.control.faults(SLOW_WRITES)
        first = WorkerProcess(r.settings, log_path=tmp_path / "first.log", log_level="INFO")
        doomed = WorkerProcess(
            r.settings, log_path=tmp_path / "doomed.log", webhook_port=free_port(), log_level="INFO"
        )
        for worker in (first, doomed):
            worker.start()
            r.workers.append(worker)
        await publish(r.settings, order_messages(rng, 10, prefix="a", kinds=GOOD))

        async def working() -> bool:
            return (await progress(r.settings)).workflows >= 5 and await _calls_in_flight(r.settings) >= 2

        # Killed with slow calls in flight: its keys are still held by the provider when the others
        # pick up its partitions and, after the dead-worker timeout, its claimed steps.
        await _until(working, what="5 workflows and 2 slow calls in flight", timeout_s=60, r=r)
        doomed.kill()
        newcomer = WorkerProcess(
            r.settings, log_path=tmp_path / "newcomer.log", webhook_port=free_port(), log_level="INFO"
        )
        newcomer.start()
        r.workers.append(newcomer)

        # The group rebalances within a heartbeat or two of the join; the second batch is published
        # after it, so the two live workers share it (a fast drain used to end the test first).
        async def rebalanced() -> bool:
            assert newcomer.alive, f"the newcomer died\n{r.logs()}"
            return bool(_assigned_partitions(newcomer))

        await _until(rebalanced, what="a partition for the newcomer", timeout_s=60, r=r)
        await publish(r.settings, order_messages(rng, 10, prefix="b", kinds=GOOD))

        await drain(r, timeout_s=180, keep_alive=False)
        await r.control.faults()
        assert first.alive, r.logs()
        assert newcomer.alive, r.logs()
        report = await r.report()
        assert report.ok, report.explain()
        assert report.states["failed"] == 0, report.explain()
        assert report.checked["transitions_valid"] >= 20, report.explain()
        requests = await r.control.ledger(kind="request")
        outcomes = Counter(e["outcome"] for e in requests)
        locked = [e for e in requests if e["outcome"] == "locked"]
        assert not locked, f"two workers sent one key at once: {outcomes}\n{locked}"
        assert outcomes["mismatch"] == 0, f"one key went out with different bytes: {outcomes}"
        assert await _slow_calls(r.settings) > 0, "the latency fault never slowed a call"
        assert await r.stop_all() == [0, 0], r.logs()
