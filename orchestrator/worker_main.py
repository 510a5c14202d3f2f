"""`orchestrator run`: the worker in the foreground with graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from orchestrator import faults
from orchestrator.logs import configure_logging, get_logger
from orchestrator.settings import Settings
from orchestrator.store import migrate
from orchestrator.worker import Worker

log = get_logger("orchestrator.run")


async def run_worker(settings: Settings, *, migrate_first: bool, worker_id: str | None) -> None:
    configure_logging(level=settings.log_level, json=settings.log_json)
    faults.arm(settings.fault_point)  # test-only crash points; unset in production (orchestrator/faults.py)
    # Belt and braces for embedders: a worker writing to a socket that Postgres or Kafka just closed
    # must get EPIPE (and reconnect), not die.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if migrate_first:
        report = await migrate(settings.database.url.get_secret_value())
        log.info("migrations", applied=report.applied, already_applied=len(report.already_applied))
    async with Worker(settings, worker_id=worker_id) as worker:
        log.info(
            "worker started",
            worker_id=worker.worker_id,
            webhook_url=worker.webhook_url,
            orders_topic=settings.kafka.orders_topic,
        )
        if worker.webhook_url is None:
            log.warning(
                "webhook ingress disabled: set ORCHESTRATOR_WEBHOOK__API_KEY to receive provider events"
            )
        if worker.admin_url is not None:
            log.info("admin API and console", url=worker.admin_url, console=f"{worker.admin_url}/console")
        await stop.wait()
        log.info("stopping: finishing in-flight work", worker_id=worker.worker_id)
    log.info("stopped")
