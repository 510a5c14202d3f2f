"""Serving the ingress with uvicorn: in-process for tests and `orchestrator dev`, blocking for
production entry points."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from orchestrator.kafka import LifecycleError

DEFAULT_HOST = "127.0.0.1"


def _config(app: FastAPI, *, host: str, port: int) -> uvicorn.Config:
    # log_config=None: keep our logging setup; ws="none": webhooks never upgrade to websockets
    return uvicorn.Config(
        app, host=host, port=port, log_config=None, log_level="warning", lifespan="on", ws="none"
    )


@contextlib.asynccontextmanager
async def serve_webhooks(
    app: FastAPI, *, host: str = DEFAULT_HOST, port: int = 0, start_timeout_s: float = 15.0
) -> AsyncIterator[str]:
    """Serve `app` in this event loop; yield its base URL (`port=0` picks a free port, and the URL
    carries the one bound). On exit, stop accepting, finish open requests, run the lifespan's
    shutdown (closing the producer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host=host, port=bound_port))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"webhooks-{bound_port}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_timeout_s
        while not server.started:
            if task.done():
                task.result()  # re-raise the start-up error
                raise LifecycleError("the webhook server exited during start-up")
            if loop.time() > deadline:
                raise LifecycleError(f"the webhook server did not start within {start_timeout_s} s")
            await asyncio.sleep(0.02)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        _, pending = await asyncio.wait({task}, timeout=15)
        if pending:
            server.force_exit = True
            await asyncio.wait({task}, timeout=5)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()


def run_webhooks(app: FastAPI, *, host: str = DEFAULT_HOST, port: int = 8082) -> None:
    """Serve until SIGINT/SIGTERM (blocking). For the CLI's `serve webhooks` style commands."""
    uvicorn.Server(_config(app, host=host, port=port)).run()
