"""What every reliability test (and the soak) needs: a self-contained rig of topics, database and
sandbox; `orchestrator run` worker processes that can be SIGKILLed and restarted; a generator of
realistic CRM traffic (every path, plus cancellations, amendments, duplicates and poison); and
`drain`, which waits until the system has nothing left to do.

Workers are real child processes (`python -m orchestrator run`), because a crash test that kills
a coroutine proves nothing about a process dying between two syscalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from orchestrator.faults import FAULT_POINTS, MARKER
from orchestrator.localstack import LocalKafka, free_port
from orchestrator.sandbox import RunningSandbox, SandboxConfig, SandboxControl, run_sandbox
from orchestrator.settings import ConnectSettings, DatabaseSettings, KafkaSettings, Settings, WebhookSettings
from orchestrator.webhooks import WEBHOOK_PATH
from tests.e2e.support import settings_env
from tests.reliability.invariants import SETTLED_STATES, Report, check, group_offsets, observe

SANDBOX_KEY = "reliability-sandbox-key"
# The fault points a worker (`orchestrator run`) reaches; `operator.*` are reached by operator commands.
WORKER_POINTS = tuple(p for p in FAULT_POINTS if not p.startswith("operator."))
WEBHOOK_KEY = "reliability-webhook-key"
STRUCTURED = [("content-type", b"application/cloudevents+json")]


@dataclass
class Rig:
    """One run's world: its own topics, consumer group, database and sandbox."""

    settings: Settings
    sandbox: RunningSandbox
    control: SandboxControl
    log_dir: Path
    catalog: Catalog
    workers: list[WorkerProcess] = field(default_factory=list)
    restarts: int = 0

    async def publish(self, messages: list[Message]) -> None:
        """Set the sandbox's port plans the messages carry, then publish them (the CRM's side)."""
        for message in messages:
            if message.port_plan is not None:
                msisdn, outcome, delay_s = message.port_plan
                await self.control.port_plan(msisdn, outcome=outcome, delay_s=delay_s)
        await _publish(self.settings, messages)

    def worker(self, *, fault_point: str | None = None, webhook_port: int | None = None) -> WorkerProcess:
        """Start one more `orchestrator run` process."""
        process = WorkerProcess(
            self.settings,
            log_path=self.log_dir / f"worker-{len(self.workers) + 1}.log",
            fault_point=fault_point,
            webhook_port=webhook_port,
        )
        process.start()
        self.workers.append(process)
        return process

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    async def report(self) -> Report:
        return check(
            await observe(
                database_url=self.settings.database.url.get_secret_value(),
                kafka=self.settings.kafka,
                control=self.control,
            )
        )

    async def stop_all(self) -> list[int]:
        return [await w.stop() for w in self.workers if w.alive]

    def logs(self, chars: int = 4000) -> str:
        tails = [
            f"--- {w.log_path.name}\n{w.log_tail(chars // max(len(self.workers), 1))}" for w in self.workers
        ]
        return "\n".join(tails)


