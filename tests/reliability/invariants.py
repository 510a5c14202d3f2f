"""The invariant checker: after any run, is "nothing lost, nothing duplicated" still true?

`observe(...)` reads everything a run leaves behind — the database, the CRM and webhook topics with
the consumer group's committed offsets, the status topic, the DLQs and the sandbox's ledger — into
plain `Observations`. `check(observations)` is pure and returns a `Report` with one entry per
violated invariant, so the checker itself is unit-tested on hand-made observations
(tests/reliability/test_invariants.py) and the soak command reuses it unchanged.

The invariants (names as they appear in reports):

- `settled`: every accepted line item is terminal (`activated`, `completed`, `cancelled`) or
  `failed`; none is stranded mid-way.
- `effects_once`: each provider effect happened at most once per line item (and per idempotency key).
- `status_gap_free`: after deduplicating on the CloudEvent id, each line item's (and order's) status
  events (a line item's state changes, amendments and jeopardy together) have sequences 1..n in
  topic order; an id always carries the same bytes; the last event
  agrees with the database; nothing is left unpublished in the outbox.
- `consumed_accounted`: every record of the consumed topics is consumed (committed) and has either
  its inbox row (its effect) or a DLQ record; no DLQ'd event left an inbox row behind.
- `transitions_valid`: each workflow's history is gap-free, chained (from = previous to), made only
  of edges of its state machine (or notices, amended and jeopardy, that stay in their state), never
  leaves a terminal state, and was written in sequence order
  (two workers advancing one item at once would interleave it).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator.events import InvalidEventError, decode_crm_event
from orchestrator.machines import TERMINAL_STATES, machine_for
from orchestrator.sandbox import SandboxControl
from orchestrator.settings import KafkaSettings
from tests.reliability.oracle import OUTCOME, PROVIDER, check_outcomes

INVARIANTS = (
    "settled",
    "effects_once",
    "status_gap_free",
    "consumed_accounted",
    "transitions_valid",
    OUTCOME,
    PROVIDER,
)
SETTLED_STATES = TERMINAL_STATES | {"failed"}
LINE_ITEM_EVENT = "provisioning.line_item.state_changed"
ORDER_EVENT = "provisioning.order.state_changed"
# In the line item's sequence beside its state changes; a notice does not move the item.
AMENDED_EVENT = "provisioning.line_item.amended"
JEOPARDY_EVENT = "provisioning.line_item.jeopardy"
NOTICE_HISTORY_EVENTS = frozenset({"amended", "jeopardy"})


@dataclass(frozen=True)
class Record:
    """One Kafka record, independent of aiokafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value.decode("utf-8", "replace")
        return None


@dataclass
class Observations:
    """Everything a run left behind, as plain data."""

    workflows: list[dict[str, Any]]
    transitions: list[dict[str, Any]]
    orders: list[dict[str, Any]]
    inbox: list[dict[str, Any]]
    unpublished_outbox: int
    consumed: list[Record]  # the CRM and webhook topics, from the beginning
    committed: dict[tuple[str, int], int]  # the consumer group's committed offsets
    end_offsets: dict[tuple[str, int], int]
    status: list[Record]
    dlq: list[Record]
    effects: list[dict[str, Any]]
    crm_topic: str = "crm.orders.v1"
    # The provider's orders, subscriptions, licenses, add-ons and ports (`/_sandbox/entities`).
    entities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)  # the sandbox's switches and port plans


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass
class Report:
    checked: Counter[str] = field(default_factory=Counter)  # subjects examined per invariant
    violations: list[Violation] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # error codes of failed line items
    facts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, invariant: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(invariant, subject, detail))

    def table(self) -> str:
        """A summary table: every invariant, how much it examined, how many violations."""
        by_invariant = Counter(v.invariant for v in self.violations)
        lines = ["| invariant | checked | violations |", "|---|---|---|"]
        lines += [f"| {name} | {self.checked[name]} | {by_invariant[name]} |" for name in INVARIANTS]
        return "\n".join(lines)

    def explain(self, limit: int = 30) -> str:
        shown = [str(v) for v in self.violations[:limit]]
        more = len(self.violations) - len(shown)
        states = ", ".join(f"{k}={v}" for k, v in sorted(self.states.items()))
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failures.items()))
        return "\n".join(
            [self.table(), f"states: {states}", f"failures: {failures or 'none'}", *shown]
            + ([f"... and {more} more"] if more > 0 else [])
        )


