"""Infrastructure faults: the broker and the database stopped (politely) or SIGKILLed (like a crashed
machine) and restarted mid-run, the provider down, slow, rate limiting and losing responses. One
worker process rides through each — it never exits (no crash loop, no restart by the test) — and
afterwards every line item is activated or cancelled (no `failed`: every fault was transient) and
the invariant checker passes.

Surviving proves little if the outage was never felt, so each one must leave evidence that could
not exist without it before the service comes back: while the broker is away the outbox holds
rows older than any healthy relay would leave and the webhook ingress answers 503; while the
database is away, CRM records published meanwhile fail in the handler and their offsets stay
uncommitted. A fault that leaves no such trace within its deadline fails the test.

These tests stop and start Kafka and PostgreSQL, so they run on a LocalStack of their own, started
once for this module: the session `stack` is shared with every other test.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator.localstack import LocalStack, local_stack
from orchestrator.settings import Settings
from orchestrator.store import migrate, outbox_lag
from tests.conftest import create_database
from tests.reliability.harness import Rig, WorkerProcess, drain, order_messages, progress, rig

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
    url = await create_database(own_stack.database_url, prefix="r")
    await migrate(url)
    return url


async def _until_started(r: Rig, *, workflows: int) -> None:
    """Wait until the worker has accepted some orders: the fault must land mid-run."""
    for _ in range(300):
        if (await progress(r.settings)).workflows >= workflows:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker accepted fewer than {workflows} line items in 30 s\n{r.logs()}")


async def _phase(r: Rig, name: str, rules: list[dict[str, object]]) -> None:
    """At least 2.5 s of this fault, and until the sandbox has answered with it: a phase whose
    fault never fired within 20 s proved nothing, and says so."""
    kinds = {f"fault:{rule['kind']}" for rule in rules} - {"fault:latency"}
    await asyncio.sleep(2.5)
    seen: Counter[str] = Counter()
    for _ in range(40):
        seen = Counter(e["outcome"] for e in await r.control.ledger(kind="request"))
        if kinds <= set(seen):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"phase {name!r}: the provider never answered with {sorted(kinds - set(seen))} within 20 s "
        f"(wanted {sorted(kinds)}; the ledger so far: {dict(seen)})\n{r.logs()}"
    )


async def _felt(
    r: Rig, what: str, evidence: Callable[[], Awaitable[dict[str, Any]]], *, timeout_s: float
) -> dict[str, Any]:
    """Poll `evidence()` (name → what was seen, falsy while not seen) until every piece is there.
    On timeout: an AssertionError naming what was and was not seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    seen: dict[str, Any] = {}
    while loop.time() < deadline:
        seen = await evidence()
        if all(seen.values()):
            return seen
        await asyncio.sleep(0.5)
    missing = sorted(k for k, v in seen.items() if not v)
    raise AssertionError(
        f"{what} was not felt within {timeout_s:.0f} s: missing {missing}; seen {seen}\n{r.logs()}"
    )