@contextlib.asynccontextmanager
async def rig(
    *,
    kafka: LocalKafka,
    database_url: str,
    log_dir: Path,
    seed: int = 7,
    webhook_port: int | None = None,
    leases: int = 20,
) -> AsyncIterator[Rig]:
    """Topics of their own, a migrated database (given), and a fast sandbox delivering webhooks,
    holding a catalog of provider entities (and `leases` pool numbers) for the traffic to use."""
    suffix = uuid.uuid4().hex[:8]
    topics = KafkaSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        orders_topic=f"crm.orders.v1.{suffix}",
        orders_dlq_topic=f"crm.orders.v1.{suffix}.dlq",
        status_topic=f"provisioning.status.v1.{suffix}",
        connect_events_topic=f"connect.events.v1.{suffix}",
        connect_events_dlq_topic=f"connect.events.v1.{suffix}.dlq",
        consumer_group=f"reliability-{suffix}",
    )
    await kafka.create_topics(
        [
            topics.orders_topic,
            topics.orders_dlq_topic,
            topics.status_topic,
            topics.connect_events_topic,
            topics.connect_events_dlq_topic,
        ]
    )
    port = webhook_port or free_port()
    config = SandboxConfig(
        api_key=SANDBOX_KEY,
        seed=seed,
        order_step_s=0.2,
        port_step_s=0.3,
        port_delay_s=0.5,
        webhook_url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        webhook_secret=WEBHOOK_KEY,
        webhook_retry_max_real_s=2.0,
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    async with run_sandbox(config) as sandbox:
        settings = Settings(
            kafka=topics,
            database=DatabaseSettings(url=SecretStr(database_url), pool_max_size=8),
            connect=ConnectSettings(
                base_url=sandbox.base_url,
                api_key=SecretStr(SANDBOX_KEY),
                read_timeout_s=3.0,
                total_timeout_s=4.0,
                max_retry_after_s=5.0,
            ),
            webhook=WebhookSettings(port=port, api_key=SecretStr(WEBHOOK_KEY)),
        )
        async with SandboxControl(base_url=sandbox.base_url, api_key=SANDBOX_KEY) as control:
            catalog = await prepare_catalog(sandbox.base_url, leases=leases)
            running = Rig(
                settings=settings, sandbox=sandbox, control=control, log_dir=log_dir, catalog=catalog
            )
            try:
                yield running
            finally:
                for worker in running.workers:
                    worker.kill()


class WorkerProcess:
    """One `python -m orchestrator run` child. `kill()` is SIGKILL; `stop()` is SIGTERM + wait."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_path: Path,
        fault_point: str | None = None,
        webhook_port: int | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.log_path = log_path
        self.fault_point = fault_point
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        env |= settings_env(settings) | {"ORCHESTRATOR_LOG_LEVEL": log_level}
        if fault_point:
            env["ORCHESTRATOR_FAULT_POINT"] = fault_point
        if webhook_port is not None:
            env["ORCHESTRATOR_WEBHOOK__PORT"] = str(webhook_port)
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "run", "--no-migrate"],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def kill(self) -> None:
        if self.alive:
            assert self._process is not None
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    async def wait_exit(self, timeout_s: float) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.alive and loop.time() < deadline:
            await asyncio.sleep(0.1)
        return self.returncode

    async def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM, then wait for the graceful exit (SIGKILL and -9 if it does not come)."""
        if not self.alive:
            return self.returncode if self.returncode is not None else 0
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        code = await self.wait_exit(timeout_s)
        if code is None:
            self.kill()
            return -signal.SIGKILL
        return code

    def fired(self) -> str | None:
        """The fault point that killed this process, if one did."""
        for line in reversed(self.log_tail(20000).splitlines()):
            if line.startswith(MARKER):
                return line.split(" ", 1)[1].strip()
        return None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


# --- traffic ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    key: str
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: list(STRUCTURED))
    # (msisdn, outcome, delay_s): what the sandbox does with this port-in; set by `Rig.publish`
    port_plan: tuple[str, str, float | None] | None = None


@dataclass
class Catalog:
    """Provider entities that exist before the run (as they would for a real operator's customers),
    for the line item types that change one: TOP_UP, ADD_ON and the *_CHANGE types; and numbers the
    CRM leased from the pool, each used once."""

    subscriptions: list[str] = field(default_factory=list)  # ACTIVATED
    licenses: list[str] = field(default_factory=list)
    addons: list[tuple[str, str]] = field(default_factory=list)  # (subscriptionId, subscriptionAddonId)
    leases: list[tuple[str, str, str]] = field(default_factory=list)  # (msisdn, leaseToken, expiresAt)

    @property
    def ready(self) -> bool:
        return bool(self.subscriptions and self.licenses and self.addons)


