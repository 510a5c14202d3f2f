"""`orchestrator sandbox`: the typer command. Wire it with `app.command("sandbox")(sandbox_command)`."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.sandbox._runner import serve


def sandbox_command(
    *,
    api_key: Annotated[
        str, typer.Option("--api-key", envvar="SANDBOX_API_KEY", help="X-API-Key callers must send")
    ],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0 = any free port)", min=0, max=65535)] = 8081,
    host: Annotated[str, typer.Option(help="bind address; keep 127.0.0.1 unless you mean it")] = "127.0.0.1",
    webhook_url: Annotated[str | None, typer.Option(help="POST events here")] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(envvar="SANDBOX_WEBHOOK_SECRET", help="sent as X-Api-Key on deliveries")
    ] = None,
    seed: Annotated[int, typer.Option(help="ids, numbers and fault dice derive from it")] = 0,
    clock_speed: Annotated[float, typer.Option(help="sandbox seconds per real second; 0 freezes")] = 1.0,
    order_step_s: Annotated[
        float, typer.Option(help="SUBMITTED→PROCESSING and PROCESSING→COMPLETED, sandbox seconds", min=0)
    ] = 0.2,
    port_step_s: Annotated[
        float, typer.Option(help="PENDING→IN_PROGRESS→SCHEDULED of a port-in, sandbox seconds", min=0)
    ] = 1.0,
    port_delay_s: Annotated[
        float, typer.Option(help="SCHEDULED→outcome of a port-in, sandbox seconds", min=0)
    ] = 3.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run a local Connect API sandbox until Ctrl-C."""
    serve(
        host=host,
        port=port,
        api_key=api_key,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        seed=seed,
        clock_speed=clock_speed,
        order_step_s=order_step_s,
        port_step_s=port_step_s,
        port_delay_s=port_delay_s,
        log_level=log_level,
    )
