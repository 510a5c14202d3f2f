"""Running the sandbox: inside the current event loop for tests, or blocking for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn

from orchestrator.errors import LocalStackError
from orchestrator.sandbox._app import create_app
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._runtime import Runtime

LOCALHOST = "127.0.0.1"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host process (pytest, the engine) owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    base_url: str
    port: int
    config: SandboxConfig
    runtime: Runtime  # in-process access for tests; everything is also reachable over HTTP


def _uvicorn_config(app: object, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # one log line per request costs more CPU than the request itself
        log_level=log_level,
        log_config=None,
        http="h11",
        ws="none",
        timeout_keep_alive=30,
    )


@contextlib.asynccontextmanager
async def serve_in_loop(app: object, *, startup_timeout_s: float = 10.0) -> AsyncIterator[int]:
    """Serve any ASGI app on 127.0.0.1 on a free port in the current loop; yields the port."""
    server = _EmbeddedServer(_uvicorn_config(app, host=LOCALHOST, port=0, log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve(), name="embedded-http-server")
    try:
        async with asyncio.timeout(startup_timeout_s):
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, no event
                await asyncio.sleep(0.005)
        if not server.started:
            await task  # surfaces the start-up exception if there was one
            raise LocalStackError("embedded HTTP server did not start")
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def run_sandbox(
    config: SandboxConfig, *, startup_timeout_s: float = 10.0
) -> AsyncIterator[RunningSandbox]:
    """Serve the sandbox on 127.0.0.1 on a free port in the current loop; yields its base URL."""
    app = create_app(config)
    async with serve_in_loop(app, startup_timeout_s=startup_timeout_s) as port:
        yield RunningSandbox(
            base_url=f"http://{LOCALHOST}:{port}", port=port, config=config, runtime=app.state.runtime
        )


def serve(
    *,
    host: str = LOCALHOST,
    port: int = 8081,
    api_key: str,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    seed: int = 0,
    clock_speed: float = 1.0,
    order_step_s: float = 0.2,
    port_step_s: float = 1.0,
    port_delay_s: float = 3.0,
    log_level: str = "info",
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM). For `orchestrator sandbox`."""
    # Belt and braces for embedders: a client that goes away while we write (a SIGKILLed worker, a
    # webhook receiver restarting) must not kill the whole sandbox with exit -13 and no log line.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    config = SandboxConfig(
        api_key=api_key,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        seed=seed,
        clock_speed=clock_speed,
        order_step_s=order_step_s,
        port_step_s=port_step_s,
        port_delay_s=port_delay_s,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(_uvicorn_config(create_app(config), host=host, port=port, log_level=log_level)).run()
