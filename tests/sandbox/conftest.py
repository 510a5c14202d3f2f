"""Fixtures for sandbox tests: a fresh sandbox per test (frozen clock, fixed start) over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox

API_KEY = "sandbox-test-key"
START = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    """A new server per test: state never leaks, and starting one costs a few milliseconds.
    The clock is frozen so each test moves time itself, deterministically."""
    config = SandboxConfig(
        api_key=API_KEY, extra_api_keys=("other-key",), seed=7, start_at=START, clock_speed=0
    )
    async with run_sandbox(config) as running:
        yield running


@pytest.fixture
async def http(sandbox: RunningSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP, so the sandbox is tested independently of our client."""
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers={"X-API-Key": API_KEY}) as client:
        yield client


@pytest.fixture
async def control(sandbox: RunningSandbox) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(base_url=sandbox.base_url, api_key=API_KEY) as ctl:
        yield ctl
