"""The limit: how many transactions shaped like one of our steps this Postgres commits per second.

The transaction is the second half of a provider step (the heaviest one the engine runs): record
the call's outcome, lock the order and the workflow, bump the workflow, append the history row and
the status event to the outbox (whose trigger NOTIFYs), read the order's items, schedule the next
step (whose trigger NOTIFYs too). It runs on the migrated schema in a database of its own, with the
server's default durability (fsync on, synchronous_commit on), as the engine does.

Measured twice: with asyncpg from one Python process (the client the engine uses, so its CPU is
part of the figure, as it is for the engine) and with pgbench (a C client: closer to what the
server alone can do).
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from orchestrator.localstack.postgres import _bin_dir

ROWS = 2000
VALUE = b'{"specversion":"1.0","type":"provisioning.line_item.state_changed","data":' + b'"x"' * 150 + b"}"

_STEP = [
    (
        "UPDATE provider_calls SET status = 'succeeded', attempts = attempts + 1, response_status = 200, "
        "response_body = '{{\"ok\": true}}', latency_ms = 3, first_sent_at = coalesce(first_sent_at, now()), "
        "last_sent_at = now(), completed_at = now() WHERE idempotency_key = {key}"
    ),
    "SELECT order_id, state, provider_order_id FROM orders WHERE order_id = {order} FOR UPDATE",
    "SELECT workflow_id, state, context, version FROM workflows WHERE workflow_id = {wf} FOR UPDATE",
    (
        "UPDATE workflows SET state = 'submitted', context = context, sequence = sequence + 1, "
        "version = version + 1, updated_at = now() WHERE workflow_id = {wf} RETURNING sequence"
    ),
    (
        "INSERT INTO transitions (workflow_id, sequence, event, from_state, to_state, cause, details, "
        "occurred_at) VALUES ({wf}, {seq}, 'order_submitted', 'awaiting_submission', 'submitted', "
        "'submit_order', '{{}}', now())"
    ),
    "INSERT INTO outbox (topic, key, value, headers) VALUES ('bench.status', {orderkey}, {value}, '[]')",
    "SELECT state FROM workflows WHERE order_id = {order}",
    (
        "INSERT INTO timers (workflow_id, order_id, kind, due_at, payload) "
        "VALUES ({wf}, NULL, 'step', now(), '{{}}') ON CONFLICT (target, kind) WHERE fired_at IS NULL "
        "DO UPDATE SET due_at = LEAST(timers.due_at, EXCLUDED.due_at)"
    ),
]


def _wf(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


async def seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE orders, workflows, transitions, outbox, timers, provider_calls CASCADE")
        await conn.executemany(
            "INSERT INTO orders (order_id, customer, state) VALUES ($1, '{}', 'in_progress')",
            [(f"p-{n}",) for n in range(1, ROWS + 1)],
        )
        await conn.executemany(
            "INSERT INTO workflows (workflow_id, order_id, line_item_id, line_item_type, definition_version, "
            "state, spec) VALUES ($1, $2, 'li-1', 'SUBSCRIPTION', 1, 'awaiting_submission', '{}')",
            [(_wf(n), f"p-{n}") for n in range(1, ROWS + 1)],
        )
        await conn.executemany(
            "INSERT INTO provider_calls (workflow_id, order_id, step, generation, idempotency_key, method, "
            "path) VALUES ($1, $2, 'submit_order', 0, $3, 'POST', '/x')",
            [(_wf(n), f"p-{n}", f"k-{n}") for n in range(1, ROWS + 1)],
        )
    finally:
        await conn.close()


def _asyncpg_sql() -> list[str]:
    subs = {"key": "$1", "order": "$1", "wf": "$1", "seq": "$2", "orderkey": "$1::text::bytea", "value": "$2"}
    return [statement.format(**subs) for statement in _STEP]


async def asyncpg_rate(url: str, *, concurrency: int, duration_s: float) -> dict[str, float]:
    """Commits per second of the step transaction from `concurrency` asyncpg connections."""
    await seed(url)
    sql = _asyncpg_sql()
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    commits = 0
    stop_at = time.monotonic() + duration_s

    async def loop() -> None:
        nonlocal commits
        rnd = random.Random()
        async with pool.acquire() as conn:
            while time.monotonic() < stop_at:
                n = rnd.randint(1, ROWS)
                wf, order = _wf(n), f"p-{n}"
                async with conn.transaction():
                    await conn.execute(sql[0], f"k-{n}")
                    await conn.fetchrow(sql[1], order)
                    await conn.fetchrow(sql[2], wf)
                    seq = await conn.fetchval(sql[3], wf)
                    await conn.execute(sql[4], wf, seq)
                    await conn.execute(sql[5], order, VALUE)
                    await conn.fetch(sql[6], order)
                    await conn.execute(sql[7], wf)
                commits += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    finally:
        await pool.close()
    elapsed = time.monotonic() - started
    return {"commits_per_s": commits / elapsed, "concurrency": concurrency, "statements": len(sql)}


def pgbench_rate(*, port: int, database: str, clients: int, duration_s: int) -> dict[str, float]:
    """The same transaction through pgbench (prepared statements, C client)."""
    subs = {
        "key": "'k-' || :n::int",
        "order": "'p-' || :n::int",
        "wf": "lpad(to_hex(:n::int), 32, '0')::uuid",
        "seq": ":sequence",
        "orderkey": "convert_to('p-' || :n::int, 'UTF8')",
        "value": "convert_to(repeat('x', 450), 'UTF8')",
    }
    lines = [f"\\set n random(1, {ROWS})", "BEGIN;"]
    for statement in _STEP:
        text = statement.format(**subs)
        lines.append(text + (" \\gset" if "RETURNING" in text else ";"))
    lines.append("COMMIT;")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    argv = [
        str(_bin_dir() / "pgbench"),
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(duration_s),
        "-f",
        script.name,
        database,
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration_s + 60)
    finally:
        Path(script.name).unlink(missing_ok=True)
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed ({result.returncode}): {result.stderr[-1500:]}")
    return {"commits_per_s": float(match.group(1)), "clients": clients}
