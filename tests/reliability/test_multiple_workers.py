"""Several workers: two `orchestrator run` processes share one consumer group; one is SIGKILLed and a
third joins mid-run. Partitions move to the newcomer, no line item is advanced by two workers at
once (each history is gap-free, chained and written in sequence order — the checker's
`transitions_valid`), no provider call is sent by two workers at the same time (the sandbox never
answers `idempotency_key_locked`) and nothing is lost or applied twice.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path

from orchestrator.localstack import LocalStack, free_port
from tests.reliability.harness import WorkerProcess, drain, order_messages, progress, publish, rig

GOOD = ("assigned", "port", "temp_port", "mixed", "cancel", "amend", "duplicate")


def _assigned_partitions(worker: WorkerProcess) -> set[str]:
    """Partitions the worker's consumer was ever assigned, from its INFO log."""
    seen: set[str] = set()
    for line in worker.log_tail(2_000_000).splitlines():
        if '"partitions_assigned"' in line:
            seen.update(json.loads(line).get("partitions", []))
    return seen


async def test_two_workers_one_killed_one_added_share_the_work_without_overlap(
    stack: LocalStack, migrated_database: str, tmp_path: Path
) -> None:
    rng = random.Random(21)
    async with rig(kafka=stack.kafka, database_url=migrated_database, log_dir=tmp_path) as r:
        first = WorkerProcess(r.settings, log_path=tmp_path / "first.log", log_level="INFO")
        doomed = WorkerProcess(
            r.settings, log_path=tmp_path / "doomed.log", webhook_port=free_port(), log_level="INFO"
        )
        for worker in (first, doomed):
            worker.start()
            r.workers.append(worker)
        await publish(r.settings, order_messages(rng, 10, prefix="a", kinds=GOOD))
        for _ in range(300):
            if (await progress(r.settings)).workflows >= 5:
                break
            await asyncio.sleep(0.1)
        doomed.kill()
        newcomer = WorkerProcess(
            r.settings, log_path=tmp_path / "newcomer.log", webhook_port=free_port(), log_level="INFO"
        )
        newcomer.start()
        r.workers.append(newcomer)
        # The group rebalances within a heartbeat or two of the join; the second batch is published
        # after it, so the two live workers share it (a fast drain used to end the test first).
        for _ in range(600):
            if _assigned_partitions(newcomer) or not newcomer.alive:
                break
            await asyncio.sleep(0.1)
        await publish(r.settings, order_messages(rng, 10, prefix="b", kinds=GOOD))

        await drain(r, timeout_s=120, keep_alive=False)
        assert first.alive, r.logs()
        assert newcomer.alive, r.logs()
        assert _assigned_partitions(newcomer), "the newcomer never got a partition: no rebalance"
        report = await r.report()
        assert report.ok, report.explain()
        assert report.states["failed"] == 0, report.explain()
        assert report.checked["transitions_valid"] >= 20, report.explain()
        outcomes = Counter(e["outcome"] for e in await r.control.ledger(kind="request"))
        assert outcomes["locked"] == 0, f"two workers sent one idempotency key at once: {outcomes}"
        assert outcomes["mismatch"] == 0, f"one key went out with different bytes: {outcomes}"
        assert await r.stop_all() == [0, 0], r.logs()