def _log_records(worker: WorkerProcess, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log records of one event."""
    found = []
    for line in worker.log_tail(5_000_000).splitlines():
        if f'"{event}"' in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


async def _crm_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(offsets the consumer group committed, end offsets) per partition of the CRM topic."""
    topic, servers = settings.kafka.orders_topic, settings.kafka.bootstrap_servers
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        raw = await admin.list_consumer_group_offsets(settings.kafka.consumer_group)
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    committed = {tp.partition: meta.offset for tp, meta in raw.items() if tp.topic == topic}
    partitions = sorted(p["partition"] for p in described["partitions"])
    assert partitions, f"no partitions known for {topic}: {described}"
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return committed, {tp.partition: offset for tp, offset in ends.items()}


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


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_kafka_broker_stopped_and_restarted_mid_run(
    own_stack: LocalStack, database: str, tmp_path: Path, how: str
) -> None:
    rng = random.Random(11)
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        worker = r.worker()
        await r.publish(order_messages(rng, 8, prefix="before", kinds=GOOD))
        await _until_started(r, workflows=3)
        outage_began = datetime.fromisoformat(await r.control.now())
        await (own_stack.kafka.kill() if how == "kill" else own_stack.kafka.stop())

        # Steps go on against Postgres and the provider; their status events wait in the outbox,
        # and the provider's webhooks get 503 (after the ingress's 10 s wait for the broker).
        async def evidence() -> dict[str, Any]:
            conn = await asyncpg.connect(database)
            try:
                lag = await outbox_lag(conn)
            finally:
                await conn.close()
            refused = _log_records(worker, "webhook_not_published")
            return {
                # a relay that can publish empties the outbox within milliseconds
                "outbox rows unpublished for over 3 s": lag.unpublished if lag.oldest_age_s > 3 else 0,
                "webhooks answered 503": len(refused),
            }

        felt = await _felt(r, f"the broker's {how}", evidence, timeout_s=40)
        assert worker.alive, r.logs()
        await own_stack.kafka.start()
        await r.publish(order_messages(rng, 4, prefix="after", kinds=GOOD))
        await _rode_through(r)
        # The provider felt it too: webhooks emitted during the outage failed, then were delivered.
        retried = [
            e
            for e in await r.control.events()
            if datetime.fromisoformat(e["occurredAt"]) >= outage_began
            and e["delivered"]
            and any(a is None or not 200 <= a < 300 for a in e["attempts"])
        ]
        assert retried, "no webhook of the outage was refused and delivered later"
        print(f"broker {how}: {felt}; {len(retried)} webhooks delivered after refusals")


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_stopped_and_restarted_mid_run(
    own_stack: LocalStack, database: str, tmp_path: Path, how: str
) -> None:
    postgres = own_stack.postgres
    assert postgres is not None
    rng = random.Random(12)
    async with rig(kafka=own_stack.kafka, database_url=database, log_dir=tmp_path) as r:
        worker = r.worker()
        await r.publish(order_messages(rng, 8, prefix="before", kinds=GOOD))
        await _until_started(r, workflows=3)
        await (postgres.kill() if how == "kill" else postgres.stop())
        # Records arrive while the database is away: the consumer must hold their offsets.
        _, ends_before = await _crm_offsets(r.settings)
        await r.publish(order_messages(rng, 4, prefix="during", kinds=GOOD))
        _, ends_after = await _crm_offsets(r.settings)
        during = {
            p: (ends_before.get(p, 0), end) for p, end in ends_after.items() if end > ends_before.get(p, 0)
        }
        assert during, "nothing was published during the outage"
        published_at = asyncio.get_running_loop().time()

        async def evidence() -> dict[str, Any]:
            failed = {
                (rec["partition"], rec["offset"])
                for rec in _log_records(worker, "record_handler_failed")
                if rec.get("topic") == r.settings.kafka.orders_topic
            }
            committed, _ = await _crm_offsets(r.settings)
            held = {
                p: committed.get(p, 0) for p, (first, _end) in during.items() if committed.get(p, 0) <= first
            }
            return {
                "records of the outage failing in the handler": sorted(
                    (p, o) for p, o in failed if p in during and during[p][0] <= o < during[p][1]
                ),
                # without the outage they would be committed within a second
                "3 s since they were published": asyncio.get_running_loop().time() - published_at >= 3,
                "their offsets held": held if len(held) == len(during) else {},
            }

        felt = await _felt(r, f"the database's {how}", evidence, timeout_s=30)
        assert worker.alive, f"exit {worker.returncode}\n{r.logs()}"
        await postgres.start()
        await r.publish(order_messages(rng, 2, prefix="after", kinds=GOOD))
        await _rode_through(r)  # drains: the held offsets are committed once the records are applied
        print(f"database {how}: {felt}")


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
        await r.publish(order_messages(rng, 2, prefix="warmup", kinds=GOOD))
        await _until_started(r, workflows=2)  # the worker is up and calling the provider
        for name, rules in phases:
            await r.control.faults(*rules)
            await r.publish(order_messages(rng, 3, prefix=name, kinds=GOOD))
            await _phase(r, name, rules)
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
        await r.publish(order_messages(random.Random(14), 1, prefix="pipe", kinds=("assigned",)))
        await _until_started(r, workflows=1)  # past start-up: the worker's own handlers are installed
        status = Path(f"/proc/{worker.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (signal.SIGPIPE - 1)), f"SIGPIPE is not ignored: SigIgn={ignored:x}"
