"""`/metrics` in the Prometheus text format.

Two sources: gauges computed from the database at scrape time (workflows per state, workflows in
jeopardy per reason, transitions per state, provider calls by outcome and their latency histogram,
outbox lag, timer lag), and the live counters of the worker running in this process, if any
(events consumed and rejected, steps run and failed, events published, consumer lag). A fresh
registry per scrape: nothing global.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.store import outbox_lag, read_models

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    workflows: dict[str, int] = field(default_factory=dict)
    jeopardy: dict[str, int] = field(default_factory=dict)  # reason -> workflows in jeopardy
    transitions: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # step, status, count
    latency_buckets: list[int] = field(default_factory=list)
    latency_sum_ms: float = 0.0
    latency_count: int = 0
    outbox_unpublished: int = 0
    outbox_oldest_s: float = 0.0
    timers_overdue: int = 0
    timer_lag_s: float = 0.0
    consumer_lag: dict[tuple[str, int], int] | None = None


async def read_snapshot(conn: asyncpg.Connection) -> Snapshot:
    snap = Snapshot()
    snap.workflows = await read_models.workflow_counts_by_state(conn)
    snap.jeopardy = await read_models.jeopardy_counts(conn)
    snap.transitions = await read_models.transition_counts_by_state(conn)
    snap.calls = await read_models.call_counts(conn)
    latency = await read_models.call_latency(conn, LATENCY_BUCKETS_MS)
    snap.latency_buckets, snap.latency_sum_ms, snap.latency_count = (
        latency.buckets,
        latency.sum_ms,
        latency.count,
    )
    lag = await outbox_lag(conn)
    snap.outbox_unpublished, snap.outbox_oldest_s = lag.unpublished, lag.oldest_age_s
    timers = await read_models.timer_lag(conn)
    snap.timers_overdue, snap.timer_lag_s = timers.overdue, timers.lag_s
    return snap


class _SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot, worker: WorkerCounters | None) -> None:
        self._snap = snap
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        if self._worker is not None:
            yield from self._live(self._worker)

    def _database(self) -> Iterable[Metric]:
        s = self._snap
        per_state = GaugeMetricFamily("orchestrator_workflows", "Workflows per state", labels=["state"])
        for state, n in sorted(s.workflows.items()):
            per_state.add_metric([state], n)
        jeopardy = GaugeMetricFamily(
            "orchestrator_workflows_in_jeopardy",
            "Line items in jeopardy (raised, not yet cleared), by reason",
            labels=["reason"],
        )
        for reason in sorted({"port_stuck", "activation_late", *s.jeopardy}):
            jeopardy.add_metric([reason], s.jeopardy.get(reason, 0))
        moves = CounterMetricFamily(
            "orchestrator_transitions", "State changes recorded, by target state", labels=["to_state"]
        )
        for state, n in sorted(s.transitions.items()):
            moves.add_metric([state], n)
        calls = GaugeMetricFamily(
            "orchestrator_provider_calls", "Provider calls by step and outcome", labels=["step", "status"]
        )
        for step, status, n in sorted(s.calls):
            calls.add_metric([step, status], n)
        latency = HistogramMetricFamily(
            "orchestrator_provider_call_latency_seconds", "Latency of the last attempt of each provider call"
        )
        latency.add_metric(
            [],
            [(str(b / 1000), n) for b, n in zip(LATENCY_BUCKETS_MS, s.latency_buckets, strict=True)]
            + [("+Inf", s.latency_count)],
            s.latency_sum_ms / 1000,
        )
        yield from (per_state, jeopardy, moves, calls, latency)
        yield GaugeMetricFamily(
            "orchestrator_outbox_unpublished", "Status events not yet on Kafka", s.outbox_unpublished
        )
        yield GaugeMetricFamily(
            "orchestrator_outbox_lag_seconds", "Age of the oldest unpublished event", s.outbox_oldest_s
        )
        yield GaugeMetricFamily("orchestrator_timers_overdue", "Due timers not yet claimed", s.timers_overdue)
        yield GaugeMetricFamily(
            "orchestrator_timer_lag_seconds", "How late the most overdue timer is", s.timer_lag_s
        )
        if s.consumer_lag is not None:
            lag = GaugeMetricFamily(
                "orchestrator_consumer_lag",
                "Records not yet consumed, per partition",
                labels=["topic", "partition"],
            )
            for (topic, partition), n in sorted(s.consumer_lag.items()):
                lag.add_metric([topic, str(partition)], n)
            yield lag

    def _live(self, counters: WorkerCounters) -> Iterable[Metric]:
        consumed = CounterMetricFamily(
            "orchestrator_events_consumed", "Kafka records handled by this process"
        )
        consumed.add_metric([], counters.consumed)
        rejected = CounterMetricFamily(
            "orchestrator_events_rejected", "Records sent to a DLQ by this process"
        )
        rejected.add_metric([], counters.dead_lettered)
        failures = CounterMetricFamily("orchestrator_handler_failures", "Handler attempts that raised")
        failures.add_metric([], counters.handler_failures)
        steps = CounterMetricFamily("orchestrator_steps", "Steps run by this process", labels=["result"])
        steps.add_metric(["ok"], counters.steps_run)
        steps.add_metric(["failed"], counters.steps_failed)
        published = CounterMetricFamily("orchestrator_events_published", "Outbox rows this process published")
        published.add_metric([], counters.published)
        yield from (consumed, rejected, failures, steps, published)


@dataclass(frozen=True)
class WorkerCounters:
    """Live counters of the worker running in this process (`orchestrator.worker.Worker.counters`)."""

    consumed: int
    dead_lettered: int
    handler_failures: int
    steps_run: int
    steps_failed: int
    published: int


def render(snap: Snapshot, worker: WorkerCounters | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap, worker))
    return generate_latest(registry)


async def kafka_consumer_lag(
    *, bootstrap_servers: str, group_id: str, timeout_s: float = 5.0
) -> dict[tuple[str, int], int]:
    """End offset minus committed offset per partition of the group (one Kafka round trip each)."""
    import asyncio  # noqa: PLC0415

    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            committed: dict[Any, Any] = await admin.list_consumer_group_offsets(group_id)
            await consumer.start()
            ends: dict[Any, int] = await consumer.end_offsets(list(committed))
    finally:
        await admin.close()
        await consumer.stop()
    return {(tp.topic, tp.partition): max(0, ends.get(tp, 0) - meta.offset) for tp, meta in committed.items()}
