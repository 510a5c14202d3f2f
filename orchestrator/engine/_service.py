"""The production worker: every part of the engine composed in one exit stack.

Start-up order is the reverse of the documented shutdown order, which is:

1. stop intake: the webhook ingress, then the consumer (it finishes in-flight records and commits
   their offsets);
2. stop the scheduler (in-flight steps finish within the grace period; unfinished claims are
   released so another worker takes them at once);
3. stop the outbox relay (whatever it has not published, the next leader publishes);
4. close the provider client and the database pool.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from orchestrator.connect import ConnectClient
from orchestrator.engine._clock import Clock, SystemClock
from orchestrator.engine._intake import CrmIntake
from orchestrator.engine._provider_events import ProviderEventIntake
from orchestrator.engine._scheduler import Scheduler
from orchestrator.engine._steps import StepRunner
from orchestrator.kafka import ConsumedRecord, DeadLetterPublisher, EventConsumer, OutboxRelay
from orchestrator.settings import Settings
from orchestrator.store import open_pool
from orchestrator.webhooks import WEBHOOK_PATH, create_webhook_app, serve_webhooks


@dataclass
class Worker:
    worker_id: str
    consumer: EventConsumer
    scheduler: Scheduler
    relay: OutboxRelay
    webhook_url: str | None  # where the provider should POST its events; None when the ingress is off


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings,
    *,
    clock: Clock | None = None,
    worker_id: str | None = None,
    step_concurrency: int | None = None,
) -> AsyncIterator[Worker]:
    """Everything `orchestrator run` runs; leaves in the documented order on exit."""
    clock = clock or SystemClock()
    worker_id = worker_id or default_worker_id()
    kafka = settings.kafka
    database_url = settings.database.url.get_secret_value()
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            open_pool(
                database_url,
                min_size=settings.database.pool_min_size,
                max_size=settings.database.pool_max_size,
            )
        )
        client = await stack.enter_async_context(ConnectClient(config=settings.connect.to_config()))
        runner = StepRunner(
            pool=pool,
            client=client,
            clock=clock,
            status_topic=kafka.status_topic,
            step_timeout_s=settings.connect.total_timeout_s,
        )
        relay = await stack.enter_async_context(
            OutboxRelay(database_url=database_url, bootstrap_servers=kafka.bootstrap_servers)
        )
        scheduler = await stack.enter_async_context(
            Scheduler(
                pool=pool,
                database_url=database_url,
                run_workflow_step=runner.run_workflow_step,
                run_order_step=runner.run_order_step,
                worker_id=worker_id,
                concurrency=step_concurrency or settings.engine.step_concurrency,
            )
        )
        crm = CrmIntake(pool=pool, status_topic=kafka.status_topic, clock=clock)
        provider = ProviderEventIntake(pool=pool, clock=clock)

        async def handle(record: ConsumedRecord) -> None:
            if record.topic == kafka.orders_topic:
                await crm(record)
            else:
                await provider(record)

        dead_letters = await stack.enter_async_context(
            DeadLetterPublisher(bootstrap_servers=kafka.bootstrap_servers, client_id=f"{kafka.client_id}-dlq")
        )
        consumer = await stack.enter_async_context(
            EventConsumer(
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=kafka.consumer_group,
                topics=[kafka.orders_topic, kafka.connect_events_topic],
                handler=handle,
                dlq_topics={
                    kafka.orders_topic: kafka.orders_dlq_topic,
                    kafka.connect_events_topic: kafka.connect_events_dlq_topic,
                },
                dead_letters=dead_letters,
                client_id=kafka.client_id,
            )
        )
        webhook_url = None
        if settings.webhook.api_key is not None:
            app = create_webhook_app(
                bootstrap_servers=kafka.bootstrap_servers,
                api_key=settings.webhook.api_key,
                topic=kafka.connect_events_topic,
                client_id=f"{kafka.client_id}-webhooks",
            )
            base = await stack.enter_async_context(
                serve_webhooks(app, host=settings.webhook.host, port=settings.webhook.port)
            )
            webhook_url = base + WEBHOOK_PATH
        yield Worker(
            worker_id=worker_id, consumer=consumer, scheduler=scheduler, relay=relay, webhook_url=webhook_url
        )
