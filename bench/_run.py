"""The scenarios, all in one run on one local stack so that their ratios hold on a noisy machine.

The headline of every load scenario is its line items ÷ the time from the first CRM event
published to the last terminal status event read (`overall_items_per_s`); the completion rate
between the 20th and 90th percentile (`items_per_s`, "sustained") is kept as a secondary figure.
CPU is counted in CPU seconds of every process of the run over that window, per line item.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from pydantic import SecretStr

from bench import _pglimit
from bench._deps import py_spy
from bench._procs import (
    HOST,
    Sampler,
    Sandbox,
    WorkerProcess,
    migrate_checkout,
    port_open,
    spawn_worker,
    start_sandbox,
    wait_until,
)
from bench._workload import (
    Leases,
    Order,
    Publisher,
    Tracker,
    build_orders,
    first_minute,
    latency_stats,
    mix_label,
    sustained_rate,
    wait_assigned,
)
from orchestrator.localstack import LocalStack, free_port, local_stack, spawn, stop_process
from orchestrator.settings import ConnectSettings, DatabaseSettings, KafkaSettings, Settings, WebhookSettings
from orchestrator.store import migrate
from orchestrator.webhooks import WEBHOOK_PATH

# What the worker processes get on top of the defaults, and why (also printed in the report):
WORKER_TUNING = {
    # the client-side provider limits are a contract setting (50/s by default); the sandbox has none
    "ORCHESTRATOR_CONNECT__RATE_LIMIT_PER_S": "100000",
    "ORCHESTRATOR_CONNECT__RATE_LIMIT_BURST": "1000",
    "ORCHESTRATOR_CONNECT__MAX_CONCURRENCY": "16",
    "ORCHESTRATOR_ENGINE__STEP_CONCURRENCY": "16",  # the default, said explicitly for the report
    # steps hold a connection per transaction only; + 3 partition handlers, relay, heartbeat
    "ORCHESTRATOR_DATABASE__POOL_MAX_SIZE": "24",
}
# With 50–200 ms calls a step slot spends nearly all its time waiting on the provider, so slots,
# not CPU, cap throughput (16 slots ÷ ~5 calls × 125 ms ≈ 26 items/s). Measured on this machine
# (items/s, 300 items): 16 slots 27.8, 32 slots 29.8–30.6, 64 slots 26.8 (20.0 before the Connect
# client split its connections into pools of 8: httpcore's per-request pool scan). 32 it is; at
# zero latency the other scenarios keep the default 16.
SLOW_PROVIDER_TUNING = {
    "ORCHESTRATOR_CONNECT__MAX_CONCURRENCY": "32",
    "ORCHESTRATOR_ENGINE__STEP_CONCURRENCY": "32",
}
ZERO = {"order_step_s": 0.0, "port_step_s": 0.1, "port_delay_s": 0.2}  # provider progress, sandbox seconds
REALISTIC = {"order_step_s": 0.2, "port_step_s": 1.0, "port_delay_s": 3.0}  # the sandbox's defaults
# Every process of a run whose CPU is counted as the machine's: the worker(s) (the DBOS peer's
# process counts as "worker" in its runs), the sandbox, Postgres (postmaster and every backend),
# the Kafka broker, and this process (the load generator, the status reader and the sampler).
ROLES = ("worker", "sandbox", "postgres", "kafka", "bench")
PEER = "DBOS Transact 3.4.0"


def latency_rules() -> list[dict[str, Any]]:
    """50–200 ms on every provider call: 50 ms always plus six 25 ms dice (mean 125 ms)."""
    return [{"match": "* *", "kind": "latency", "latencyMs": 50}] + [
        {"match": "* *", "kind": "latency", "latencyMs": 25, "probability": 0.5} for _ in range(6)
    ]


@dataclass
class Options:
    orders: int = 300
    items: int = 2
    mix: dict[str, int] = field(default_factory=dict)
    half_items: int = 2_000  # the p99 at half load is taken over at least this many line items
    half_capacity: float = 100.0  # the capacity assumed for half load when `zero` is skipped
    realistic_orders: int = 150
    recovery_items: int = 500
    drain_items: int = 2_000
    drain_timeout_s: float | None = None  # None: one second per 20 line items
    dbos_orders: int = 300
    dbos_runs: int = 3  # ours and the peer's, alternated
    peer_order_read_per_item: bool | None = None  # None: as ours does (auto)
    profile_s: float = 15.0
    skip: frozenset[str] = frozenset()
    worker_src: Path | None = None  # --worker-rev: every worker, and every database's migrations, from there
    worker_commit: str | None = None  # the commit every figure of ours measured
    baseline_src: Path | None = None  # --baseline-rev: one more assigned-only run with that package
    baseline_commit: str | None = None
    statements: bool = True  # count statements per line item with pg_stat_statements
    timeout_s: float = 300.0


@dataclass
class Deployment:
    name: str
    database: str
    settings: Settings
    sandbox: Sandbox
    workers: list[WorkerProcess]
    tracker: Tracker
    src: Path | None = None
    peer: Any = None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def uptime() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def others_busy(mine: set[int]) -> list[str]:
    """Processes outside this run that used CPU over one second (other engineers' test suites)."""
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid not in mine]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(1.0)
    busy: list[tuple[float, str]] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            pct = proc.cpu_percent(None)
            if pct >= 5:
                cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])[:90]
                busy.append((pct, f"{pct:.0f}% {cmd}"))
    return [text for _, text in sorted(busy, reverse=True)[:8]]


