"""Infrastructure faults: the broker and the database stopped and restarted mid-run, the provider down,
slow, rate limiting and losing responses. One worker process rides through each — it never exits
(no crash loop, no restart by the test) — and afterwards every line item is activated or
cancelled (no `failed`: every fault was transient) and the invariant checker passes.

These tests stop and start Kafka and PostgreSQL, so they run on a LocalStack of their own, started
once for this module: the session `stack` is shared with every other test.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from orchestrator.localstack import LocalStack, local_stack
from orchestrator.store import migrate
from tests.conftest import replace_database
from tests.reliability.harness import Rig, drain, order_messages, progress, publish, rig

# Paths that end well when every fault is transient (no poison, no duplicate order: no DLQ here).
GOOD = ("assigned", "port", "temp_port", "mixed", "cancel", "amend", "duplicate")


@pytest.fixture(scope="module")
async def own_stack() -> AsyncIterator[LocalStack]:
    """Kafka and PostgreSQL for this module alone: the tests below stop and restart them."""
    run_dir = Path(tempfile.mkdtemp(prefix="orchestrator-reliability-stack-"))
    try:
        async with local_stack(run_dir=run_dir) as running:
            yield running
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
async def database(own_stack: LocalStack) -> str:
    name = f"r_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(own_stack.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = replace_database(own_stack.database_url, name)
    await migrate(url)
    return url


async def _until_started(r: Rig, *, workflows: int) -> None:
    """Wait until the worker has accepted some orders: the fault must land mid-run."""
    for _ in range(300):
        if (await progress(r.settings)).workflows >= workflows:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker accepted fewer than {workflows} line items in 30 s\n{r.logs()}")


async def _phase(r: Rig, rules: list[dict[str, object]]) -> None:
    """At least 2.5 s of this fault, and until the sandbox has answered with it (at most 20 s)."""
    kinds = {f"fault:{rule['kind']}" for rule in rules} - {"fault:latency"}
    await asyncio.sleep(2.5)
    for _ in range(40):
        seen = {e["outcome"] for e in await r.control.ledger(kind="request")}
        if kinds <= seen:
            return
        await asyncio.sleep(0.5)


async def _rode_through(r: Rig) -> None:
    """Drain without any restart, then hold the checker and "nothing failed" to account."""
    await drain(r, timeout_s=120, keep_alive=False)
    assert [w.alive for w in r.workers] == [True], f"the worker exited or was replaced\n{r.logs()}"
    report = await r.report()
    assert report.ok, report.explain()
    assert report.states["failed"] == 0, report.explain()
    assert report.checked["settled"] >= 10, report.explain()
    codes = await r.stop_all()
    assert codes == [0], f"graceful stop after the fault failed: {codes}\n{r.logs()}"


async def test_kafka_broker_stopped_and_restarted_mid_run(
    own_stack: LocalStack, database: str, tmp_path: Path
) -> None:
    rng = random.Random(11)
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        r.worker()
        await publish(r.settings, order_messages(rng, 8, prefix="before", kinds=GOOD))
        await _until_started(r, workflows=3)
        await own_stack.kafka.stop()
        await asyncio.sleep(4)  # steps go on; status events wait in the outbox; webhooks get 503
        assert r.workers[0].alive, r.logs()
        await own_stack.kafka.start()
        await publish(r.settings, order_messages(rng, 4, prefix="after", kinds=GOOD))
        await _rode_through(r)


async def test_postgres_stopped_and_restarted_mid_run(
    own_stack: LocalStack, database: str, tmp_path: Path
) -> None:
    assert own_stack.postgres is not None
    rng = random.Random(12)
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        r.worker()
        await publish(r.settings, order_messages(rng, 8, prefix="before", kinds=GOOD))
        await _until_started(r, workflows=3)
        await own_stack.postgres.stop()
        # Records arrive while the database is away: the consumer must hold their offsets.
        await publish(r.settings, order_messages(rng, 4, prefix="during", kinds=GOOD))
        await asyncio.sleep(3)
        assert r.workers[0].alive, f"exit {r.workers[0].returncode}\n{r.logs()}"
        await own_stack.postgres.start()
        await publish(r.settings, order_messages(rng, 2, prefix="after", kinds=GOOD))
        await _rode_through(r)


async def test_provider_down_slow_rate_limiting_and_losing_responses(
    own_stack: LocalStack, database: str, tmp_path: Path
) -> None:
    rng = random.Random(13)
    phases: list[tuple[str, list[dict[str, object]]]] = [
        ("down", [{"kind": "error", "status": 503}]),
        ("slow", [{"kind": "latency", "latencyMs": 1200, "probability": 0.6}]),
        ("timeouts", [{"kind": "latency", "latencyMs": 5000, "probability": 0.3}]),  # > 4 s client ceiling
        ("429", [{"kind": "rate_limit", "retryAfterS": 1, "probability": 0.5}]),
        ("lost", [{"kind": "lost_response", "status": 0, "probability": 0.3},
                  {"kind": "lost_response", "status": 502, "probability": 0.2}]),
        ("dropped", [{"kind": "drop", "probability": 0.3}]),
    ]  # fmt: skip
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        r.worker()
        await publish(r.settings, order_messages(rng, 2, prefix="warmup", kinds=GOOD))
        await _until_started(r, workflows=2)  # the worker is up and calling the provider
        for name, rules in phases:
            await r.control.faults(*rules)
            await publish(r.settings, order_messages(rng, 3, prefix=name, kinds=GOOD))
            await _phase(r, rules)
            assert r.workers[0].alive, f"the worker died during {name}\n{r.logs()}"
        await r.control.faults()
        await _rode_through(r)
        outcomes = Counter(e["outcome"] for e in await r.control.ledger(kind="request"))
        for fired in ("fault:error", "fault:rate_limit", "fault:lost_response", "fault:drop"):
            assert outcomes[fired] > 0, f"{fired} never happened, so it proved nothing: {outcomes}"


async def test_regression_a_worker_ignores_sigpipe(
    own_stack: LocalStack, database: str, tmp_path: Path
) -> None:
    """Found by the Postgres restart above (1 run in ~5): the CLI set SIGPIPE to its default for
    pipes, so a worker writing to a connection Postgres had just closed died silently (exit -13).
    The worker must ignore SIGPIPE (bit 13 of /proc/<pid>/status SigIgn)."""
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        worker = r.worker()
        await publish(r.settings, order_messages(random.Random(14), 1, prefix="pipe", kinds=("assigned",)))
        await _until_started(r, workflows=1)  # past start-up: the worker's own handlers are installed
        status = Path(f"/proc/{worker.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (signal.SIGPIPE - 1)), f"SIGPIPE is not ignored: SigIgn={ignored:x}"