# --- observing ------------------------------------------------------------------------------------


async def read_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0) -> list[Record]:
    """Every committed record of `topic`, from the beginning to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not consumer.assignment():  # without a group, every partition is assigned at once
            if loop.time() > deadline:
                raise TimeoutError(f"no partitions of {topic} were assigned within {timeout_s} s")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Record] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets within {timeout_s} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(
                    Record(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value,
                        headers=tuple((str(k), bytes(v or b"")) for k, v in (r.headers or ())),
                    )
                    for r in tp_records
                )
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def group_offsets(
    bootstrap_servers: str, group: str, topics: Iterable[str]
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(committed offsets of `group`, end offsets) for every partition of `topics`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        raw = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    committed = {(tp.topic, tp.partition): meta.offset for tp, meta in raw.items() if meta.offset >= 0}
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        for _ in range(200):  # without a group, every partition is assigned at once
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        else:  # nothing assigned: no end offsets, so "all consumed" would hold vacuously
            raise TimeoutError(f"no partition of {', '.join(topics)} was assigned within 10 s")
        ends = await consumer.end_offsets(sorted(consumer.assignment()))
    finally:
        await consumer.stop()
    return committed, {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def observe(*, database_url: str, kafka: KafkaSettings, control: SandboxControl) -> Observations:
    """Read a finished run. Call it once the run is drained (see harness.drain)."""
    conn = await asyncpg.connect(database_url)
    try:
        # jsonb as Python values (the engine's pool does the same), e.g. `error` as a dict
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        workflows = [dict(r) for r in await conn.fetch("SELECT * FROM workflows")]
        transitions = [dict(r) for r in await conn.fetch("SELECT * FROM transitions ORDER BY id")]
        orders = [
            dict(r)
            for r in await conn.fetch(
                "SELECT order_id, state, status_sequence, provider_order_id FROM orders"
            )
        ]
        inbox = [
            dict(r)
            for r in await conn.fetch('SELECT source, event_id, topic, partition, "offset" FROM inbox')
        ]
        unpublished = int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    finally:
        await conn.close()
    consumed_topics = [kafka.orders_topic, kafka.connect_events_topic]
    consumed: list[Record] = []
    for topic in consumed_topics:
        consumed += await read_topic(kafka.bootstrap_servers, topic)
    committed, ends = await group_offsets(kafka.bootstrap_servers, kafka.consumer_group, consumed_topics)
    dlq = await read_topic(kafka.bootstrap_servers, kafka.orders_dlq_topic)
    dlq += await read_topic(kafka.bootstrap_servers, kafka.connect_events_dlq_topic)
    return Observations(
        workflows=workflows,
        transitions=transitions,
        orders=orders,
        inbox=inbox,
        unpublished_outbox=unpublished,
        consumed=consumed,
        committed=committed,
        end_offsets=ends,
        status=await read_topic(kafka.bootstrap_servers, kafka.status_topic),
        dlq=dlq,
        effects=await control.ledger(kind="effect"),
        crm_topic=kafka.orders_topic,
        entities=await control.entities(),
        scenario=await control.scenario(),
    )


# --- checking -------------------------------------------------------------------------------------


def check(obs: Observations) -> Report:
    """Every invariant over one run's observations."""
    report = Report()
    report.states.update(w["state"] for w in obs.workflows)
    report.failures.update(
        str((w.get("error") or {}).get("code", "unknown")) for w in obs.workflows if w["state"] == "failed"
    )
    _check_settled(obs, report)
    _check_effects(obs, report)
    _check_status(obs, report)
    _check_consumed(obs, report)
    _check_transitions(obs, report)
    check_outcomes(obs, report)
    _check_something_read(obs, report)
    report.facts = {
        "orders": len(obs.orders),
        "line_items": len(obs.workflows),
        "status_records": len(obs.status),
        "status_duplicates": len(obs.status) - len({_event_id(r) for r in obs.status}),
        "dlq_records": len(obs.dlq),
        "consumed_records": len(obs.consumed),
        "provider_effects": len(obs.effects),
        "transitions": len(obs.transitions),
    }
    return report


