"""`orchestrator dev` and `orchestrator demo`: the local stack wired together in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrator.localstack import LocalStack, local_stack
from orchestrator.logs import configure_logging
from orchestrator.settings import KafkaSettings
from orchestrator.store import migrate


def _say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - this is the command's own output


def topics(kafka: KafkaSettings) -> list[str]:
    return [kafka.orders_topic, kafka.orders_dlq_topic, kafka.status_topic, kafka.connect_events_topic]


@contextlib.asynccontextmanager
async def running_stack(
    *, kafka: KafkaSettings, run_dir: Path | None, database_url: str | None
) -> AsyncIterator[LocalStack]:
    """The stack, migrated and with the service's topics created, ready for a worker."""
    started = time.monotonic()
    _say("starting Kafka (KRaft) and PostgreSQL…")
    async with local_stack(run_dir=run_dir, external_database_url=database_url) as stack:
        report = await migrate(stack.database_url)
        await stack.kafka.create_topics(topics(kafka))
        _say(
            f"ready in {time.monotonic() - started:.1f} s "
            f"({len(report.applied)} migrations applied, {len(report.already_applied)} already there)"
        )
        yield stack
        _say("stopping…")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_dev_stack(
    *, kafka: KafkaSettings, info_file: Path | None, run_dir: Path | None, database_url: str | None
) -> None:
    configure_logging(json=False)
    stop = _stop_event()
    async with running_stack(kafka=kafka, run_dir=run_dir, database_url=database_url) as stack:
        info = stack.info
        _say(f"  kafka_bootstrap  {info.kafka_bootstrap}")
        _say(f"  database_url     {info.database_url}")
        _say(f"  data and logs    {stack.run_dir}")
        if info_file is not None:
            info.write(info_file)
            _say(f"  info file        {info_file}")
        _say("Ctrl-C or SIGTERM stops everything.")
        try:
            await stop.wait()
        finally:
            if info_file is not None:
                info_file.unlink(missing_ok=True)
    _say("stopped.")
