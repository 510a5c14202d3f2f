"""The admin app: JSON API, web console, health, readiness and metrics in one FastAPI app.

It refuses to be built without a token. Its `Operations` (pool + provider reader) is opened by
the app's lifespan unless one is passed in (tests, or a host that already has one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from orchestrator.admin import _api, _console
from orchestrator.admin._auth import TokenCheck, Unauthorized
from orchestrator.admin._health import Check, kafka_check, postgres_check, provider_check, run_checks
from orchestrator.admin._metrics import (
    CONTENT_TYPE,
    WorkerCounters,
    kafka_consumer_lag,
    read_snapshot,
    render,
)
from orchestrator.logs import get_logger
from orchestrator.ops import Clock, Operations, OpsError, open_operations, span
from orchestrator.settings import Settings

log = get_logger(__name__)


def _error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def create_admin_app(
    *,
    settings: Settings,
    token: str | None,
    operations: Operations | None = None,
    counters: Callable[[], WorkerCounters] | None = None,
    clock: Clock | None = None,
    checks: Mapping[str, Check] | None = None,
) -> FastAPI:
    """Raises `AdminConfigError` when `token` is unset or blank: no admin surface without auth."""
    tokens = TokenCheck(token or "")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            ops: Operations = (
                operations
                if operations is not None
                else await stack.enter_async_context(open_operations(settings, clock=clock))
            )
            app.state.ops = ops
            app.state.checks = dict(checks) if checks is not None else {
                "postgres": postgres_check(ops.pool),
                "kafka": kafka_check(settings.kafka.bootstrap_servers),
                "provider": provider_check(ops.reader),
            }  # fmt: skip
            yield

    app = FastAPI(
        # No automatic trailing-slash redirects: an unauthenticated caller gets 401 or 404, never a
        # 307 that answers before the token is checked (found by the hostile-input fuzz test).
        redirect_slashes=False,
        title="Provisioning orchestrator admin API",
        version="1",
        description=(
            "Inspect, replay, cancel and retry-now line item workflows. Every call under `/api/v1` needs "
            "`Authorization: Bearer <ORCHESTRATOR_ADMIN__TOKEN>`; `X-Operator` names who acts (audit trail). "
            'Errors are `{"error": {"code", "message"}}` with 401, 404, 409 or 422. '
            "A replay is planned first (`POST /api/v1/replay/plan`, a dry run) and executed with the plan's "
            "`fingerprint` as `expect_fingerprint`: a plan that changed meanwhile is refused with 409."
        ),
        lifespan=lifespan,
    )
    app.state.tokens = tokens
    app.state.counters = counters
    app.state.settings = settings
    app.include_router(_api.router)
    app.include_router(_console.router)

    @app.exception_handler(OpsError)
    async def ops_error(request: Request, exc: OpsError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        extra = {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)}
        return JSONResponse(
            _error_body(exc.code, exc.message, **extra), status_code=exc.http_status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'] if p != 'body')}: {err['msg']}" for err in exc.errors()
        ]
        return JSONResponse(
            _error_body("invalid_request", "; ".join(problems), details=[str(p) for p in problems]),
            status_code=422,
        )

    @app.middleware("http")
    async def traced(request: Request, call_next: Any) -> Response:
        started = time.monotonic()
        with span("admin.request", method=request.method, path=request.url.path):
            response: Response = await call_next(request)
        log.debug(
            "admin request", method=request.method, path=request.url.path, status=response.status_code,
            ms=int((time.monotonic() - started) * 1000),
        )  # fmt: skip
        return response

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console", status_code=303)

    @app.get("/healthz", tags=["health"], summary="Alive (no auth)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Kafka, Postgres and the provider reachable (no auth)")
    async def readyz(request: Request) -> JSONResponse:
        ready, report = await run_checks(request.app.state.checks)
        return JSONResponse({"ready": ready, "checks": report}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (bearer token)")
    async def metrics(request: Request) -> Response:
        if not tokens.bearer_ok(request.headers.get("authorization")):
            raise Unauthorized("a valid `Authorization: Bearer <token>` header is required")
        ops: Operations = request.app.state.ops
        async with ops.pool.acquire() as conn:
            snap = await read_snapshot(conn)
        try:
            snap.consumer_lag = await kafka_consumer_lag(
                bootstrap_servers=settings.kafka.bootstrap_servers,
                group_id=settings.kafka.consumer_group,
                timeout_s=3.0,
            )
        except Exception as exc:  # lag is best effort: a scrape must not fail because Kafka is slow
            log.info("consumer lag unavailable", error=repr(exc))
        return Response(
            render(snap, request.app.state.counters() if request.app.state.counters else None),
            media_type=CONTENT_TYPE,
        )

    return app