def _check_something_read(obs: Observations, report: Report) -> None:
    """Fail closed: a run whose evidence is missing must not pass because nothing was there to check."""
    if not obs.workflows:
        report.add("settled", "run", "no line items at all: nothing was checked")
    if not any(r.topic == obs.crm_topic for r in obs.consumed):
        report.add("consumed_accounted", "run", f"nothing was read from {obs.crm_topic}")
    if not obs.end_offsets:
        report.add("consumed_accounted", "run", "no end offsets: no partition was read")
    if obs.workflows and not obs.status:
        report.add("status_gap_free", "run", "nothing was read from the status topic")
    if obs.workflows and not (obs.effects and obs.entities):
        report.add("provider_agrees", "run", "the provider's ledger or entities were not read")


def _check_settled(obs: Observations, report: Report) -> None:
    for w in obs.workflows:
        report.checked["settled"] += 1
        if w["state"] not in SETTLED_STATES:
            report.add("settled", _item(w), f"stranded in {w['state']!r}")


def _item(w: Mapping[str, Any]) -> str:
    return f"{w['order_id']}/{w['line_item_id']}"


# What identifies each provider effect that may happen at most once (fields of the entry; `entityId`
# or a field of its data). Every effect the sandbox records is listed here or in `_REPEATABLE`:
# an effect in neither is reported, so a new one cannot slip past unchecked.
_ONCE_PER: dict[str, tuple[str, ...]] = {
    "order.created": ("entityId",),
    "order.submitted": ("entityId",),
    "order.processing": ("entityId",),
    "order.completed": ("entityId",),
    "order.cancelled": ("entityId",),
    "order.expired": ("entityId",),
    "line_item.added": ("entityId", "lineItemId"),
    "line_item.removed": ("entityId", "lineItemId"),
    "line_item.fulfilled": ("entityId", "lineItemId"),
    "subscription.created": ("orderId", "lineItemId"),
    "subscription.activated": ("entityId",),
    "subscription.activation_requested": ("entityId",),
    "subscription.cancel_scheduled": ("entityId",),
    "subscription.cancelled": ("entityId",),
    "number.leased": ("entityId",),  # the lease token
    "number.assigned": ("entityId",),
    "lease.used": ("entityId", "msisdn"),
    "lease.expired": ("entityId",),
    "activation.scheduled": ("entityId",),
    "activation.late": ("entityId",),
    "port.created": ("entityId",),
    "port.completed": ("entityId",),
    "temp_number.assigned": ("entityId",),
    "msisdn.swapped": ("entityId",),
    "license.created": ("entityId",),
    "addon.added": ("entityId",),
    "addon.activated": ("entityId",),
    # per provider order's line item (the same subscription may be topped up by many orders);
    # a top-up through the API instead has its idempotency key
    "topup.applied": ("entityId", "orderId", "lineItemId", "idempotencyKey"),
}
# Effects that may recur for one entity, each still at most once per idempotency key (checked
# below): a port's progress and outcome (a rejected port may be requested again), corrected
# details, an amended cart item, and offering changes (several orders may change one entity).
_REPEATABLE = frozenset(
    {
        "port.in_progress",
        "port.scheduled",
        "port.failed",
        "port.requested_again",
        "port.details_updated",
        "line_item.updated",
        "subscription.offering_changed",
        "license.offering_changed",
        "addon.offering_changed",
    }
)