async def prepare_catalog(base_url: str, *, leases: int) -> Catalog:
    """Two activated subscriptions (one add-on each) and a license through one provider order of
    the sandbox's own, and `leases` numbers leased from its pool: the CRM's world before the run."""
    catalog = Catalog()
    async with httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": SANDBOX_KEY}, timeout=10) as http:

        async def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            headers = {"X-Idempotency-Key": f"catalog-{uuid.uuid4()}"} if method != "GET" else {}
            answer = await http.request(method, path, json=body, headers=headers)
            answer.raise_for_status()
            return answer.json()

        items = [
            {"type": "SUBSCRIPTION", "lineItemId": "catalog-sub-1", "productOfferingId": "mobile-plan-basic"},
            {"type": "SUBSCRIPTION", "lineItemId": "catalog-sub-2", "productOfferingId": "mobile-plan-basic"},
            {"type": "LICENSE", "lineItemId": "catalog-lic-1", "productOfferingId": "office-suite"},
        ]
        order = await call(
            "POST", "/orders", {"customer": {"customerId": "cust-catalog"}, "lineItems": items}
        )
        await call("POST", f"/orders/{order['orderId']}/submit", {})
        for _ in range(200):
            order = await call("GET", f"/orders/{order['orderId']}")
            if order["state"] == "COMPLETED":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the catalog order never completed: {order}")
        created = order["createdEntities"]
        catalog.subscriptions = [s["subscriptionId"] for s in created["subscriptions"]]
        catalog.licenses = [lic["licenseId"] for lic in created["licenses"]]
        for sub_id in catalog.subscriptions:
            addon = await call("POST", f"/subscriptions/{sub_id}/addons", {"productOfferingId": "roaming-eu"})
            catalog.addons.append((sub_id, addon["subscriptionAddonId"]))
        while len(catalog.leases) < leases:
            lease = await call("POST", "/inventory/lease-numbers", {"types": ["CELL"], "count": 10})
            catalog.leases += [
                (n["msisdn"], lease["leaseToken"], lease["expiresAt"]) for n in lease["numbers"]
            ]
    if not catalog.ready:
        raise AssertionError(f"the catalog is incomplete: {catalog}")
    return catalog


