"""The admin app served for real (uvicorn on 127.0.0.1, its lifespan opening the pool and the
provider client) against the session's Postgres and Kafka and a real sandbox: the e2e fixtures,
imported rather than copied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from orchestrator.admin import create_admin_app, serve_admin
from orchestrator.settings import Settings
from tests.e2e.conftest import control, sandbox, settings, status, webhook_port, worker

__all__ = ["Admin", "admin", "control", "sandbox", "settings", "status", "webhook_port", "worker"]

TOKEN = "admin-test-token-0123456789"


@dataclass
class Admin:
    url: str
    http: httpx.AsyncClient  # carries the bearer token
    anonymous: httpx.AsyncClient  # carries nothing


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[Admin]:
    app = create_admin_app(settings=settings, token=TOKEN)
    async with serve_admin(app) as url:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "api-test"}
        async with (
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http,
            httpx.AsyncClient(base_url=url, timeout=30, follow_redirects=False) as anonymous,
        ):
            yield Admin(url=url, http=http, anonymous=anonymous)