def _check_effects(obs: Observations, report: Report) -> None:
    per_key: Counter[tuple[str, str, str, str]] = Counter()
    per_item: Counter[tuple[str, ...]] = Counter()
    orders_created: Counter[str] = Counter()
    for e in obs.effects:
        report.checked["effects_once"] += 1
        data = e.get("data") or {}
        key = e.get("idempotencyKey")
        if key:
            per_key[(e["effect"], e["entityId"], key, json.dumps(data, sort_keys=True))] += 1
            if e["effect"] == "order.created" and key.startswith("order-"):
                orders_created[key.removeprefix("order-").rsplit("-create_order-", 1)[0]] += 1
        fields = _ONCE_PER.get(e["effect"])
        if fields is not None:
            values = tuple(
                str(e.get(f) if f in ("entityId", "idempotencyKey") else data.get(f)) for f in fields
            )
            per_item[(e["effect"], *values)] += 1
        elif e["effect"] not in _REPEATABLE:
            report.add(
                "effects_once",
                e["entityId"],
                f"effect {e['effect']!r} is not classified: once or repeatable?",
            )
    for (effect, entity, key, _), n in per_key.items():
        if n > 1:
            report.add("effects_once", entity, f"{effect} applied {n} times under key {key}")
    for ident, n in per_item.items():
        if n > 1:
            report.add("effects_once", "/".join(ident[1:]), f"{ident[0]} applied {n} times")
    for crm_order, n in orders_created.items():
        if n > 1:
            report.add("effects_once", crm_order, f"{n} provider orders created for one CRM order")


def _event_id(record: Record) -> str:
    return str(_decode(record).get("id"))


def _decode(record: Record) -> dict[str, Any]:
    try:
        value = json.loads(record.value or b"")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stream_entry(event: Mapping[str, Any]) -> tuple[str, tuple[int, str | None]] | None:
    """(subject, (sequence, state)) of one status event; None for an unknown type."""
    data = event.get("data") or {}
    kind = event.get("type")
    if kind in (LINE_ITEM_EVENT, JEOPARDY_EVENT):
        return f"item:{data.get('workflowId')}", (int(data["sequence"]), str(data["state"]))
    if kind == AMENDED_EVENT:
        return f"item:{data.get('workflowId')}", (int(data["sequence"]), None)
    if kind == ORDER_EVENT:
        return f"order:{data.get('orderId')}", (int(data["sequence"]), str(data["state"]))
    return None


def _check_status(obs: Observations, report: Report) -> None:
    first_seen: dict[str, bytes | None] = {}
    # subject -> [(sequence, state)]; an amendment tells no state (None)
    streams: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for record in obs.status:  # in topic order per partition: one key, one partition
        event = _decode(record)
        event_id = str(event.get("id"))
        if event_id in first_seen:
            if first_seen[event_id] != record.value:
                report.add("status_gap_free", event_id, "one CloudEvent id carries different contents")
            continue
        first_seen[event_id] = record.value
        told = _stream_entry(event)
        if told is None:
            report.add("status_gap_free", event_id, f"unknown status event type {event.get('type')!r}")
        else:
            streams[told[0]].append(told[1])
    expected: dict[str, tuple[int, str]] = {
        f"item:{w['workflow_id']}": (w["sequence"], w["state"]) for w in obs.workflows
    }
    expected |= {f"order:{o['order_id']}": (o["status_sequence"], o["state"]) for o in obs.orders}
    for subject, (sequence, state) in expected.items():
        report.checked["status_gap_free"] += 1
        events = streams.get(subject, [])
        sequences = [s for s, _ in events]
        if sequences != list(range(1, len(sequences) + 1)):
            report.add("status_gap_free", subject, f"sequences in topic order are {sequences}")
        if len(sequences) != sequence:
            report.add(
                "status_gap_free", subject, f"{len(sequences)} events published, database has {sequence}"
            )
        elif (told := [s for _, s in events if s is not None]) and told[-1] != state:
            report.add("status_gap_free", subject, f"last event says {told[-1]!r}, database {state!r}")
    for subject in streams.keys() - expected.keys():
        report.add("status_gap_free", subject, "status events for something the database does not know")
    if obs.unpublished_outbox:
        report.add("status_gap_free", "outbox", f"{obs.unpublished_outbox} rows never published")


def _dedup_key(record: Record, crm_topic: str) -> tuple[str, str] | None:
    """The inbox key this record must have left, or None when it cannot be decoded."""
    if record.topic == crm_topic:
        try:
            event = decode_crm_event(key=record.key, value=record.value, headers=record.headers)
        except InvalidEventError:
            return None
        source, event_id = event.dedup_key
        return (source, event_id)
    event_id = _decode(record).get("eventId")
    return ("connect", str(event_id)) if isinstance(event_id, str) and event_id else None


