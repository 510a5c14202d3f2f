"""Session-wide real services: one Kafka broker and one PostgreSQL server for the whole run.

They are started by the project's own code (orchestrator.localstack), exactly as `orchestrator
dev` and the demo start them. If either cannot start, every test that needs it errors with the
reason: nothing here skips.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from orchestrator.localstack import LocalStack, local_stack
from orchestrator.store import migrate
from tests import seeds

# Hypothesis draws from TEST_SEED (set as its --hypothesis-seed in pytest_configure below), so a run
# explores the same examples on every machine until the seed changes: no example database, which
# would replay a machine's own past failures first. A failure also prints the blob that replays
# exactly that example (`@reproduce_failure`). Loaded here, before any test module builds settings.
hypothesis_settings.register_profile("seeded", print_blob=True, database=None)
hypothesis_settings.load_profile("seeded")
_SEED = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Read TEST_SEED once and hand it to hypothesis's plugin (which configures after this)."""
    try:
        chosen = seeds.seed_from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_SEED] = chosen
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(chosen)


def pytest_report_header(config: pytest.Config) -> str:
    return f"{seeds.ENV_VAR}={config.stash[_SEED]} (hypothesis and the seed/rng fixtures draw from it)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report ends with the command that replays it with this run's seed."""
    report = yield
    if report.failed:
        report.sections.append(("seed", seeds.rerun_hint(item.config.stash[_SEED], item.nodeid)))
    return report


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This run's TEST_SEED, for a randomised test to pass on (a sandbox's fault dice, a generator)."""
    return request.config.stash[_SEED]


@pytest.fixture
def rng(seed: int) -> random.Random:
    """A random source of the test's own, seeded with TEST_SEED: the same draws on every run with it."""
    return random.Random(seed)


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


async def create_database(server_url: str, *, prefix: str = "t") -> str:
    """A new empty database on the server of `server_url`; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return replace_database(server_url, name)


@pytest.fixture
async def fresh_database(stack: LocalStack) -> AsyncIterator[str]:
    """An empty database of its own for one test, dropped afterwards, so tests never see each
    other's rows or schema."""
    url = await create_database(stack.database_url)
    name = url.rpartition("/")[2].partition("?")[0]
    yield url
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
