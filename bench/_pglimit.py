"""The limit: how many single-row transactions this Postgres commits per second.

Each transaction is one autocommitted `INSERT` of one small row into a table of its own (no
index but the primary key, no trigger, no NOTIFY), with the server's default durability (fsync
on, synchronous_commit on), as the engine runs. A write transaction cannot cost Postgres less
than this, so "ours as write commits/s" (write transactions per line item × line items/s) next to
it says how much of the server's commit capacity the engine uses.

Measured at 1, 8 and 16 connections, twice: from asyncpg in this Python process (the client the
engine uses: its CPU on the same two cores is part of the figure, as it is for the engine), and
from pgbench (a C client: closer to what the server alone can do).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from orchestrator.localstack.postgres import _bin_dir

CONNECTIONS = (1, 8, 16)
TABLE = "bench_commit"
INSERT = f"INSERT INTO {TABLE} (worker, payload) VALUES ($1, $2)"


async def prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, worker int NOT NULL, "
            "payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(f"TRUNCATE {TABLE}")
    finally:
        await conn.close()


async def asyncpg_rate(url: str, *, connections: int, duration_s: float) -> dict[str, float]:
    """Commits per second of one-row autocommitted INSERTs from `connections` asyncpg connections."""
    await prepare(url)
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    commits = 0
    stop_at = time.monotonic() + duration_s

    async def loop(n: int, conn: asyncpg.Connection) -> None:
        nonlocal commits
        statement = await conn.prepare(INSERT)
        while time.monotonic() < stop_at:
            await statement.fetch(n, "x" * 64)
            commits += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(loop(n, c) for n, c in enumerate(conns)))
    finally:
        elapsed = time.monotonic() - started
        for conn in conns:
            await conn.close()
    return {"commits_per_s": commits / elapsed, "connections": connections}


def pgbench_rate(*, port: int, database: str, clients: int, duration_s: int) -> dict[str, float]:
    """The same transaction through pgbench (prepared statements, C client)."""
    script_text = f"INSERT INTO {TABLE} (worker, payload) VALUES (:client_id, repeat('x', 64));\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(script_text)
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
        str(min(2, clients)),
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
    return {"commits_per_s": float(match.group(1)), "connections": clients}
