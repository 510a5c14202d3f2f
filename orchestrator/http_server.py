"""Serving an ASGI app with uvicorn inside the running event loop.

The webhook ingress, the admin API and the Connect sandbox each run next to other work in one
process (the worker, `orchestrator dev`, the tests), so they share this one way of starting and
stopping an embedded server:

    async with serve(app, port=0, name="the webhook ingress") as base_url: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import uvicorn

from orchestrator.errors import OrchestratorError

__all__ = ["DEFAULT_HOST", "HttpServerError", "serve"]

DEFAULT_HOST = "127.0.0.1"

# What every embedded server shares unless the caller says otherwise: our own logging setup
# (log_config=None), no websockets (nothing here upgrades), the app's lifespan run.
_DEFAULT_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "log_level": "warning",
    "lifespan": "on",
    "ws": "none",
}
_FORCED_STOP_S = 5.0


class HttpServerError(OrchestratorError):
    """An embedded HTTP server could not bind its port or did not start."""

    code = "http_server_failed"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host process owns SIGINT and SIGTERM, and stops
    the server by leaving `serve`'s block."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int, name: str, error: type[OrchestratorError]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise error(f"cannot bind {name} to {host}:{port}: {exc}", host=host, port=port) from exc
    return sock


async def _run(
    server: uvicorn.Server,
    sock: socket.socket,
    *,
    name: str,
    host: str,
    port: int,
    error: type[OrchestratorError],
) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn exits the process when the app's lifespan start-up fails. Embedded next to other
        # work, that is the server's failure to report, not the process's end: a SystemExit leaving
        # a task would stop the whole event loop.
        raise error(
            f"{name} exited during start-up: the app's lifespan start-up failed (see the log)",
            host=host,
            port=port,
        ) from exc


@contextlib.asynccontextmanager
async def serve(
    app: Callable[..., Any],
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    name: str = "the HTTP server",
    start_timeout_s: float = 15.0,
    stop_timeout_s: float = 15.0,
    error: type[OrchestratorError] = HttpServerError,
    **options: Any,
) -> AsyncIterator[str]:
    """Serve `app` in this event loop until the block exits; yields its base URL.

    `port=0` picks a free port (the URL carries the one bound). A port that is taken, or an app that
    does not start, raises `error` (an `HttpServerError` unless the caller's domain has its own)
    naming `name`. `options` go to `uvicorn.Config`.
    On exit the server stops accepting, finishes open requests for up to `stop_timeout_s`, then
    closes the rest, and runs the app's lifespan shutdown.
    """
    sock = _bind(host, port, name, error)
    bound: int = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=bound, **{**_DEFAULT_OPTIONS, **options})
    server = _EmbeddedServer(config)
    task = asyncio.create_task(
        _run(server, sock, name=name, host=host, port=bound, error=error), name=f"{name} on {bound}"
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_timeout_s
        while not server.started:  # uvicorn exposes a flag, not an event to wait on
            if task.done():
                task.result()  # the start-up exception, if there was one
                raise error(f"{name} exited during start-up", host=host, port=bound)
            if loop.time() > deadline:
                raise error(f"{name} did not start within {start_timeout_s} s", host=host, port=bound)
            await asyncio.sleep(0.01)
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        _, pending = await asyncio.wait({task}, timeout=stop_timeout_s)
        if pending:
            server.force_exit = True
            await asyncio.wait({task}, timeout=_FORCED_STOP_S)
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
