"""`create_app(config)`: the sandbox as an ASGI app, with its ticker and webhook sender in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.sandbox._api import api_router
from orchestrator.sandbox._config import SandboxConfig
from orchestrator.sandbox._control import control_router
from orchestrator.sandbox._errors import ApiError, error_response
from orchestrator.sandbox._middleware import SandboxMiddleware
from orchestrator.sandbox._runtime import Runtime


def create_app(config: SandboxConfig) -> FastAPI:
    runtime = Runtime(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.webhooks.start()
        ticker = asyncio.get_running_loop().create_task(runtime.timeline.run_forever(), name="sandbox-ticker")
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await runtime.webhooks.stop()

    app = FastAPI(title="Connect API sandbox", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.runtime = runtime
    app.include_router(control_router(runtime))
    app.include_router(api_router(lambda: runtime.world))

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(ApiError(400, "validation_error", str(exc)))

    app.add_middleware(SandboxMiddleware, runtime=runtime)
    app.add_middleware(EscapedSegments)
    return app


class EscapedSegments:
    """Route on the path's segments as sent, like the real API: a CRM line item id such as `a/b`
    arrives escaped (`a%2Fb`), and the server's decoded `path` would split it into two levels and
    miss the route. Each segment is decoded, then its `%` and `/` re-escaped, so a route's parameter
    holds exactly one segment and `unquote` gives the id back (see `_api.py`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw:
            segments = raw.decode("latin-1").split("?", 1)[0].split("/")
            marked = (unquote(seg).replace("%", "%25").replace("/", "%2F") for seg in segments)
            scope = {**scope, "path": "/".join(marked)}
        await self.app(scope, receive, send)
