"""The one in-process uvicorn runner, shared by the webhook ingress, the admin API and the sandbox
(`run_sandbox`, tested in tests/sandbox): it binds loopback by default, says clearly when a port
is taken or the app does not start, and frees the port on exit."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from orchestrator.admin import AdminConfigError, serve_admin
from orchestrator.http_server import HttpServerError, serve
from orchestrator.webhooks import serve_webhooks


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_serves_on_loopback_and_frees_the_port_on_exit() -> None:
    async with serve(hello_app()) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert base_url.startswith("http://127.0.0.1:")
        assert (await http.get("/hello")).json() == {"hello": "world"}
        assert not is_free(port_of(base_url))
    assert is_free(port_of(base_url))


async def test_a_taken_port_is_a_clear_error() -> None:
    async with serve(hello_app()) as base_url:
        taken = port_of(base_url)
        with pytest.raises(HttpServerError, match=rf"cannot bind the thing to 127\.0\.0\.1:{taken}"):
            async with serve(hello_app(), port=taken, name="the thing"):
                pass
        with pytest.raises(HttpServerError, match="the webhook ingress"):
            async with serve_webhooks(hello_app(), port=taken):
                pass
        with pytest.raises(AdminConfigError, match="cannot bind the admin API"):
            async with serve_admin(hello_app(), port=taken):
                pass


async def test_an_app_that_cannot_start_is_an_error() -> None:
    @asynccontextmanager
    async def broken(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield  # pragma: no cover

    with pytest.raises(HttpServerError, match="exited during start-up"):
        async with serve(FastAPI(lifespan=broken)):
            pass
