"""Crash at every step: a worker process SIGKILLed at each named fault point in turn, restarted each
time, loses no line item and applies no provider effect twice (the invariant checker passes).

Each incarnation of the worker is armed with one point (`ORCHESTRATOR_FAULT_POINT`) and must die
there — the test fails if a point is never reached, so no point is "covered" by accident. Traffic
is published before every incarnation, so each one has CRM records to consume, steps to run and
status events to relay. The step points come first: they need no consumer-group rejoin, which
costs up to a session timeout after each SIGKILL.

The randomised variant arms random points with random counts; its seed is printed in the failure
message (re-run with `RELIABILITY_SEED=<seed> pytest tests/reliability/test_crash_points.py`).
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

from orchestrator.faults import FAULT_POINTS
from orchestrator.localstack import LocalStack
from tests.reliability.harness import Rig, drain, order_messages, publish, rig

STEP_POINTS = [p for p in FAULT_POINTS if p.startswith(("step.", "provider."))]
RELAY_POINTS = [p for p in FAULT_POINTS if p.startswith("relay.")]
INTAKE_POINTS = [p for p in FAULT_POINTS if p.startswith(("intake.", "consumer."))]
# No poison in the kill chain: every incarnation must have real work; the DLQ is covered below.
WORK = ("assigned", "port", "temp_port", "mixed", "cancel", "amend", "duplicate")


async def _die_at(r: Rig, rng: random.Random, *, point: str, count: int, round_no: int) -> None:
    """Publish a little traffic, start a worker armed at `point`, and require it to die there.

    Two orders per count: each has at least one event that reaches the intake's commit (a
    duplicate does not), so an intake point armed at its third pass has three to pass."""
    await publish(r.settings, order_messages(rng, 2 * count, prefix=f"r{round_no}", kinds=WORK))
    worker = r.worker(fault_point=f"{point}:{count}")
    code = await worker.wait_exit(timeout_s=60)
    assert code == -signal.SIGKILL, f"{point}:{count} was never reached (exit {code})\n{r.logs()}"
    assert worker.fired() == point, f"expected death at {point}, log says {worker.fired()}"


async def _settle_and_check(r: Rig) -> None:
    await drain(r, timeout_s=120)
    report = await r.report()
    assert report.ok, report.explain()
    # Every fault here is transient: nothing may need an operator afterwards.
    assert report.states["failed"] == 0, report.explain()
    for invariant in ("settled", "effects_once", "consumed_accounted", "status_gap_free"):
        assert report.checked[invariant] >= 10, report.explain()


async def test_a_worker_killed_at_every_fault_point_in_turn_loses_and_duplicates_nothing(
    stack: LocalStack, migrated_database: str, tmp_path: Path
) -> None:
    rng = random.Random(6)
    async with rig(kafka=stack.kafka, database_url=migrated_database, log_dir=tmp_path) as r:
        await publish(r.settings, order_messages(rng, 6, prefix="warmup", kinds=WORK))
        chain = [*STEP_POINTS, *RELAY_POINTS, *INTAKE_POINTS]
        assert sorted(chain) == sorted(FAULT_POINTS), "a new fault point must join the chain"
        for round_no, point in enumerate(chain):
            await _die_at(r, rng, point=point, count=1, round_no=round_no)
        await _settle_and_check(r)


async def test_randomised_fault_schedule(stack: LocalStack, migrated_database: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    schedule = [(rng.choice(FAULT_POINTS), rng.randint(1, 3)) for _ in range(3)]
    try:
        async with rig(kafka=stack.kafka, database_url=migrated_database, log_dir=tmp_path, seed=seed) as r:
            await publish(r.settings, order_messages(rng, 6, prefix="warmup"))
            for round_no, (point, count) in enumerate(schedule):
                await _die_at(r, rng, point=point, count=count, round_no=round_no)
            await _settle_and_check(r)
    except AssertionError as exc:
        raise AssertionError(
            f"randomised fault schedule failed: re-run with RELIABILITY_SEED={seed} "
            f"(schedule {schedule})\n{exc}"
        ) from exc
