"""End-to-end fixtures: the real broker and database from the session, a real sandbox over HTTP,
and a worker wired to them with topics and a database of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from orchestrator.localstack import LocalStack, free_port
from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox
from orchestrator.settings import ConnectSettings, DatabaseSettings, KafkaSettings, Settings, WebhookSettings
from orchestrator.webhooks import WEBHOOK_PATH
from orchestrator.worker import Worker
from tests.e2e.support import StatusEvents, TopicReader

SANDBOX_KEY = "e2e-sandbox-key"
WEBHOOK_KEY = "e2e-webhook-key"


@pytest.fixture
def webhook_port() -> int:
    """Chosen before anything starts: the sandbox must know where to deliver webhooks, and the
    worker (started later) serves the ingress there."""
    return free_port()


@pytest.fixture
async def sandbox(webhook_port: int) -> AsyncIterator[RunningSandbox]:
    """The provider, fast: orders complete in a fraction of a second, ports in about two."""
    config = SandboxConfig(
        api_key=SANDBOX_KEY,
        seed=7,
        order_step_s=0.2,
        port_step_s=0.3,
        port_delay_s=0.5,
        webhook_url=f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",
        webhook_secret=WEBHOOK_KEY,
    )
    async with run_sandbox(config) as running:
        yield running


@pytest.fixture
async def control(sandbox: RunningSandbox) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(base_url=sandbox.base_url, api_key=SANDBOX_KEY) as ctl:
        yield ctl


@pytest.fixture
async def settings(
    stack: LocalStack, migrated_database: str, sandbox: RunningSandbox, webhook_port: int
) -> Settings:
    """Settings of this test's worker: its own topics, consumer group and database."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=stack.kafka.bootstrap_servers,
        orders_topic=f"crm.orders.v1.{suffix}",
        orders_dlq_topic=f"crm.orders.v1.{suffix}.dlq",
        status_topic=f"provisioning.status.v1.{suffix}",
        connect_events_topic=f"connect.events.v1.{suffix}",
        connect_events_dlq_topic=f"connect.events.v1.{suffix}.dlq",
        consumer_group=f"orchestrator-{suffix}",
    )
    await stack.kafka.create_topics(
        [
            kafka.orders_topic,
            kafka.orders_dlq_topic,
            kafka.status_topic,
            kafka.connect_events_topic,
            kafka.connect_events_dlq_topic,
        ]
    )
    return Settings(
        kafka=kafka,
        database=DatabaseSettings(url=SecretStr(migrated_database)),
        connect=ConnectSettings(base_url=sandbox.base_url, api_key=SecretStr(SANDBOX_KEY)),
        webhook=WebhookSettings(port=webhook_port, api_key=SecretStr(WEBHOOK_KEY)),
    )


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    async with Worker(settings) as running:
        yield running


@pytest.fixture
async def status(settings: Settings) -> AsyncIterator[StatusEvents]:
    async with StatusEvents(settings.kafka.bootstrap_servers, settings.kafka.status_topic) as reader:
        yield reader


@pytest.fixture
async def dlq(settings: Settings) -> AsyncIterator[TopicReader]:
    async with TopicReader(settings.kafka.bootstrap_servers, settings.kafka.orders_dlq_topic) as reader:
        yield reader