def _check_consumed(obs: Observations, report: Report) -> None:
    for (topic, partition), end in obs.end_offsets.items():
        committed = obs.committed.get((topic, partition), 0)
        if committed < end:
            report.add(
                "consumed_accounted", f"{topic}/{partition}", f"committed {committed} of {end}: not consumed"
            )
    dead = {
        (
            r.header("dlq_source_topic"),
            int(r.header("dlq_source_partition") or -1),
            int(r.header("dlq_source_offset") or -1),
        )
        for r in obs.dlq
    }
    inbox_keys = {(row["source"], row["event_id"]): row for row in obs.inbox}
    inbox_offsets = {(row["topic"], row["partition"], row["offset"]) for row in obs.inbox}
    for record in obs.consumed:
        if record.offset >= obs.committed.get((record.topic, record.partition), 0):
            continue  # not consumed yet: reported above
        report.checked["consumed_accounted"] += 1
        where = (record.topic, record.partition, record.offset)
        if where in dead:
            if where in inbox_offsets:
                report.add("consumed_accounted", f"{where}", "dead-lettered, yet it left an inbox row")
            continue
        key = _dedup_key(record, obs.crm_topic)
        if key is None or key not in inbox_keys:
            report.add(
                "consumed_accounted",
                f"{where}",
                f"consumed with neither an inbox row nor a DLQ record ({key})",
            )
    known = {(r.topic, r.partition, r.offset) for r in obs.consumed}
    for source in dead - known:
        report.add("consumed_accounted", f"{source}", "a DLQ record whose source record does not exist")
    for source in inbox_offsets - known:
        report.add("consumed_accounted", f"{source}", "an inbox row whose source record does not exist")


def _edges(line_item_type: str, version: int) -> set[tuple[str, str, str]]:
    machine = machine_for(line_item_type, version)
    return {(state.id, t.event, t.target.id) for state in machine.states for t in state.transitions}


def _check_transitions(obs: Observations, report: Report) -> None:
    by_workflow: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for t in obs.transitions:  # ordered by id: the order they were written in
        by_workflow[t["workflow_id"]].append(t)
    edges: dict[tuple[str, int], set[tuple[str, str, str]]] = {}
    for w in obs.workflows:
        report.checked["transitions_valid"] += 1
        graph = edges.setdefault(
            (w["line_item_type"], w["definition_version"]),
            _edges(w["line_item_type"], w["definition_version"]),
        )
        _check_history(w, by_workflow.get(w["workflow_id"], []), graph, report)


def _check_history(
    w: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    graph: set[tuple[str, str, str]],
    report: Report,
) -> None:
    subject = _item(w)
    sequences = [t["sequence"] for t in history]
    if sequences != list(range(1, len(history) + 1)):
        report.add("transitions_valid", subject, f"history written in sequence order {sequences}")
    previous: str | None = None
    for t in sorted(history, key=lambda t: t["sequence"]):
        if previous is None:
            if t["event"] != "received" or t["from_state"] != "":
                report.add(
                    "transitions_valid", subject, f"history starts with {t['event']} from {t['from_state']!r}"
                )
        elif t["event"] in NOTICE_HISTORY_EVENTS:
            if t["from_state"] != previous or t["to_state"] != previous:
                report.add(
                    "transitions_valid",
                    subject,
                    f"#{t['sequence']} {t['event']} moves {t['from_state']!r} -> {t['to_state']!r} "
                    f"(was in {previous!r}); a notice stays in its state",
                )
        else:
            if t["from_state"] != previous:
                report.add(
                    "transitions_valid",
                    subject,
                    f"#{t['sequence']} leaves {t['from_state']!r}, was in {previous!r}",
                )
            if previous in TERMINAL_STATES:
                report.add(
                    "transitions_valid", subject, f"#{t['sequence']} leaves terminal state {previous!r}"
                )
            if (t["from_state"], t["event"], t["to_state"]) not in graph:
                report.add(
                    "transitions_valid",
                    subject,
                    f"#{t['sequence']} {t['from_state']} -{t['event']}-> {t['to_state']} is no edge",
                )
        previous = t["to_state"]
    if history and previous != w["state"]:
        report.add("transitions_valid", subject, f"history ends in {previous!r}, the row says {w['state']!r}")
    if not history:
        report.add("transitions_valid", subject, "no history at all")
