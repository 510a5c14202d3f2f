"""Migrations against a real PostgreSQL: apply, re-run, refuse edits, and survive a race."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from orchestrator.errors import MigrationError
from orchestrator.store import MIGRATIONS_DIR, load_migrations, migrate

ENGINE_TABLES = {
    "orders",
    "workflows",
    "transitions",
    "provider_calls",
    "inbox",
    "outbox",
    "timers",
    "operator_audit",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_migrations_apply_on_an_empty_database(fresh_database: str) -> None:
    assert await _tables(fresh_database) == set()
    report = await migrate(fresh_database)
    assert report.applied == [m.version for m in load_migrations()]
    assert ENGINE_TABLES | {"schema_migrations"} <= await _tables(fresh_database)


async def test_rerunning_migrations_is_a_no_op(fresh_database: str) -> None:
    await migrate(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        before = await conn.fetch(
            "SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    report = await migrate(fresh_database)
    assert report.applied == []
    assert report.already_applied == [r["version"] for r in before]
    conn = await asyncpg.connect(fresh_database)
    try:
        after = await conn.fetch(
            "SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    assert after == before


async def test_an_edited_applied_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(fresh_database, directory=directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationError, match=r"0001_initial\.sql was edited after it was applied"):
        await migrate(fresh_database, directory=directory)


async def test_a_failing_migration_rolls_back_and_names_the_file(fresh_database: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "9999_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match=r"9999_broken\.sql failed and was rolled back"):
        await migrate(fresh_database, directory=directory)
    tables = await _tables(fresh_database)
    assert "half_done" not in tables
    assert "workflows" in tables  # the good migrations before it stay applied


async def test_concurrent_migrate_runs_do_not_collide(fresh_database: str) -> None:
    reports = await asyncio.gather(*(migrate(fresh_database) for _ in range(4)))
    applied = sorted(v for r in reports for v in r.applied)
    assert applied == [m.version for m in load_migrations()]  # each applied exactly once


async def test_two_migrate_processes_at_once(fresh_database: str) -> None:
    env = {**os.environ, "ORCHESTRATOR_DATABASE__URL": fresh_database}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    summaries = sorted(out.decode().strip().splitlines()[-1] for out, _ in outputs)
    total = len(load_migrations())
    assert summaries == [f"0 applied, {total} already applied", f"{total} applied, 0 already applied"]
