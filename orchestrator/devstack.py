"""`orchestrator dev` and `orchestrator demo`: the whole local stack wired together.

Kafka and PostgreSQL as real processes, the Connect sandbox and the worker (with its webhook
ingress) in this process, wired to each other exactly as in production: the sandbox delivers its
webhooks to the worker's ingress, the worker calls the sandbox with an API key.

One difference: the worker's client-side provider limits (`ORCHESTRATOR_CONNECT__RATE_LIMIT_PER_S`,
`…__RATE_LIMIT_BURST`, `…__MAX_CONCURRENCY`) default to a production contract (50 calls/s), and
this stack's own sandbox has no limit, so a developer pushing load through it would measure the
default instead of the code. Each limit the environment does not set is lifted (`DEV_LIMITS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from orchestrator.localstack import LocalStack, StackInfo, free_port, local_stack
from orchestrator.logs import configure_logging
from orchestrator.sandbox import RunningSandbox, SandboxConfig, run_sandbox
from orchestrator.settings import ConnectSettings, DatabaseSettings, KafkaSettings, Settings, WebhookSettings
from orchestrator.store import migrate
from orchestrator.webhooks import WEBHOOK_PATH
from orchestrator.worker import Worker


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - this is the command's own output


def topics(kafka: KafkaSettings) -> list[str]:
    return [
        kafka.orders_topic,
        kafka.orders_dlq_topic,
        kafka.status_topic,
        kafka.connect_events_topic,
        kafka.connect_events_dlq_topic,
    ]


DEV_LIMITS: dict[str, float | int] = {
    "rate_limit_per_s": 100_000.0,
    "rate_limit_burst": 10_000,
    "max_concurrency": 1024,  # the most steps a worker may run at once
}
"""The client-side provider limits of a worker calling this stack's own sandbox (which has none)."""


def dev_connect_settings(base: ConnectSettings, *, base_url: str, api_key: str) -> ConnectSettings:
    """`base` pointed at the dev sandbox, with every limit in `DEV_LIMITS` lifted unless it was
    set explicitly (through the environment: it is then in `base.model_fields_set`)."""
    lifted = {name: value for name, value in DEV_LIMITS.items() if name not in base.model_fields_set}
    return base.model_copy(update={"base_url": base_url, "api_key": SecretStr(api_key), **lifted})


@dataclass
class DevStack:
    stack: LocalStack
    sandbox: RunningSandbox
    worker: Worker
    settings: Settings
    admin_url: str | None = None
    admin_token: str | None = None

    @property
    def info(self) -> StackInfo:
        return StackInfo(
            kafka_bootstrap=self.stack.kafka.bootstrap_servers,
            database_url=self.stack.database_url,
            sandbox_url=self.sandbox.base_url,
            sandbox_api_key=self.sandbox.config.api_key,
            webhook_url=self.worker.webhook_url,
            admin_url=self.admin_url,
            admin_token=self.admin_token,
        )


@contextlib.asynccontextmanager
async def dev_stack(
    *, base: Settings, run_dir: Path | None, database_url: str | None
) -> AsyncIterator[DevStack]:
    """Everything, migrated and wired, until the block exits (then stopped in reverse order)."""
    started = time.monotonic()
    say("starting Kafka (KRaft) and PostgreSQL…")
    async with local_stack(run_dir=run_dir, external_database_url=database_url) as stack:
        report = await migrate(stack.database_url)
        await stack.kafka.create_topics(topics(base.kafka))
        webhook_port = free_port()
        webhook_key = secrets.token_urlsafe(16)
        sandbox_config = SandboxConfig(
            api_key=f"sandbox-{secrets.token_urlsafe(12)}",
            webhook_url=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
            webhook_secret=webhook_key,
            seed=1,
        )
        async with run_sandbox(sandbox_config) as sandbox:
            settings = base.model_copy(
                update={
                    "kafka": base.kafka.model_copy(
                        update={"bootstrap_servers": stack.kafka.bootstrap_servers}
                    ),
                    "database": DatabaseSettings(url=SecretStr(stack.database_url)),
                    "connect": dev_connect_settings(
                        base.connect, base_url=sandbox.base_url, api_key=sandbox_config.api_key
                    ),
                    "webhook": WebhookSettings(port=webhook_port, api_key=SecretStr(webhook_key)),
                }
            )
            admin_token = secrets.token_urlsafe(24)
            async with Worker(settings, admin_token=admin_token, admin_port=0) as worker:
                say(
                    f"ready in {time.monotonic() - started:.1f} s "
                    f"({len(report.applied)} migrations applied, {len(report.already_applied)} already there)"
                )
                yield DevStack(
                    stack=stack,
                    sandbox=sandbox,
                    worker=worker,
                    settings=settings,
                    admin_url=worker.admin_url,
                    admin_token=admin_token,
                )
                say("stopping…")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_dev_stack(
    *, base: Settings, info_file: Path | None, run_dir: Path | None, database_url: str | None
) -> None:
    configure_logging(level="WARNING", json=False)
    stop = stop_on_signals()
    async with dev_stack(base=base, run_dir=run_dir, database_url=database_url) as dev:
        info = dev.info
        for key, value in sorted(vars(info).items()):
            if value is not None:
                say(f"  {key:<16} {value}")
        say(f"  {'orders topic':<16} {dev.settings.kafka.orders_topic} (publish CRM events here)")
        say(f"  {'status topic':<16} {dev.settings.kafka.status_topic}")
        say(f"  {'data and logs':<16} {dev.stack.run_dir}")
        if info_file is not None:
            info.write(info_file)
            say(f"  {'info file':<16} {info_file}")
        say("Ctrl-C or SIGTERM stops everything.")
        try:
            await stop.wait()
        finally:
            if info_file is not None:
                info_file.unlink(missing_ok=True)
    say("stopped.")
