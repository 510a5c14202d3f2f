"""Running the sandbox: inside the current event loop for tests, or blocking for the CLI."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from orchestrator import http_server
from orchestrator.errors import LocalStackError
from orchestrator.sandbox._app import create_app
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._runtime import Runtime

LOCALHOST = http_server.DEFAULT_HOST
# The sandbox serves a benchmark's whole load: one log line per request would cost more CPU than
# the request itself; uvicorn's defaults ("auto") take httptools and uvloop, both dependencies.
_SERVER_OPTIONS: dict[str, Any] = {"access_log": False, "timeout_keep_alive": 30}


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    base_url: str
    port: int
    config: SandboxConfig
    runtime: Runtime  # in-process access for tests; everything is also reachable over HTTP


@contextlib.asynccontextmanager
async def run_sandbox(
    config: SandboxConfig, *, startup_timeout_s: float = 10.0
) -> AsyncIterator[RunningSandbox]:
    """Serve the sandbox on 127.0.0.1 on a free port in the current loop; yields its base URL."""
    app = create_app(config)
    async with http_server.serve(
        app,
        name="the Connect sandbox",
        start_timeout_s=startup_timeout_s,
        error=LocalStackError,
        **_SERVER_OPTIONS,
    ) as base_url:
        port = urlsplit(base_url).port
        assert port is not None, base_url
        yield RunningSandbox(base_url=base_url, port=port, config=config, runtime=app.state.runtime)


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
    server_config = uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        log_config=None,
        ws="none",
        **_SERVER_OPTIONS,
    )
    uvicorn.Server(server_config).run()