def crm_event(event_type: str, data: dict[str, Any], *, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "urn:crm:reliability",
            "type": event_type,
            "subject": data["orderId"],
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


def _subscription(line_item_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "SUBSCRIPTION",
        "lineItemId": line_item_id,
        "productOfferingId": "mobile-plan-basic",
        **fields,
    }


def _porting(passcode: str = "9911") -> dict[str, Any]:
    return {
        "details": {
            "accountNumber": "ACC-123456",
            "passcode": passcode,
            "firstName": "Ada",
            "lastName": "Lovelace",
            "address": {"street1": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"},
        }
    }


KINDS = (
    "assigned",
    "port",
    "temp_port",
    "mixed",
    "cancel",
    "amend",
    "duplicate",
    "poison",
    "dup_order",
    "bundle",
    "extras",
    "leased",
    "port_rejected",
    "port_corrected",
    "partial_cancel",
)
"""Every kind of order the traffic has: each line item type, each number choice, the exception
paths (a rejected port, a corrected port, cancellations, amendments) and bad input."""
CATALOG_KINDS = frozenset({"extras", "leased"})
# Ends `failed` by design (the sandbox's plan rejects the port): the oracle expects it.
EXPECTED_FAILURES = frozenset({"port_rejected"})


def order_messages(
    rng: random.Random,
    count: int,
    *,
    prefix: str,
    kinds: tuple[str, ...] = KINDS,
    catalog: Catalog | None = None,
) -> list[Message]:
    """`count` orders of random kinds, every event of an order in the order the CRM would send it.
    The kinds in `CATALOG_KINDS` need the rig's `catalog` (`leased` uses up one lease each)."""
    messages: list[Message] = []
    for n in range(count):
        kind = rng.choice(kinds)
        order_id = f"{prefix}-{n}-{kind}"
        msisdn = f"+1555{rng.randrange(10**7):07d}"
        if kind in CATALOG_KINDS and (catalog is None or not catalog.ready):
            raise ValueError(f"kind {kind!r} needs the rig's catalog: order_messages(..., catalog=r.catalog)")
        messages += _order(kind, order_id, msisdn, rng, catalog)
    return messages


def _order(  # noqa: C901, PLR0911 - one flat branch per kind
    kind: str, order_id: str, msisdn: str, rng: random.Random, catalog: Catalog | None
) -> list[Message]:
    def submitted(
        *items: dict[str, Any],
        event_id: str | None = None,
        port_plan: tuple[str, str, float | None] | None = None,
    ) -> Message:
        data = {"orderId": order_id, "customer": {"customerId": f"cust-{order_id}"}, "lineItems": list(items)}
        return Message(
            order_id, crm_event("crm.order.submitted", data, event_id=event_id), port_plan=port_plan
        )

    def updated(item: dict[str, Any]) -> Message:
        return Message(
            order_id, crm_event("crm.order.line_item.updated", {"orderId": order_id, "lineItem": item})
        )

    def cancelled(*line_item_ids: str) -> Message:
        data: dict[str, Any] = {"orderId": order_id, "reason": "NO_NEED"}
        if line_item_ids:
            data["lineItemIds"] = list(line_item_ids)
        return Message(order_id, crm_event("crm.order.cancelled", data))

    if kind == "assigned":
        return [submitted(_subscription("li-1"))]
    if kind == "port":
        return [submitted(_subscription("li-1", msisdn=msisdn, porting=_porting()))]
    if kind == "temp_port":
        return [submitted(_subscription("li-1", msisdn=msisdn, porting=_porting(), tempNumber=True))]
    if kind == "mixed":
        license_item = {"type": "LICENSE", "lineItemId": "li-lic", "productOfferingId": "office-suite"}
        return [submitted(_subscription("li-1"), license_item)]
    if kind == "cancel":
        ported = _subscription("li-2", msisdn=msisdn, porting=_porting())
        return [submitted(_subscription("li-1"), ported), cancelled()]
    if kind == "amend":
        return [
            submitted(_subscription("li-1")),
            updated(_subscription("li-1", productOfferingId="mobile-plan-max")),
        ]
    if kind == "duplicate":
        return [submitted(_subscription("li-1"), event_id=str(uuid.uuid4()))] * 2
    if kind == "poison":
        return [Message(order_id, b"\xff{not json" + rng.randbytes(8))]
    if kind == "dup_order":
        return [submitted(_subscription("li-1")), submitted(_subscription("li-1"))]
    if kind == "bundle":
        return [
            submitted(
                _subscription("li-1"),
                {"type": "LICENSE", "lineItemId": "li-lic", "productOfferingId": "office-suite"},
                {"type": "EXTERNAL_ITEM", "lineItemId": "li-ext", "description": "SIM card shipping",
                 "amount": "4.90", "currency": "SEK"},
                {"type": "EXTERNAL_PRODUCT", "lineItemId": "li-phone", "externalProductId": "phone-x"},
            )
        ]  # fmt: skip
    if kind == "extras":
        assert catalog is not None
        sub = rng.choice(catalog.subscriptions)
        addon_sub, addon = rng.choice(catalog.addons)
        return [
            submitted(
                {"type": "TOP_UP", "lineItemId": "li-top", "productOfferingId": "topup-5gb",
                 "subscriptionId": sub},
                {"type": "ADD_ON", "lineItemId": "li-add", "productOfferingId": "roaming-us",
                 "subscriptionId": sub},
                {"type": "SUBSCRIPTION_CHANGE", "lineItemId": "li-subchg", "subscriptionId": sub,
                 "productOfferingId": rng.choice(["mobile-plan-max", "mobile-plan-basic"])},
                {"type": "LICENSE_CHANGE", "lineItemId": "li-licchg",
                 "licenseId": rng.choice(catalog.licenses),
                 "productOfferingId": rng.choice(["office-suite", "office-suite-pro"])},
                {"type": "ADD_ON_CHANGE", "lineItemId": "li-addchg", "subscriptionId": addon_sub,
                 "subscriptionAddonId": addon,
                 "productOfferingId": rng.choice(["roaming-eu", "roaming-world"])},
            )
        ]  # fmt: skip
    if kind == "leased":
        assert catalog is not None
        if not catalog.leases:
            raise ValueError("the catalog has no leased numbers left: give the rig more (rig(leases=N))")
        number, token, expires = catalog.leases.pop(0)
        return [submitted(_subscription("li-1", msisdn=number, leaseToken=token, leaseExpiresAt=expires))]
    if kind == "port_rejected":
        item = _subscription("li-1", msisdn=msisdn, porting=_porting(), tempNumber=rng.random() < 0.5)
        return [submitted(item, port_plan=(msisdn, "FAILED", None))]
    if kind == "port_corrected":
        # The port takes a while, so the correction usually lands while it is in progress (after a
        # crash also before submit, or once activated: each has its own answer, all end activated).
        temp = rng.random() < 0.5
        item = _subscription("li-1", msisdn=msisdn, porting=_porting(), tempNumber=temp)
        corrected = _subscription("li-1", msisdn=msisdn, porting=_porting("4242"), tempNumber=temp)
        return [submitted(item, port_plan=(msisdn, "COMPLETED", 2.0)), updated(corrected)]
    if kind == "partial_cancel":
        ported = _subscription("li-2", msisdn=msisdn, porting=_porting())
        return [
            submitted(_subscription("li-1"), ported, port_plan=(msisdn, "COMPLETED", 3.0)),
            cancelled("li-2"),
        ]
    raise ValueError(f"unknown traffic kind {kind!r}; known: {', '.join(KINDS)}")


async def publish(settings: Settings, messages: list[Message]) -> None:
    """Publish CRM records. Messages carrying a port plan need `Rig.publish`, which sets it first."""
    planned = [m.key for m in messages if m.port_plan is not None]
    if planned:
        raise ValueError(f"orders {planned[:3]} carry sandbox port plans: publish them with Rig.publish")
    await _publish(settings, messages)


async def _publish(settings: Settings, messages: list[Message]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_idempotence=True)
    try:
        await producer.start()
        for message in messages:
            await producer.send_and_wait(
                settings.kafka.orders_topic, message.value, key=message.key.encode(), headers=message.headers
            )
    finally:
        await producer.stop()


# --- draining ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    workflows: int
    unsettled: int
    unpublished: int
    unconsumed: int

    @property
    def done(self) -> bool:
        return self.unsettled == 0 and self.unpublished == 0 and self.unconsumed == 0 and self.workflows > 0


async def progress(settings: Settings) -> Progress:
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        total, unsettled = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE state <> ALL($1::text[])) FROM workflows",
            sorted(SETTLED_STATES),
        )
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    kafka = settings.kafka
    try:
        committed, ends = await group_offsets(
            kafka.bootstrap_servers, kafka.consumer_group, [kafka.orders_topic, kafka.connect_events_topic]
        )
    except (KafkaError, OSError, TimeoutError):  # no group yet, broker away: not drained, ask again
        return Progress(workflows=total, unsettled=unsettled, unpublished=unpublished, unconsumed=-1)
    unconsumed = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
    return Progress(workflows=total, unsettled=unsettled, unpublished=unpublished, unconsumed=unconsumed)


