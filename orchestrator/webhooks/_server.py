"""Serving the ingress in-process: for the worker, `orchestrator dev` and the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from orchestrator import http_server


@contextlib.asynccontextmanager
async def serve_webhooks(
    app: FastAPI, *, host: str = http_server.DEFAULT_HOST, port: int = 0, start_timeout_s: float = 15.0
) -> AsyncIterator[str]:
    """Serve `app` in this event loop; yield its base URL (`port=0` picks a free port, and the URL
    carries the one bound). On exit, stop accepting, finish open requests, run the lifespan's
    shutdown (closing the producer)."""
    async with http_server.serve(
        app, host=host, port=port, name="the webhook ingress", start_timeout_s=start_timeout_s
    ) as base_url:
        yield base_url
