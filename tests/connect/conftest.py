"""Fixtures for client tests: a real sandbox over HTTP and a started client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from orchestrator.connect import ConnectClient, ConnectConfig
from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox
from orchestrator.settings import ConnectSettings

API_KEY = "contract-key"


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    """A fresh sandbox per test with a frozen clock, so tests move provider time explicitly."""
    config = SandboxConfig(api_key=API_KEY, seed=11, clock_speed=0, start_at=datetime(2030, 3, 1, tzinfo=UTC))
    async with run_sandbox(config) as running:
        yield running


ConfigFor = Callable[..., ConnectConfig]


@pytest.fixture
def config_for(sandbox: RunningSandbox) -> ConfigFor:
    """Client configuration pointing at this test's sandbox, with per-test overrides (built the
    way the application builds it, so the settings' defaults and checks apply)."""

    def build(**overrides: object) -> ConnectConfig:
        settings = ConnectSettings(base_url=sandbox.base_url, api_key=SecretStr(API_KEY), **overrides)  # type: ignore[arg-type]
        return settings.to_config()

    return build


@pytest.fixture
async def client(config_for: ConfigFor) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(config=config_for(read_timeout_s=2.0, total_timeout_s=3.0)) as started:
        yield started


@pytest.fixture
async def control(sandbox: RunningSandbox) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(base_url=sandbox.base_url, api_key=API_KEY) as ctl:
        yield ctl
