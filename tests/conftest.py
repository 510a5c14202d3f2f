"""Session-wide real services: one Kafka broker and one PostgreSQL server for the whole run.

They are started by the project's own code (orchestrator.localstack), exactly as `orchestrator
dev` and the demo start them. If either cannot start, every test that needs it errors with the
reason: nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from orchestrator.localstack import LocalStack, local_stack
from orchestrator.store import migrate

# CI explores the same examples on every run (a red build must be reproducible); locally each run
# draws fresh ones. A failure prints the blob that replays it either way.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def replace_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    head, _, tail = url.rpartition("/")
    query = tail.partition("?")[2]
    return f"{head}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[LocalStack]:
    """Kafka and PostgreSQL (or the server in DATABASE_URL) for the whole session.

    Not under pytest's tmp dir: pytest resets that tree to mode 0700 whenever another session
    starts, which would lock out the unprivileged user Postgres runs as.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-stack-"))
    try:
        async with local_stack(
            run_dir=run_dir, external_database_url=os.environ.get("DATABASE_URL")
        ) as running:
            yield running
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
async def fresh_database(stack: LocalStack) -> AsyncIterator[str]:
    """An empty database of its own for one test, dropped afterwards, so tests never see each
    other's rows or schema."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield replace_database(stack.database_url, name)
    admin = await asyncpg.connect(stack.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def migrated_database(fresh_database: str) -> str:
    """A fresh database with every migration applied."""
    await migrate(fresh_database)
    return fresh_database


@pytest.fixture
def topic_name() -> str:
    """A topic no other test uses (the broker auto-creates it, or a test creates it explicitly)."""
    return f"test-{uuid.uuid4().hex[:10]}"