def per_item(value: float, done: int) -> float:
    return value / done if done else float("nan")


def cpu_figures(usage: dict[str, dict[str, float]], done: int) -> dict[str, Any]:
    """CPU milliseconds per line item done: the machine's (every role), the worker's, each role's,
    and the host's busy time (every process on the machine, ours or not: a busy machine shows)."""
    ours = {role: u.get("cpu_s", float("nan")) for role, u in usage.items() if role != HOST}
    machine_s = sum(v for v in ours.values() if not math.isnan(v))
    host_s = usage.get(HOST, {}).get("cpu_s", float("nan"))
    return {
        "machine_cpu_ms_per_item": 1000 * per_item(machine_s, done),
        "worker_cpu_ms_per_item": 1000 * per_item(ours.get("worker", float("nan")), done),
        "cpu_ms_per_item": {role: 1000 * per_item(v, done) for role, v in ours.items()},
        "host_cpu_ms_per_item": 1000 * per_item(host_s, done),
        "others_cpu_s": host_s - machine_s,  # the rest of the host's busy time: other processes, the kernel
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
    return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(self, stack: LocalStack, options: Options, run_dir: Path) -> None:
        self.stack = stack
        self.options = options
        self.run_dir = run_dir
        self.sampler = Sampler()
        self.results: dict[str, Any] = {"scenarios": {}, "machine": machine(), "load": []}
        self._n = 0
        self.worker_tuning: dict[str, str] = {}
        self.statements = False
        assert stack.postgres is not None, "the bench runs its own PostgreSQL"
        self.postgres = stack.postgres

    # --- plumbing ----------------------------------------------------------------------------------

    def mine(self) -> set[int]:
        me = psutil.Process()
        return {me.pid, *(c.pid for c in me.children(recursive=True))}

    def note_load(self, when: str) -> None:
        self.results["load"].append({"when": when, "uptime": uptime(), "others": others_busy(self.mine())})

    async def enable_statements(self) -> None:
        """pg_stat_statements needs `shared_preload_libraries`: set it with ALTER SYSTEM and restart
        the server (same data, same port) before anything else runs."""
        if not self.options.statements:
            return
        try:
            conn = await asyncpg.connect(self.postgres.url_for("postgres"))
            try:
                await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            finally:
                await conn.close()
            await self.postgres.stop()
            await self.postgres.start()
            conn = await asyncpg.connect(self.postgres.url_for("postgres"))
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                track = await conn.fetchval("SHOW pg_stat_statements.track")
                utility = await conn.fetchval("SHOW pg_stat_statements.track_utility")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            log(f"pg_stat_statements unavailable ({exc}); statements per line item left out")
            self.results["statements"] = {"enabled": False, "error": str(exc)}
            return
        self.statements = True
        self.results["statements"] = {"enabled": True, "track": track, "track_utility": utility}
        log(f"pg_stat_statements on (track={track}, track_utility={utility})")

    async def fresh_database(self, name: str, *, migrated: bool = True, src: Path | None = None) -> str:
        admin = await asyncpg.connect(self.postgres.url_for("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = self.postgres.url_for(name)
        if migrated:
            if src is not None:  # that revision's own migrations, by its own code
                await migrate_checkout(src, url)
            else:
                await migrate(url)
        return url

    async def pg_counters(self, database: str) -> dict[str, int]:
        conn = await asyncpg.connect(self.postgres.url_for("postgres"))
        try:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            commits = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database
            )
            xid = await conn.fetchval("SELECT pg_current_xact_id()::text::bigint")
            wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            statements = 0
            if self.statements:
                statements = await conn.fetchval(
                    "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
                    "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                    database,
                )
        finally:
            await conn.close()
        return {"commits": int(commits or 0), "xid": int(xid), "wal": int(wal), "statements": int(statements)}

    async def kafka_topics(self, suffix: str) -> KafkaSettings:
        kafka = KafkaSettings(
            bootstrap_servers=self.stack.kafka.bootstrap_servers,
            orders_topic=f"bench.orders.{suffix}",
            orders_dlq_topic=f"bench.orders.{suffix}.dlq",
            status_topic=f"bench.status.{suffix}",
            connect_events_topic=f"bench.connect.{suffix}",
            connect_events_dlq_topic=f"bench.connect.{suffix}.dlq",
            consumer_group=f"bench-{suffix}",
        )
        await self.stack.kafka.create_topics(
            [
                kafka.orders_topic,
                kafka.orders_dlq_topic,
                kafka.status_topic,
                kafka.connect_events_topic,
                kafka.connect_events_dlq_topic,
            ]
        )
        return kafka

    def watch_stack(self) -> None:
        self.sampler.watch("postgres", self.postgres.pid or 0)
        if self.stack.kafka.pid:
            self.sampler.watch("kafka", self.stack.kafka.pid)
        self.sampler.watch("bench", os.getpid(), tree=False)

    def spawn_one(self, dep: Deployment, worker_id: str, log_name: str) -> WorkerProcess:
        """A worker of `dep`'s code (this tree's, or the checkout's), watched as role `worker`."""
        worker = spawn_worker(
            dep.settings,
            worker_id=worker_id,
            log=self.run_dir / log_name,
            extra_env={**WORKER_TUNING, **self.worker_tuning},
            src=dep.src,
        )
        self.sampler.watch("worker", worker.pid)
        return worker

    async def start_workers(self, dep: Deployment, count: int, *, webhook_port: int) -> None:
        for n in range(count):
            settings = dep.settings
            if n > 0:  # one webhook ingress is enough: the sandbox delivers to one URL
                settings = settings.model_copy(update={"webhook": WebhookSettings()})
            worker = spawn_worker(
                settings,
                worker_id=f"{dep.name}-w{n + 1}",
                log=self.run_dir / f"{dep.name}-worker{n + 1}.log",
                extra_env={**WORKER_TUNING, **self.worker_tuning},
                src=dep.src,
            )
            dep.workers.append(worker)
            self.sampler.watch("worker", worker.pid)
        first = dep.workers[0]

        async def ready() -> bool:
            return port_open(webhook_port)

        await wait_until(ready, timeout_s=60, what="worker", proc=first.proc)
        await wait_assigned(
            self.stack.kafka.bootstrap_servers,
            dep.settings.kafka.orders_topic,
            dep.settings.kafka.consumer_group,
        )

    @contextlib.asynccontextmanager
    async def deployment(
        self,
        name: str,
        *,
        provider: dict[str, float],
        latency: bool,
        workers: int = 1,
        webhooks: bool = True,
        src: Path | None = None,
        migrated: bool = True,
    ) -> AsyncIterator[Deployment]:
        self._n += 1
        database = f"bench_{name}"
        url = await self.fresh_database(database, src=src, migrated=migrated)
        kafka = await self.kafka_topics(f"{name}-{uuid.uuid4().hex[:6]}")
        webhook_port, sandbox_port = free_port(), free_port()
        sandbox_key, webhook_key = f"bench-{secrets.token_hex(6)}", secrets.token_hex(8)
        sandbox = await start_sandbox(
            port=sandbox_port,
            api_key=sandbox_key,
            # webhooks off: the worker (or the peer, which has no ingress) polls
            webhook_url=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}" if webhooks else None,
            webhook_secret=webhook_key,
            log=self.run_dir / f"{name}-sandbox.log",
            **provider,
        )
        self.sampler.watch("sandbox", sandbox.proc.pid)
        settings = Settings(
            kafka=kafka,
            database=DatabaseSettings(url=SecretStr(url)),
            connect=ConnectSettings(base_url=sandbox.base_url, api_key=SecretStr(sandbox_key)),
            webhook=WebhookSettings(port=webhook_port, api_key=SecretStr(webhook_key)),
        )
        tracker = Tracker(kafka.bootstrap_servers, kafka.status_topic)
        dep = Deployment(
            name=name,
            database=database,
            settings=settings,
            sandbox=sandbox,
            workers=[],
            tracker=tracker,
            src=src,
        )
        async with tracker:
            try:
                if workers:
                    await self.start_workers(dep, workers, webhook_port=webhook_port)
                if latency:
                    await sandbox.control("PUT", "/_sandbox/faults", json={"rules": latency_rules()})
                yield dep
            finally:
                for worker in dep.workers:
                    await worker.stop()
                if dep.peer is not None:
                    await stop_process(dep.peer, grace_s=20)
                await sandbox.stop()
                self.sampler.unwatch("worker")
                self.sampler.unwatch("sandbox")
                self.sampler.unwatch("peer")

    async def orders(
        self, dep: Deployment, count: int, mix: dict[str, int], *, first_number: int = 0
    ) -> list[Order]:
        leases = Leases(dep.sandbox.base_url, dep.sandbox.api_key)
        orders = await build_orders(
            run=f"{dep.name}{self._n}",
            orders=count,
            items=self.options.items,
            mix=mix,
            leases=leases,
            first_number=first_number,
        )
        dep.tracker.track(orders)
        return orders

    def commit_of(self, src: Path | None) -> str | None:
        if src is not None and src == self.options.baseline_src:
            return self.options.baseline_commit
        return self.options.worker_commit

    async def measure(
        self,
        dep: Deployment,
        orders: list[Order],
        *,
        items_per_s: float | None,
        during: Callable[[], Any] | None = None,
        roles: tuple[str, ...] = ROLES,
    ) -> dict[str, Any]:
        """Publish, wait until every line item is done or failed, stop the processes, count."""
        total = sum(len(o.items) for o in orders)
        before = await self.pg_counters(dep.database)
        calls_before = await dep.sandbox.requests()
        tracker = dep.tracker
        async with Publisher(self.stack.kafka.bootstrap_servers, dep.settings.kafka.orders_topic) as pub:
            w0 = self.sampler.mark()
            side = asyncio.create_task(during()) if during else None
            publish_s = await pub.publish(orders, tracker, items_per_s=items_per_s)
            # a paced load takes its publishing time on top of the limit
            timeout_s = self.options.timeout_s + (total / items_per_s if items_per_s else 0.0)
            finished = await tracker.wait_for(lambda: tracker.terminal >= total, timeout_s=timeout_s)
            w1 = self.sampler.mark()
            side_result = await side if side else None
        t0 = tracker.first_sent or w0
        t1 = max(tracker.terminal_times) if tracker.terminal_times else time.time()
        calls = await dep.sandbox.requests() - calls_before
        by_endpoint = await dep.sandbox.calls_by_endpoint()  # the whole scenario: a fresh sandbox
        usage = {role: self.sampler.usage(role, w0, w1) for role in (*roles, HOST)}
        for worker in dep.workers:  # closing their connections flushes their statistics
            await worker.stop()
        if dep.peer is not None:
            await stop_process(dep.peer, grace_s=20)
        await asyncio.sleep(0.5)
        after = await self.pg_counters(dep.database)
        done = tracker.done
        if "peer" in usage:
            usage["worker"] = usage.pop("peer")
        out: dict[str, Any] = {
            "commit": PEER if dep.peer is not None else self.commit_of(dep.src),
            "line_items": total,
            "done": done,
            "finished": finished,
            "publish_s": publish_s,
            "elapsed_s": t1 - t0,
            "offered_items_per_s": items_per_s,
            # the headline: line items ÷ first publish → last terminal event
            "overall_items_per_s": done / (t1 - t0) if t1 > t0 else float("nan"),
            "items_per_s": sustained_rate(tracker.done_times),  # secondary: 20th–90th percentile
            **latency_stats(tracker),
            "provider_calls_per_item": per_item(calls, done),
            "calls_per_item_by_endpoint": {k: per_item(v, done) for k, v in by_endpoint.items()},
            "commits_per_item": per_item(after["commits"] - before["commits"], done),
            "write_xacts_per_item": per_item(after["xid"] - before["xid"], done),
            "statements_per_item": (
                per_item(after["statements"] - before["statements"], done) if self.statements else None
            ),
            "wal_kib_per_item": per_item((after["wal"] - before["wal"]) / 1024, done),
            "status_events": tracker.events,
            "status_events_per_item": per_item(tracker.events, done),
            "failed": len(tracker.failed),
            "failures": Counter(str((e or {}).get("code")) for _, _, e in tracker.failed).most_common(5),
            "usage": usage,
            "window_s": w1 - w0,
            **cpu_figures(usage, done),
            "load": uptime(),
            "side": side_result,
            "curve": [round(t - t0, 3) for t in sorted(tracker.done_times)],
        }
        if not finished:
            stuck = Counter(
                (i.path, i.states[-1] if i.states else "(none)")
                for i in tracker.items.values()
                if i.done is None and i.failed is None
            )
            out["stuck"] = stuck.most_common(8)
        return out

    def say(self, name: str, result: dict[str, Any]) -> None:
        log(
            f"  {name}: {result['overall_items_per_s']:.1f} items/s to the last terminal event "
            f"({result['items_per_s']:.1f}/s sustained), machine CPU "
            f"{result['machine_cpu_ms_per_item']:.1f} ms/item (worker "
            f"{result['worker_cpu_ms_per_item']:.1f}), {result['commits_per_item']:.1f} commits/item "
            f"({result['write_xacts_per_item']:.1f} wrote), "
            f"{_num(result.get('statements_per_item'))} statements/item, "
            f"{result['provider_calls_per_item']:.2f} calls/item, received p99 "
            f"{result['received_p99_ms']:.0f} ms, failed {result['failed']}"
            + ("" if result["finished"] else f" — NOT FINISHED: {result.get('stuck')}")
        )

    # --- scenarios ---------------------------------------------------------------------------------

    async def pg_limit(self, duration_s: float = 5.0) -> None:
        log("the limit: single-row commits/s on this Postgres at 1, 8 and 16 connections")
        database = "bench_pglimit"
        url = await self.fresh_database(database, migrated=False)
        by_asyncpg: list[dict[str, float]] = []
        by_pgbench: list[dict[str, float]] = []
        for connections in _pglimit.CONNECTIONS:
            by_asyncpg.append(
                await _pglimit.asyncpg_rate(url, connections=connections, duration_s=duration_s)
            )
            try:
                by_pgbench.append(
                    await asyncio.to_thread(
                        _pglimit.pgbench_rate,
                        port=self.postgres.port,
                        database=database,
                        clients=connections,
                        duration_s=int(duration_s),
                    )
                )
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"  pgbench at {connections}: {exc}")
        self.results["pg_limit"] = {
            "kind": "single_row",
            "asyncpg": by_asyncpg,
            "pgbench": by_pgbench,
            "duration_s": duration_s,
            "load": uptime(),
        }
        log(
            "  asyncpg "
            + ", ".join(f"{r['connections']:.0f}: {r['commits_per_s']:.0f}/s" for r in by_asyncpg)
            + "; pgbench "
            + ", ".join(f"{r['connections']:.0f}: {r['commits_per_s']:.0f}/s" for r in by_pgbench)
        )

    async def load(
        self,
        name: str,
        *,
        provider: dict[str, float],
        latency: bool,
        orders: int,
        mix: dict[str, int],
        workers: int = 1,
        items_per_s: float | None = None,
        profile_s: float = 0.0,
        baseline: bool = False,
        tuning: dict[str, str] | None = None,
        webhooks: bool = True,
        record: bool = True,
    ) -> dict[str, Any]:
        src = self.options.baseline_src if baseline else self.options.worker_src
        self.worker_tuning = tuning or {}
        log(
            f"{name}: {orders} orders × {self.options.items} items, {mix_label(mix)}, workers={workers}, "
            f"latency={'50–200 ms' if latency else 'none'}, offered={items_per_s or 'all at once'}, "
            f"webhooks={'on' if webhooks else 'off'}, worker code {self.commit_of(src) or 'this tree'}"
        )
        async with self.deployment(
            name, provider=provider, latency=latency, workers=workers, webhooks=webhooks, src=src
        ) as dep:
            batch = await self.orders(dep, orders, mix)
            during = None
            if profile_s:
                pid = dep.workers[0].pid

                async def during() -> Any:
                    await asyncio.sleep(2.0)  # past the first orders
                    return await asyncio.to_thread(profile, pid, profile_s, self.run_dir / f"{name}.pyspy")

            result = await self.measure(dep, batch, items_per_s=items_per_s, during=during)
        self.worker_tuning = {}
        result.update(
            workers=workers,
            latency=latency,
            webhooks=webhooks,
            mix=mix_label(mix),
            orders=orders,
            items=self.options.items,
            tuning={**WORKER_TUNING, **(tuning or {})},
        )
        if record:
            self.results["scenarios"][name] = result
        self.say(name, result)
        return result

    async def dbos(
        self, name: str, *, orders: int, mix: dict[str, int], order_read_per_item: bool = False
    ) -> dict[str, Any]:
        connections = WORKER_TUNING["ORCHESTRATOR_CONNECT__MAX_CONCURRENCY"]
        log(
            f"{name}: the {PEER} peer, {orders} orders × {self.options.items} items, {mix_label(mix)}, "
            f"webhooks off, {connections} provider connections"
        )
        async with self.deployment(
            name, provider=ZERO, latency=False, workers=0, webhooks=False, migrated=False
        ) as dep:
            sysdb = f"bench_{name}_sys"
            dep.database = sysdb
            await self.fresh_database(sysdb, migrated=False)
            kafka = dep.settings.kafka
            argv = [
                sys.executable,
                "-m",
                "bench.peers.dbos_peer",
                "--bootstrap",
                kafka.bootstrap_servers,
                "--orders-topic",
                kafka.orders_topic,
                "--status-topic",
                kafka.status_topic,
                "--group",
                kafka.consumer_group,
                "--database-url",
                self.postgres.url_for(sysdb),
                "--sandbox-url",
                dep.sandbox.base_url,
                "--api-key",
                dep.sandbox.api_key,
                "--max-connections",
                connections,
            ]
            if order_read_per_item:
                argv.append("--order-read-per-item")
            peer_log = self.run_dir / f"{name}.log"
            dep.peer = spawn(
                argv, log_path=peer_log, parent_death_signal=15, cwd=Path(__file__).resolve().parents[1]
            )
            self.sampler.watch("peer", dep.peer.pid)

            async def ready() -> bool:
                return (
                    "dbos peer ready" in peer_log.read_text(errors="replace") if peer_log.exists() else False
                )

            await wait_until(ready, timeout_s=60, what="dbos peer", proc=dep.peer)
            await wait_assigned(kafka.bootstrap_servers, kafka.orders_topic, kafka.consumer_group)
            batch = await self.orders(dep, orders, mix)
            result = await self.measure(
                dep, batch, items_per_s=None, roles=("peer", "sandbox", "postgres", "kafka", "bench")
            )
        result.update(
            workers=1,
            latency=False,
            webhooks=False,
            mix=mix_label(mix),
            orders=orders,
            items=self.options.items,
        )
        self.say(name, result)
        return result

    async def peer_comparison(self) -> None:
        """Ours and the peer at equal work (assigned only, webhooks off for both, the same provider
        connections), alternated: ours, peer, ours, peer, …; the medians of each side."""
        orders, assigned = self.options.dbos_orders, {"assigned": 1}
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
        read_per_item = self.options.peer_order_read_per_item
        for n in range(1, self.options.dbos_runs + 1):
            runs["ours"].append(
                await self.load(
                    f"ours_nowebhooks_{n}",
                    provider=ZERO,
                    latency=False,
                    orders=orders,
                    mix=assigned,
                    webhooks=False,
                    record=False,
                )
            )
            if read_per_item is None:  # auto: the peer reads the order as often as ours did
                read_per_item = reads_order_per_item(runs["ours"][0])
                log(f"  ours reads the provider order once per line item: {read_per_item}; the peer does too")
            runs["peer"].append(
                await self.dbos(f"dbos_{n}", orders=orders, mix=assigned, order_read_per_item=read_per_item)
            )
        medians = {side: {key: median_of(rs, key) for key in MEDIAN_KEYS} for side, rs in runs.items()}
        ours, peer = medians["ours"]["overall_items_per_s"], medians["peer"]["overall_items_per_s"]
        self.results["peer_comparison"] = {
            "peer": PEER,
            "orders": orders,
            "items": self.options.items,
            "webhooks": False,
            "provider_connections": int(WORKER_TUNING["ORCHESTRATOR_CONNECT__MAX_CONCURRENCY"]),
            "peer_order_read_per_item": read_per_item,
            "peer_order_read_per_item_chosen": "auto"
            if self.options.peer_order_read_per_item is None
            else "set",
            "commit": self.options.worker_commit,
            "runs": {side: [_slim(r) for r in rs] for side, rs in runs.items()},
            "median": medians,
            "ratio": ours / peer if peer else float("nan"),
        }
        log(f"  peer comparison: ours {ours:.1f}/s vs peer {peer:.1f}/s (medians of {len(runs['ours'])})")

    async def recovery(self, *, same_id: bool) -> dict[str, Any]:
        name = "recovery_same_id" if same_id else "recovery_new_id"
        items = self.options.recovery_items
        count = max(1, items // self.options.items)
        log(f"{name}: SIGKILL the worker with {count * self.options.items} line items in flight")
        async with self.deployment(name, provider=ZERO, latency=False, src=self.options.worker_src) as dep:
            batch = await self.orders(dep, count, self.options.mix)
            total = sum(len(o.items) for o in batch)
            tracker = dep.tracker
            async with Publisher(self.stack.kafka.bootstrap_servers, dep.settings.kafka.orders_topic) as pub:
                await pub.publish(batch, tracker, items_per_s=None)
            await tracker.wait_for(lambda: tracker.done >= total // 4, timeout_s=120)
            victim = dep.workers[0]
            killed_at = time.time()
            victim.kill()
            flying = [item for item in tracker.items.values() if item.done is None]
            in_flight = len(flying)
            await asyncio.sleep(0.3)  # let the last events the dead worker's relay sent arrive
            sandbox_port = int(dep.sandbox.base_url.rsplit(":", 1)[1])
            sandbox_after_kill = (dep.sandbox.proc.poll(), port_open(sandbox_port))
            worker_id = victim.worker_id if same_id else f"{victim.worker_id}-b"
            replacement = self.spawn_one(dep, worker_id, f"{name}-worker2.log")
            dep.workers = [replacement]
            finished = await tracker.wait_for(lambda: tracker.terminal >= total, timeout_s=120)
            sandbox_at_end = (dep.sandbox.proc.poll(), port_open(sandbox_port))
            first_change = min((t for t in tracker.changes if t > killed_at), default=float("nan"))
            last_done = max(tracker.terminal_times)
            # an item whose last change happened before the kill but reached us after it was not in flight
            resumed = sorted(
                min((t for t in item.changes if t > killed_at), default=float("inf")) - killed_at
                for item in flying
                if item.done is None or any(t > killed_at for t in item.changes)
            )
        result = {
            "commit": self.options.worker_commit,
            "in_flight_at_kill": in_flight,
            "line_items": total,
            "same_worker_id": same_id,
            "sandbox_exit_and_listening": [sandbox_after_kill, sandbox_at_end],
            "restart_to_first_change_s": first_change - replacement.started_at,
            "recovery_s": first_change - killed_at,
            "all_done_after_kill_s": last_done - killed_at,
            "resumed_p50_s": resumed[len(resumed) // 2] if resumed else float("nan"),
            "all_resumed_s": resumed[-1] if resumed else float("nan"),
            "finished": finished,
            "failed": len(tracker.failed),
            "load": uptime(),
        }
        self.results["scenarios"][name] = result
        log(
            f"  first state change {result['recovery_s']:.2f} s after the kill, every in-flight item moved "
            f"within {result['all_resumed_s']:.2f} s, all {total} done after "
            f"{result['all_done_after_kill_s']:.1f} s"
        )
        return result

    async def drain(self) -> dict[str, Any]:
        name = "drain"
        count = max(1, self.options.drain_items // self.options.items)
        log(f"{name}: a backlog of {count * self.options.items} line items, then start the worker")
        src = self.options.worker_src
        async with self.deployment(name, provider=ZERO, latency=False, workers=0, src=src) as dep:
            batch = await self.orders(dep, count, self.options.mix)
            total = sum(len(o.items) for o in batch)
            tracker = dep.tracker
            async with Publisher(self.stack.kafka.bootstrap_servers, dep.settings.kafka.orders_topic) as pub:
                await pub.publish(batch, tracker, items_per_s=None)
            before = await self.pg_counters(dep.database)
            w0 = self.sampler.mark()
            worker = self.spawn_one(dep, f"{name}-w1", f"{name}-worker1.log")
            started = worker.started_at
            dep.workers.append(worker)
            finished = await tracker.wait_for(
                lambda: tracker.terminal >= total,
                timeout_s=self.options.drain_timeout_s or max(self.options.timeout_s, total / 10),
            )
            w1 = self.sampler.mark()
            t1 = max(tracker.terminal_times) if tracker.terminal_times else time.time()
            usage = {role: self.sampler.usage(role, w0, w1) for role in (*ROLES, HOST)}
            rss = self.sampler.rss("worker", started, w1)
            await worker.stop()
            await asyncio.sleep(0.5)
            after = await self.pg_counters(dep.database)
        done = tracker.done
        drain_s = t1 - started
        overall = done / drain_s if drain_s > 0 else float("nan")
        curve = [round(t - started, 3) for t in sorted(tracker.done_times)]
        received = [i.received for i in tracker.items.values() if i.received]
        result = {
            "commit": self.options.worker_commit,
            "line_items": total,
            "done": done,
            "finished": finished,
            "drain_s": drain_s,
            "overall_items_per_s": overall,  # the headline: the backlog ÷ worker start → last terminal event
            "items_per_s": sustained_rate(tracker.done_times),  # secondary
            "first_done_s": curve[0] if curve else float("nan"),
            "done_first_minute": first_minute(curve),
            "intake_s": (max(received) - started) if received else float("nan"),
            "extrapolated_100k_s": 100_000 / overall if overall > 0 else float("nan"),
            "commits_per_item": per_item(after["commits"] - before["commits"], done),
            "write_xacts_per_item": per_item(after["xid"] - before["xid"], done),
            "statements_per_item": (
                per_item(after["statements"] - before["statements"], done) if self.statements else None
            ),
            "usage": usage,
            **cpu_figures(usage, done),
            **rss_figures(rss),
            "failed": len(tracker.failed),
            "load": uptime(),
            "curve": curve,
        }
        self.results["scenarios"][name] = result
        log(
            f"  drained {total} in {drain_s:.1f} s ({overall:.1f}/s to the last; "
            f"{result['items_per_s']:.1f}/s sustained); first done after {result['first_done_s']:.1f} s, "
            f"{result['done_first_minute']} in the first minute; worker RSS peak "
            f"{result['worker_rss_peak_mib']:.0f} MiB; 100k extrapolated ≈ "
            f"{result['extrapolated_100k_s'] / 60:.0f} min"
        )
        return result


MEDIAN_KEYS = (
    "overall_items_per_s",
    "items_per_s",
    "machine_cpu_ms_per_item",
    "worker_cpu_ms_per_item",
    "host_cpu_ms_per_item",
    "commits_per_item",
    "write_xacts_per_item",
    "statements_per_item",
    "provider_calls_per_item",
    "status_events_per_item",
    "wal_kib_per_item",
    "received_p99_ms",
    "done_p50_ms",
    "done_p99_ms",
)


def _num(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def reads_order_per_item(run: dict[str, Any]) -> bool:
    """Whether a run of ours read the provider order about once per line item (not once per order)."""
    return run.get("calls_per_item_by_endpoint", {}).get("GET /orders/{id}", 0.0) >= 0.9


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    """A run of the peer comparison without its completion curve (the medians are what is plotted)."""
    return {k: v for k, v in result.items() if k not in ("curve", "side")}


def rss_figures(rss: list[tuple[float, float]]) -> dict[str, Any]:
    """The worker's RSS over a drain: peak, after a minute, at the end, and ~60 points of its curve."""
    if not rss:
        nan = float("nan")
        return {"worker_rss_peak_mib": nan, "worker_rss_at_1min_mib": nan, "worker_rss_end_mib": nan}
    step = max(1, len(rss) // 60)
    return {
        "worker_rss_peak_mib": max(m for _, m in rss),
        "worker_rss_at_1min_mib": next((m for t, m in rss if t >= 60), rss[-1][1]),
        "worker_rss_end_mib": rss[-1][1],
        "worker_rss_curve": [(round(t, 1), round(m, 1)) for t, m in rss[::step]],
    }


def profile(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on a running worker: where its CPU goes (self and inclusive, by function)."""
    binary = py_spy()
    if binary is None:
        return {"error": "py-spy not installed"}
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if result.returncode != 0 or not out.exists():
        return {"error": result.stderr[-800:]}
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("<")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        modules[_module(frames[-1])] += count
    return {
        "samples": total,
        "self": [(f, n / total) for f, n in self_time.most_common(15)],
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(40)],
        "modules": [(m, n / total) for m, n in modules.most_common(12)],
    }


def _frame(raw: str) -> str:
    """`func (path/to/file.py:123)` → `func (file.py)`; threads and process lines pass unchanged."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    marker = "site-packages/"
    if marker in path:
        path = path.split(marker, 1)[1]
    elif "/orchestrator/" in path:
        path = "orchestrator/" + path.split("/orchestrator/", 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{name} ({path})" if path else name


def _module(frame: str) -> str:
    path = frame.rpartition("(")[2].rstrip(")")
    if path.startswith("orchestrator/"):
        return "/".join(path.split("/")[:2])
    return path.split("/")[0] if "/" in path else path


async def run_all(options: Options, *, out_dir: Path) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    log(f"starting Kafka and PostgreSQL (logs in {run_dir})")
    async with local_stack(run_dir=run_dir / "stack") as stack:
        bench = Bench(stack, options, run_dir)
        await bench.enable_statements()
        bench.watch_stack()
        bench.sampler.start()
        bench.note_load("start")
        skip = options.skip
        try:
            if "limit" not in skip:
                await bench.pg_limit()
            zero: dict[str, Any] | None = None
            if "zero" not in skip:
                zero = await bench.load(
                    "zero_latency", provider=ZERO, latency=False, orders=options.orders, mix=options.mix
                )
            if "assigned" not in skip:
                await bench.load(
                    "assigned", provider=ZERO, latency=False, orders=options.orders, mix={"assigned": 1}
                )
            if "half" not in skip:
                capacity = (zero or {}).get("overall_items_per_s")
                measured = capacity is not None and not math.isnan(capacity) and capacity > 0
                offered = round((capacity if measured else options.half_capacity) / 2, 1)
                half_orders = max(1, math.ceil(options.half_items / options.items))
                result = await bench.load(
                    "half_load",
                    provider=ZERO,
                    latency=False,
                    orders=half_orders,
                    mix=options.mix,
                    items_per_s=offered,
                )
                result["capacity_items_per_s"] = capacity if measured else options.half_capacity
                result["capacity_measured"] = measured
            if "realistic" not in skip:
                await bench.load(
                    "realistic_latency",
                    provider=REALISTIC,
                    latency=True,
                    orders=options.realistic_orders,
                    mix=options.mix,
                    tuning=SLOW_PROVIDER_TUNING,
                )
            if "scale" not in skip:
                await bench.load(
                    "two_workers",
                    provider=ZERO,
                    latency=False,
                    orders=options.orders,
                    mix=options.mix,
                    workers=2,
                )
            if "dbos" not in skip:
                await bench.peer_comparison()
            if options.baseline_src is not None:
                await bench.load(
                    "baseline_assigned",
                    provider=ZERO,
                    latency=False,
                    orders=options.orders,
                    mix={"assigned": 1},
                    baseline=True,
                )
            if "recovery" not in skip:
                await bench.recovery(same_id=True)
                await bench.recovery(same_id=False)
            if "drain" not in skip:
                await bench.drain()
            if "profile" not in skip and options.profile_s:
                await bench.load(
                    "profiled",
                    provider=ZERO,
                    latency=False,
                    orders=options.orders,
                    mix=options.mix,
                    profile_s=options.profile_s,
                )
        finally:
            bench.note_load("end")
            bench.sampler.stop()
        bench.results["options"] = {
            "orders": options.orders,
            "items": options.items,
            "mix": mix_label(options.mix),
            "half_items": options.half_items,
            "realistic_orders": options.realistic_orders,
            "recovery_items": options.recovery_items,
            "drain_items": options.drain_items,
            "dbos_orders": options.dbos_orders,
            "dbos_runs": options.dbos_runs,
            "peer_order_read_per_item": options.peer_order_read_per_item,
            "worker_src": str(options.worker_src) if options.worker_src else None,
        }
        bench.results["worker_tuning"] = WORKER_TUNING
        bench.results["run_dir"] = str(run_dir)
        return bench.results
