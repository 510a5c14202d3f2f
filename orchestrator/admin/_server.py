"""Serving the admin app inside the current event loop (worker and dev stack)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from orchestrator import http_server
from orchestrator.admin._auth import AdminConfigError


@contextlib.asynccontextmanager
async def serve_admin(
    app: FastAPI, *, host: str = http_server.DEFAULT_HOST, port: int = 0, start_timeout_s: float = 15.0
) -> AsyncIterator[str]:
    """Serve `app` until the block exits; yields its base URL (`port=0`: a free port). A port that
    is taken, or an app that does not start, is an `AdminConfigError`: the operator's to fix."""
    async with http_server.serve(
        app,
        host=host,
        port=port,
        name="the admin API",
        start_timeout_s=start_timeout_s,
        stop_timeout_s=10.0,
        error=AdminConfigError,
    ) as base_url:
        yield base_url
