"""The `orchestrator` command: a thin shell over library functions.

Errors go to stderr with a non-zero exit: 2 for bad input or configuration, 1 for anything else
the orchestrator reports on purpose.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.settings import Settings, load_settings

app = typer.Typer(
    name="orchestrator",
    help="Provisioning orchestrator: CRM orders in, live subscriptions out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(exc: OrchestratorError) -> typer.Exit:
    typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
    return typer.Exit(code=2 if isinstance(exc, ConfigError) else 1)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise _fail(exc) from exc


@app.command("fetch-kafka")
def fetch_kafka_cmd() -> None:
    """Download the Kafka broker's jars from Maven Central (once; later runs use the cache)."""
    from orchestrator.localstack import fetch_kafka  # noqa: PLC0415 - keep `--help` fast

    try:
        libs = fetch_kafka()
    except OrchestratorError as exc:
        raise _fail(exc) from exc
    typer.echo(f"Kafka jars ready in {libs}")


@app.command()
def migrate(
    database_url: Annotated[
        str | None, typer.Option(help="Overrides ORCHESTRATOR_DATABASE__URL for this run.")
    ] = None,
) -> None:
    """Apply pending database migrations (safe to run from several processes at once)."""
    from orchestrator.store import migrate as run_migrations  # noqa: PLC0415

    url = database_url or _settings().database.url.get_secret_value()
    try:
        report = asyncio.run(
            run_migrations(url, on_apply=lambda m: typer.echo(f"applied {m.version:04d}_{m.name}"))
        )
    except OrchestratorError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{len(report.applied)} applied, {len(report.already_applied)} already applied")


@app.command()
def run(
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply pending migrations before starting.")
    ] = True,
    worker_id: Annotated[
        str | None, typer.Option(help="Stable id of this worker (default: host + random).")
    ] = None,
) -> None:
    """Run the production worker until SIGTERM: intake, steps, timers, outbox relay, webhook ingress.

    Several workers may run side by side (one consumer group; timers are claimed with SKIP LOCKED).
    """
    import uvloop  # noqa: PLC0415 - only the worker process needs it

    from orchestrator.worker_main import run_worker  # noqa: PLC0415

    settings = _settings()
    try:
        # libuv's loop: each wake-up on a socket (Postgres, Kafka, the provider) costs less CPU
        uvloop.run(run_worker(settings, migrate_first=migrate_first, worker_id=worker_id))
    except OrchestratorError as exc:
        raise _fail(exc) from exc


@app.command()
def dev(
    info_file: Annotated[
        Path | None, typer.Option(help="Write the connection details here as JSON once everything is ready.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where the services keep data and logs (default: a new temp dir).")
    ] = None,
) -> None:
    """Run the local stack (Kafka, Postgres) in the foreground until Ctrl-C or SIGTERM.

    Set DATABASE_URL to use your own PostgreSQL instead of the embedded one.

    The worker's client-side provider limits follow its own sandbox, which has none; lifted unless set:

    ORCHESTRATOR_CONNECT__RATE_LIMIT_PER_S, ORCHESTRATOR_CONNECT__RATE_LIMIT_BURST and
    ORCHESTRATOR_CONNECT__MAX_CONCURRENCY.
    """
    from orchestrator.devstack import run_dev_stack  # noqa: PLC0415

    try:
        asyncio.run(
            run_dev_stack(
                base=_settings(),
                info_file=info_file,
                run_dir=run_dir,
                database_url=os.environ.get("DATABASE_URL"),
            )
        )
    except OrchestratorError as exc:
        raise _fail(exc) from exc


@app.command()
def demo(
    keep_running: Annotated[
        bool, typer.Option(help="Leave the stack up after the demo, like `dev`.")
    ] = False,
) -> None:
    """Start the whole local stack, send sample orders for every path and show live progress."""
    from orchestrator.demo import run_demo  # noqa: PLC0415

    try:
        ok = asyncio.run(
            run_demo(base=_settings(), database_url=os.environ.get("DATABASE_URL"), keep_running=keep_running)
        )
    except OrchestratorError as exc:
        raise _fail(exc) from exc
    if not ok:
        raise typer.Exit(code=1)


def _register_sandbox() -> None:
    from orchestrator.sandbox.cli import sandbox_command  # noqa: PLC0415

    app.command("sandbox")(sandbox_command)


_register_sandbox()


def _register_ops() -> None:
    from orchestrator.ops.cli import ops_app  # noqa: PLC0415 - typer only; the ops library loads per command

    app.add_typer(ops_app)  # workflows list|show, replay, cancel, retry-now (issue #5)


_register_ops()


def main() -> None:
    # SIGPIPE stays ignored (Python's default): every long-running command here (run, dev, demo,
    # sandbox) writes to sockets that can close under it and must get EPIPE, not die.
    # Typer handles SIGINT as KeyboardInterrupt; exit 130 like a shell would, without a traceback.
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
