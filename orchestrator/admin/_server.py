"""Serving the admin app with uvicorn inside the current event loop (worker and dev stack)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from fastapi import FastAPI

from orchestrator.admin._auth import AdminConfigError


class _Server(uvicorn.Server):
    """No signal handlers: the host process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_admin(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 15.0
) -> AsyncIterator[str]:
    """Serve `app` until the block exits; yields its base URL (`port=0`: a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AdminConfigError(f"cannot bind the admin API to {host}:{port}: {exc}") from exc
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=bound, log_config=None, log_level="warning", lifespan="on", ws="none"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"admin-{bound}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_timeout_s
        while not server.started:  # bounded by the deadline
            if task.done():
                task.result()
                raise AdminConfigError("the admin server exited during start-up")
            if loop.time() > deadline:
                raise AdminConfigError(f"the admin server did not start within {start_timeout_s} s")
            await asyncio.sleep(0.02)
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        _, pending = await asyncio.wait({task}, timeout=10)
        if pending:
            server.force_exit = True
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
