"""The step runner's world for engine tests: a migrated database, the sandbox over real HTTP, our
Connect client and the sandbox's control API, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from pydantic import SecretStr

from orchestrator.connect import ConnectClient
from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox
from orchestrator.settings import ConnectSettings
from orchestrator.store import open_pool

KEY = "engine-test-key"


@dataclass(frozen=True)
class Provider:
    pool: asyncpg.Pool
    client: ConnectClient
    control: SandboxControl


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    async with run_sandbox(SandboxConfig(api_key=KEY, seed=3)) as running:
        yield running


@pytest.fixture
async def provider(migrated_database: str, sandbox: RunningSandbox) -> AsyncIterator[Provider]:
    async with (
        open_pool(migrated_database) as pool,
        ConnectClient(
            config=ConnectSettings(base_url=sandbox.base_url, api_key=SecretStr(KEY)).to_config()
        ) as client,
        SandboxControl(base_url=sandbox.base_url, api_key=KEY) as control,
    ):
        yield Provider(pool=pool, client=client, control=control)
