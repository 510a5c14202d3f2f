"""A paused worker is fenced: SIGSTOPped while its provider call is in flight, for longer than the
scheduler's dead-worker timeout, it loses its claim to a second worker, which re-sends the same
idempotency key and carries the line item to its end. When the first worker is resumed (SIGCONT),
its late answer must be refused: no second send, no `locked` or `mismatch` at the provider, no
duplicate effect, and no transition or status event written by the zombie.

Every precondition is asserted, not assumed: the call was at the provider when the worker stopped
(the sandbox, in this process, held the request unanswered at the moment of the SIGSTOP, and
answered it while the worker was stopped and before a second worker existed), the
worker was seen as dead (its heartbeat older than the timeout when the key was re-sent), the
takeover happened (the key's replay comes from the second worker), and the zombie's step really
ran to its end after the resume (its log says its answer was refused, and the call counts it).

Two zombies: one whose client waits longer than the pause, so it wakes up holding the provider's
success (a stale answer that must not be applied), and one whose 4 s ceiling passed while it was
stopped, so it wakes up with a timeout (a stale failure that must not overwrite the success).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator.engine import Scheduler
from orchestrator.localstack import LocalStack, free_port
from tests.reliability.harness import SANDBOX_KEY, Rig, WorkerProcess, drain, order_messages, progress, rig

# How long a worker may go unseen before its claims are taken over; `Worker` keeps the default.
DEAD_AFTER_S: float = inspect.signature(Scheduler.__init__).parameters["dead_after_s"].default
# The in-flight call's delay at the provider: ample time to see the intent, then the request at the
# provider, and SIGSTOP the worker; shorter than the dead timeout, so the provider has answered (and
# cached the answer) before a takeover could re-send the key: the re-send is a replay, not `locked`.
LATENCY_S = 3.0
ZOMBIE_REFUSED = "a late answer to a call already settled by another attempt: ignored"


async def _until(what: str, probe: Any, *, timeout_s: float, r: Rig, interval_s: float = 0.05) -> Any:
    """Poll `probe()` until it returns something truthy; fail loudly with `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s\n{await _state(r)}\n{r.logs()}")


async def _state(r: Rig) -> str:
    """Timers, workers, calls and who waits on whom: what a timeout here needs to be understood."""
    queries = {
        "timers": "SELECT id, workflow_id, order_id, kind, due_at, fired_at, claimed_by FROM timers",
        "workers": "SELECT worker_id, now() - last_seen AS unseen FROM workers",
        "calls": "SELECT step, status, attempts, idempotency_key FROM provider_calls ORDER BY id",
        "sessions": "SELECT pid, state, wait_event_type, pg_blocking_pids(pid) AS blocked_by, "
        "left(query, 120) AS query FROM pg_stat_activity WHERE datname = current_database()",
    }
    lines = []
    for name, sql in queries.items():
        lines += [f"{name}:", *(f"  {dict(row)}" for row in await _fetch(r, sql))]
    return "\n".join(lines)


async def _fetch(r: Rig, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(r.settings.database.url.get_secret_value())
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _requests(r: Rig, key: str) -> list[dict[str, Any]]:
    return [e for e in await r.control.ledger(kind="request") if e.get("idempotencyKey") == key]


async def _high_water(r: Rig) -> tuple[int, int]:
    """The last transition and the last outbox row (every status event goes through the outbox)."""
    [row] = await _fetch(
        r,
        "SELECT (SELECT coalesce(max(id), 0) FROM transitions) AS t, "
        "(SELECT coalesce(max(id), 0) FROM outbox) AS o",
    )
    return row["t"], row["o"]


async def _at_provider(r: Rig, key: str) -> bool:
    """The provider has begun the request and not answered it (it sits in the latency fault)."""
    entry = r.sandbox.runtime.idempotency.lookup(SANDBOX_KEY, key)
    if entry is not None and entry.response is not None:
        raise AssertionError("the provider answered before the zombie could be stopped mid-call")
    return entry is not None


def _log_events(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.log_tail(2_000_000).splitlines():
        if event in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


@pytest.mark.parametrize("wakes_with", ["answer", "timeout"])
async def test_a_worker_paused_past_the_dead_timeout_mid_call_is_fenced(
    stack: LocalStack, migrated_database: str, tmp_path: Path, wakes_with: str
) -> None:
    async with rig(kafka=stack.kafka, database_url=migrated_database, log_dir=tmp_path) as r:
        settings = r.settings
        if wakes_with == "answer":  # the zombie's client waits out any pause; the rig's gives up after 4 s
            connect = settings.connect.model_copy(update={"read_timeout_s": 60.0, "total_timeout_s": 60.0})
            settings = settings.model_copy(update={"connect": connect})
        # Only the first add-item request is slow: the one the zombie will have in flight.
        rule = {
            "match": "POST /orders/*/line-items",
            "kind": "latency",
            "latencyMs": LATENCY_S * 1000,
            "times": 1,
        }
        await r.control.faults(rule)
        zombie = WorkerProcess(
            settings, log_path=tmp_path / "zombie.log", webhook_port=free_port(), log_level="INFO"
        )
        zombie.start()
        r.workers.append(zombie)
        await r.publish(order_messages(random.Random(31), 1, prefix="fence", kinds=("assigned",)))

        watch = await asyncpg.connect(migrated_database)  # one connection: polling must be quick
        try:
            call = await _until(
                "the zombie storing its add_item intent",
                lambda: watch.fetchrow(
                    "SELECT idempotency_key, workflow_id FROM provider_calls WHERE step = 'add_item'"
                ),
                timeout_s=60,
                r=r,
                interval_s=0.01,
            )
        finally:
            await watch.close()
        key, workflow_id = call["idempotency_key"], call["workflow_id"]
        [zombie_id] = [w["worker_id"] for w in await _fetch(r, "SELECT worker_id FROM workers")]
        # Stop the zombie the moment its request is at the provider: the sandbox (in this process)
        # holds it in the latency fault, unanswered, so the zombie cannot have the answer yet.
        await _until(
            "the zombie's request reaching the provider",
            lambda: _at_provider(r, key),
            timeout_s=10,
            r=r,
            interval_s=0.002,
        )
        loop = asyncio.get_running_loop()
        os.kill(zombie.pid, signal.SIGSTOP)
        stopped_at = loop.time()
        try:
            # The provider answers it while the zombie is stopped, before a second worker exists.
            first = await _until(
                "the zombie's in-flight request answered by the provider",
                lambda: _requests(r, key),
                timeout_s=LATENCY_S + 3,
                r=r,
            )
            assert [e["outcome"] for e in first] == ["processed"], first
            assert loop.time() - stopped_at < DEAD_AFTER_S, "answered too late to prove the overlap"

            successor = WorkerProcess(r.settings, log_path=tmp_path / "successor.log", log_level="INFO")
            successor.start()
            r.workers.append(successor)

            async def resent() -> list[dict[str, Any]] | None:
                sent = await _requests(r, key)
                return sent if len(sent) > 1 else None

            sent = await _until("the successor re-sending the zombie's key", resent, timeout_s=40, r=r)
            resent_after_s = loop.time() - stopped_at
            assert [e["outcome"] for e in sent] == ["processed", "replayed"], sent
            [silence] = await _fetch(
                r,
                "SELECT extract(epoch FROM now() - last_seen)::float8 AS s FROM workers WHERE worker_id = $1",
                zombie_id,
            )
            assert silence["s"] > DEAD_AFTER_S, (
                f"the zombie was not dead yet: unseen for {silence['s']:.1f} s"
            )

            # The successor carries the item to its end and consumes every record (its own relay
            # publishes the status events: no relay leads, and a stopped one holds outbox rows only
            # if it stopped mid-round, until the server ends its session).
            async def settled() -> bool:
                p = await progress(r.settings)
                return p.workflows == 1 and p.unsettled == 0 and p.unconsumed == 0

            await _until("the successor settling the item", settled, timeout_s=60, r=r, interval_s=0.3)
            [item] = await _fetch(r, "SELECT state FROM workflows WHERE workflow_id = $1", workflow_id)
            assert item["state"] == "activated", item
            before_resume = await _high_water(r)
            requests_before_resume = len(await r.control.ledger(kind="request"))
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        paused_s = loop.time() - stopped_at

        # The zombie's step runs on to its end: its answer is refused, not recorded or acted on.
        async def refused() -> list[dict[str, Any]]:
            return [e for e in _log_events(zombie, ZOMBIE_REFUSED) if e.get("idempotency_key") == key]

        [late] = await _until(
            "the zombie's late answer being refused", refused, timeout_s=30, r=r, interval_s=0.2
        )
        # What the zombie woke up holding: the provider's 201, or no answer (its ceiling had passed).
        assert late["status"] == (201 if wakes_with == "answer" else None), late
        await drain(r, timeout_s=60, keep_alive=False)
        assert [zombie.alive, successor.alive] == [True, True], r.logs()

        [stored] = await _fetch(
            r, "SELECT status, attempts FROM provider_calls WHERE idempotency_key = $1", key
        )
        assert stored["status"] == "succeeded", dict(stored)
        assert stored["attempts"] == 2, f"the successor's answer and the zombie's, counted: {dict(stored)}"
        assert [e["outcome"] for e in await _requests(r, key)] == ["processed", "replayed"], (
            "the zombie sent its call again after the resume"
        )
        assert await _high_water(r) == before_resume, (
            f"written after the resume (transitions, outbox): {before_resume} -> {await _high_water(r)}"
        )
        requests = await r.control.ledger(kind="request")
        outcomes = Counter(e["outcome"] for e in requests)
        assert (outcomes["locked"], outcomes["mismatch"]) == (0, 0), outcomes
        # Nothing but reads reached the provider after the resume (a stale step would mutate).
        mutations = [e for e in requests[requests_before_resume:] if e.get("idempotencyKey")]
        assert mutations == [], mutations
        report = await r.report()
        assert report.ok, report.explain()
        assert report.states["activated"] == 1, report.explain()
        assert await r.stop_all() == [0, 0], r.logs()
        print(f"paused {paused_s:.1f} s; key re-sent by the successor {resent_after_s:.1f} s after the stop")