async def drain(
    rig: Rig,
    *,
    timeout_s: float,
    on_tick: Callable[[], None] | None = None,
    keep_alive: bool = True,
) -> Progress:
    """Wait until every line item is settled, the outbox is empty and every record is consumed.

    With `keep_alive`, a worker found dead is restarted (without a fault point): a supervisor's job.
    Raises AssertionError with the last progress and the workers' logs on timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Progress | None = None
    while True:
        if keep_alive:
            for worker in list(rig.workers):
                if not worker.alive and worker.fault_point is not None:
                    worker.fault_point = None
            if not rig.alive():
                rig.worker()
                rig.restarts += 1
        if on_tick is not None:
            on_tick()
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            previous, last = last, await progress(rig.settings)
            if last.done and previous is not None and previous.done:
                return last  # twice in a row: nothing was in flight between the two readings
        if loop.time() > deadline:
            stuck = await _stuck(rig.settings)
            raise AssertionError(f"not drained after {timeout_s:.0f} s: {last}\n{stuck}\n{rig.logs()}")
        await asyncio.sleep(0.5)


async def _stuck(settings: Settings) -> str:
    """The unsettled line items with their pending timers and last calls: what a timeout needs."""
    conn = await asyncpg.connect(settings.database.url.get_secret_value())
    try:
        rows = await conn.fetch(
            """SELECT w.workflow_id, w.order_id, w.line_item_id, w.state, w.context, w.attempts, w.updated_at,
                      (SELECT json_agg(json_build_object('kind', t.kind, 'due', t.due_at, 'fired', t.fired_at,
                                                         'by', t.claimed_by))
                         FROM timers t WHERE t.target IN (w.workflow_id::text, w.order_id)) AS timers,
                      (SELECT json_agg(json_build_object('step', c.step, 'status', c.status, 'answer',
                                                         c.response_status) ORDER BY c.id)
                         FROM provider_calls c WHERE c.workflow_id = w.workflow_id) AS calls
               FROM workflows w WHERE w.state <> ALL($1::text[]) LIMIT 5""",
            sorted(SETTLED_STATES),
        )
        workers = await conn.fetch("SELECT worker_id, last_seen FROM workers")
    finally:
        await conn.close()
    return "stuck: " + "\n".join(str(dict(r)) for r in rows) + f"\nworkers: {[dict(w) for w in workers]}"
