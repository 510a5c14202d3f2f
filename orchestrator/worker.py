"""The composition root: the engine wired to its edges (Kafka, Postgres, the Connect API, the
webhook ingress, the admin API). `orchestrator run`, `orchestrator dev` and the tests run this.

    worker = Worker(settings)
    await worker.run()          # until worker.shutdown() (e.g. from a signal handler)

or, to use it while it runs, `async with Worker(settings) as worker: ...`.

Start-up order is the reverse of the documented shutdown order, which is:

1. stop the admin API, then intake: the webhook ingress, then the consumer (it finishes in-flight
   records and commits their offsets);
2. stop the scheduler (in-flight steps finish within the grace period; unfinished claims are
   released so another worker takes them at once);
3. stop the outbox relay (whatever it has not published, any other worker's relay publishes);
4. close the provider client and the database pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid

from pydantic import ValidationError

from orchestrator.admin import WorkerCounters, create_admin_app, serve_admin
from orchestrator.connect import ConnectClient
from orchestrator.engine import (
    Clock,
    CrmIntake,
    EventRejected,
    JeopardyRules,
    ProviderEventIntake,
    Scheduler,
    StepRunner,
    SystemClock,
)
from orchestrator.errors import OrchestratorError
from orchestrator.events import InvalidEventError, ProviderWebhookEvent, decode_crm_event
from orchestrator.kafka import (
    ConsumedRecord,
    DeadLetter,
    DeadLetterPublisher,
    EventConsumer,
    Handler,
    OutboxRelay,
)
from orchestrator.lifecycle import AsyncLifecycle, RunState
from orchestrator.settings import Settings
from orchestrator.store import Delivery, open_pool
from orchestrator.webhooks import WEBHOOK_PATH, create_webhook_app, serve_webhooks


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _delivery(record: ConsumedRecord) -> Delivery:
    return Delivery(topic=record.topic, partition=record.partition, offset=record.offset)


def crm_handler(intake: CrmIntake) -> Handler:
    """Records of the CRM topic → decoded events → the engine. What cannot be decoded or applied
    is dead-lettered with its reason."""

    async def handle(record: ConsumedRecord) -> None:
        try:
            event = decode_crm_event(key=record.key, value=record.value, headers=record.headers)
        except InvalidEventError as exc:
            raise DeadLetter(reason=exc.reason.value, error=exc.dlq_error) from exc
        try:
            await intake.apply(event, delivery=_delivery(record))
        except EventRejected as exc:
            raise DeadLetter(reason=exc.reason, error=exc.message) from exc

    return handle


def provider_event_handler(intake: ProviderEventIntake) -> Handler:
    """Records of the provider-events topic → webhook envelopes → the engine."""

    async def handle(record: ConsumedRecord) -> None:
        try:
            event = ProviderWebhookEvent.model_validate(json.loads(record.value or b""))
        except (ValueError, ValidationError, RecursionError) as exc:  # RecursionError: absurd nesting
            raise DeadLetter(reason="invalid_webhook", error=str(exc)[:500]) from exc
        try:
            await intake.apply(event, delivery=_delivery(record))
        except EventRejected as exc:
            raise DeadLetter(reason=exc.reason, error=exc.message) from exc

    return handle


class Worker(AsyncLifecycle):
    """Everything `orchestrator run` runs, in one exit stack.

    The admin API is served when `admin_token` (or `ORCHESTRATOR_ADMIN__TOKEN`) is set, on
    `admin_port` (default: the settings'; 0 picks a free port). The webhook ingress is served when
    `ORCHESTRATOR_WEBHOOK__API_KEY` is set.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        step_concurrency: int | None = None,
        admin_token: str | None = None,
        admin_port: int | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self._clock = clock or SystemClock()
        self._step_concurrency = step_concurrency or settings.engine.step_concurrency
        token = settings.admin.token.get_secret_value() if settings.admin.token is not None else None
        self._admin_token = admin_token or token
        self._admin_port = settings.admin.port if admin_port is None else admin_port
        self._stack = contextlib.AsyncExitStack()
        self._state = RunState.NEW
        self._stopping = asyncio.Event()
        self._closing = asyncio.Lock()  # a signal handler and run() may both call shutdown()
        self.webhook_url: str | None = None  # where the provider should POST its events
        self.admin_url: str | None = None

    async def start(self) -> None:
        if self._state is not RunState.NEW:
            raise OrchestratorError(f"worker is {self._state.value}; it starts once")
        self._state = RunState.RUNNING
        try:
            await self._compose(self._stack)
        except BaseException:
            await self.shutdown()
            raise

    async def _compose(self, stack: contextlib.AsyncExitStack) -> None:
        settings, kafka = self.settings, self.settings.kafka
        database_url = settings.database.url.get_secret_value()
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
            clock=self._clock,
            status_topic=kafka.status_topic,
            step_timeout_s=settings.connect.total_timeout_s,
            jeopardy=JeopardyRules(
                port_stuck_after_s=settings.jeopardy.port_stuck_after_s,
                activation_late_after_s=settings.jeopardy.activation_late_after_s,
            ),
            lease_margin_s=settings.engine.lease_safety_margin_s,
        )
        self.relay = await stack.enter_async_context(
            OutboxRelay(
                database_url=database_url,
                bootstrap_servers=kafka.bootstrap_servers,
                poll_interval_s=settings.outbox.poll_interval_s,
            )
        )
        self.scheduler = await stack.enter_async_context(
            Scheduler(
                pool=pool,
                database_url=database_url,
                run_workflow_step=runner.run_workflow_step,
                run_order_step=runner.run_order_step,
                worker_id=self.worker_id,
                concurrency=self._step_concurrency,
                after_step=self.relay.wake,
            )
        )
        handlers = {
            kafka.orders_topic: crm_handler(
                CrmIntake(pool=pool, status_topic=kafka.status_topic, clock=self._clock)
            ),
            kafka.connect_events_topic: provider_event_handler(
                ProviderEventIntake(pool=pool, clock=self._clock)
            ),
        }

        async def handle(record: ConsumedRecord) -> None:
            await handlers[record.topic](record)
            # Its commit may have scheduled steps and status events: data commits do not NOTIFY.
            self.scheduler.wake()
            self.relay.wake()

        dead_letters = await stack.enter_async_context(
            DeadLetterPublisher(bootstrap_servers=kafka.bootstrap_servers, client_id=f"{kafka.client_id}-dlq")
        )
        self.consumer = await stack.enter_async_context(
            EventConsumer(
                bootstrap_servers=kafka.bootstrap_servers,
                group_id=kafka.consumer_group,
                topics=list(handlers),
                handler=handle,
                dlq_topics={
                    kafka.orders_topic: kafka.orders_dlq_topic,
                    kafka.connect_events_topic: kafka.connect_events_dlq_topic,
                },
                dead_letters=dead_letters,
                client_id=kafka.client_id,
                fault_kinds={kafka.orders_topic: "crm", kafka.connect_events_topic: "webhook"},
            )
        )
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
            self.webhook_url = base + WEBHOOK_PATH
        if self._admin_token is not None:
            admin = create_admin_app(
                settings=settings, token=self._admin_token, counters=self.counters, clock=self._clock
            )
            self.admin_url = await stack.enter_async_context(
                serve_admin(admin, host=settings.admin.host, port=self._admin_port)
            )

    def counters(self) -> WorkerCounters:
        """This process's live counters, for `/metrics`."""
        consumed = self.consumer.counters
        return WorkerCounters(
            consumed=consumed.consumed,
            dead_lettered=consumed.dead_lettered,
            handler_failures=consumed.handler_failures,
            steps_run=self.scheduler.steps_run,
            steps_failed=self.scheduler.steps_failed,
            published=self.relay.published,
        )

    async def shutdown(self) -> None:
        """Leave in the documented order (see the module docstring). Idempotent."""
        self._stopping.set()
        async with self._closing:
            if self._state is RunState.STOPPED:
                return
            self._state = RunState.STOPPED
            await self._stack.aclose()

    async def run(self) -> None:
        """Start, serve until `shutdown()` is called, then leave."""
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.shutdown()

    stop = shutdown  # for `async with Worker(...)`, which AsyncLifecycle maps onto start()/stop()
