"""Browser tests: Debian's chromium driven by Playwright's sync API (see
shared/reference/verified-libraries.md), against the console served by a real stack.

Two facts shape this file. pytest-playwright cannot find the Debian binary by itself, so the launch
arguments point at it. And once the sync Playwright fixtures start, an asyncio test can no longer
run in this process, so browser tests are sorted to the end of the session, and the stack they
use (sandbox, worker, admin app) runs on its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from pydantic import SecretStr

from orchestrator.localstack import LocalStack, free_port
from orchestrator.sandbox import SandboxConfig, SandboxControl, run_sandbox
from orchestrator.settings import ConnectSettings, DatabaseSettings, KafkaSettings, Settings, WebhookSettings
from orchestrator.store import migrate
from orchestrator.webhooks import WEBHOOK_PATH
from orchestrator.worker import Worker
from tests.conftest import replace_database

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
_T = TypeVar("_T")


def _uses_browser(item: pytest.Item) -> bool:
    return bool({"page", "browser", "context"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: after the sync Playwright loop starts, asyncio tests cannot run."""
    items.sort(key=_uses_browser)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's chromium, not a Playwright download (`playwright install` cannot work here)."""
    return {**browser_type_launch_args, "executable_path": shutil.which("chromium") or "/usr/bin/chromium"}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots land here (gitignored; CI keeps them as test artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class ConsoleStack:
    """A sandbox, a worker and the admin app with its console, on an event loop in a thread, over
    the session's Kafka and a fresh database."""

    SANDBOX_KEY = "browser-sandbox-key"
    WEBHOOK_KEY = "browser-webhook-key"

    def __init__(self, stack: LocalStack) -> None:
        self._stack = stack
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="console-stack", daemon=True)
        self.token = f"browser-{uuid.uuid4().hex}"
        self.admin_url = ""
        self.settings: Settings | None = None
        self.control: SandboxControl | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the console stack did not start in time")
        if self._error is not None:
            raise RuntimeError("the console stack failed to start") from self._error

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def call(self, coro: Coroutine[Any, Any, _T], timeout_s: float = 60.0) -> _T:
        """Run a coroutine on the stack's loop from the test's thread."""
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(self._stack.database_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        database_url = replace_database(self._stack.database_url, name)
        try:
            await migrate(database_url)
            await self._serve(database_url)
        finally:
            admin = await asyncpg.connect(self._stack.database_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    async def _serve(self, database_url: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        kafka = KafkaSettings(
            bootstrap_servers=self._stack.kafka.bootstrap_servers,
            orders_topic=f"crm.orders.v1.{suffix}",
            orders_dlq_topic=f"crm.orders.v1.{suffix}.dlq",
            status_topic=f"provisioning.status.v1.{suffix}",
            connect_events_topic=f"connect.events.v1.{suffix}",
            connect_events_dlq_topic=f"connect.events.v1.{suffix}.dlq",
            consumer_group=f"orchestrator-{suffix}",
        )
        await self._stack.kafka.create_topics(
            [kafka.orders_topic, kafka.orders_dlq_topic, kafka.status_topic, kafka.connect_events_topic,
             kafka.connect_events_dlq_topic]
        )  # fmt: skip
        webhook_port = free_port()
        config = SandboxConfig(
            api_key=self.SANDBOX_KEY,
            seed=11,
            order_step_s=0.2,
            webhook_url=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
            webhook_secret=self.WEBHOOK_KEY,
        )
        async with run_sandbox(config) as sandbox:
            settings = Settings(
                kafka=kafka,
                database=DatabaseSettings(url=SecretStr(database_url)),
                connect=ConnectSettings(base_url=sandbox.base_url, api_key=SecretStr(self.SANDBOX_KEY)),
                webhook=WebhookSettings(port=webhook_port, api_key=SecretStr(self.WEBHOOK_KEY)),
            )
            async with (
                Worker(settings, admin_token=self.token, admin_port=0) as worker,
                SandboxControl(base_url=sandbox.base_url, api_key=self.SANDBOX_KEY) as control,
            ):
                assert worker.admin_url is not None
                self.settings, self.admin_url, self.control = settings, worker.admin_url, control
                self._ready.set()
                assert self._stop is not None
                await self._stop.wait()


@pytest.fixture
def console_stack(stack: LocalStack) -> Iterator[ConsoleStack]:
    running = ConsoleStack(stack)
    running.start()
    try:
        yield running
    finally:
        running.stop()
