"""The consumer-group edge of the engine: at-least-once delivery, offsets committed only after the
effect is durable.

How a record flows:

1. One fetch loop calls `getmany` and appends each partition's records to that partition's queue.
   A partition whose queue is full is paused (its buffered records are dropped by aiokafka and
   fetched again on resume), so a slow partition never makes the process hoard memory.
2. One worker task per assigned partition awaits `handler(record)` for its records strictly in
   order. Different partitions run concurrently.
3. The handler commits its own Postgres transaction (effect + inbox row) before it returns. Only
   then does the worker advance the partition's "handled" offset. The fetch loop commits handled
   offsets to Kafka between fetch rounds (at most every `commit_interval_s`), on revocation and
   on stop. An offset is therefore never committed before the effect is durable (design-notes
   guarantee 1; the DBOS #733 bug).
4. `DeadLetter` from the handler: the record is published to the partition topic's DLQ and only
   after the broker's ack counts as handled. Any other exception: the same record is retried with
   capped exponential backoff, forever, without committing past it (logged and counted each time).
   `stop()` and revocation interrupt the wait. A DLQ publish that fails (broker down) is retried
   the same way, handler included: handlers are idempotent through the inbox.

A topic without a DLQ mapping: `DeadLetter` is logged at error level (`dead_letter_without_dlq`) and
treated like any other handler failure: the record is retried with backoff and never committed
past, so it can never be silently dropped. The partition stays blocked until an operator adds a
mapping or fixes the handler; the `handler_failures` counter and the logs make that loud.

Delivery is at-least-once: a crash after the handler's commit but before the Kafka commit, or a
commit refused after a rebalance (`CommitFailedError`), redelivers records. The engine's inbox
(keyed by CloudEvents source+id) makes the redelivery a no-op.

Shutdown order (`stop()`): stop fetching; drop records not yet started (they are not committed, so
they come back); let in-flight handlers finish within `stop_grace_s` (then cancel them, which
loses nothing: their offsets are not committed); commit handled offsets; leave the group; close
the DLQ producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from orchestrator import faults
from orchestrator.kafka._dlq import DeadLetterPublisher
from orchestrator.kafka._errors import DeadLetter, KafkaEdgeError, LifecycleError, kafka_errors
from orchestrator.kafka._lifecycle import State
from orchestrator.kafka._records import ConsumedRecord
from orchestrator.lifecycle import AsyncLifecycle
from orchestrator.logs import get_logger

log = get_logger(__name__)

Handler = Callable[[ConsumedRecord], Awaitable[None]]
"""Processes one record and commits its effect in Postgres before returning."""


@dataclass
class ConsumerCounters:
    """Monotonic counters for metrics. `consumed` counts records handled (including dead-lettered)."""

    consumed: int = 0
    dead_lettered: int = 0
    handler_failures: int = 0
    commits: int = 0
    commit_failures: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter for a failing handler (and a failing DLQ publish)."""

    initial_s: float = 0.2
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1  # ± fraction, so many workers failing on one cause do not retry in lockstep

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))  # noqa: S311 - not crypto


@dataclass(eq=False)
class _Partition:
    """One assigned partition: its queue, its worker, and the next offset to commit."""

    tp: TopicPartition
    queue: deque[ConsumedRecord] = field(default_factory=deque)
    has_work: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    busy: bool = False
    stopping: bool = False
    paused: bool = False
    handled: int | None = None  # next offset to commit (last handled + 1)
    committed: int | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._consumer._on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class EventConsumer(AsyncLifecycle):
    """Consumer-group consumer that awaits `handler` per record and commits only handled offsets.

    Use `async with EventConsumer(...) as consumer:` or `start()`/`stop()`. `dlq_topics` maps a
    source topic to its dead letter topic, e.g. `{"crm.orders.v1": "crm.orders.v1.dlq"}`.
    `fault_kinds` names each topic's records for the offset-commit crash points (`faults.reach`),
    e.g. `{"crm.orders.v1": "crm"}`; a topic left out is named by itself.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        dlq_topics: Mapping[str, str],
        client_id: str = "provisioning-orchestrator",
        dead_letters: DeadLetterPublisher | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_records: int = 500,
        max_queued_per_partition: int = 1000,
        fetch_timeout_ms: int = 500,
        commit_interval_s: float = 0.2,
        stop_grace_s: float = 10.0,
        auto_offset_reset: str = "earliest",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        fault_kinds: Mapping[str, str] | None = None,
    ) -> None:
        if not topics:
            raise ValueError("topics must not be empty")
        self._bootstrap_servers = bootstrap_servers
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._dlq_topics = dict(dlq_topics)
        self._fault_kinds = dict(fault_kinds or {})
        self._client_id = client_id
        self._owns_dead_letters = dead_letters is None
        self._dead_letters = dead_letters or DeadLetterPublisher(
            bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-dlq"
        )
        self._retry = retry
        self._max_records = max_records
        self._max_queued = max_queued_per_partition
        self._fetch_timeout_ms = fetch_timeout_ms
        # Under load every getmany returns at once; committing before each one cost the broker an
        # OffsetCommit per few records. Offsets now trail by at most this much (stop and revocation
        # still commit at once); a crash redelivers those records and the inbox drops them.
        self._commit_interval_s = commit_interval_s
        self._stop_grace_s = stop_grace_s
        self._consumer_kwargs: dict[str, Any] = {
            "auto_offset_reset": auto_offset_reset,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._fetch_task: asyncio.Task[None] | None = None
        self._stop_fetching = asyncio.Event()
        self._fatal: BaseException | None = None
        self._state = State.NEW
        self.counters = ConsumerCounters()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    async def start(self) -> None:
        """Join the group and start fetching. Raises KafkaEdgeError when the broker is unreachable."""
        if self._state is not State.NEW:
            raise LifecycleError(f"EventConsumer cannot start from state {self._state.value}")
        self._state = State.STARTING
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            **self._consumer_kwargs,
        )
        try:
            with kafka_errors(f"starting the consumer of {self._topics}"):
                await consumer.start()
            consumer.subscribe(self._topics, listener=_Rebalance(self))
            if self._owns_dead_letters:
                await self._dead_letters.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._state = State.FAILED
            raise
        self._consumer = consumer
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name=f"kafka-fetch-{self._group_id}")
        self._state = State.RUNNING
        log.info("consumer_started", group_id=self._group_id, topics=self._topics)

    async def stop(self) -> None:
        """Stop fetching, finish in-flight records (within the grace period), commit, close.

        Idempotent. Re-raises (as KafkaEdgeError) a fatal error the fetch loop died of, so a
        service composing this in an exit stack learns about it.
        """
        if self._state in (State.NEW, State.STOPPED, State.STOPPING):
            self._state = State.STOPPED if self._state is State.NEW else self._state
            return
        self._state = State.STOPPING
        self._stop_fetching.set()
        self._signal_stop(list(self._partitions.values()))  # start no further record from now on
        if self._fetch_task is not None:
            # getmany returns within fetch_timeout_ms; a rebalance callback may add the grace period
            _, pending = await asyncio.wait(
                {self._fetch_task}, timeout=self._fetch_timeout_ms / 1000 + self._stop_grace_s + 5
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(self._fetch_task, return_exceptions=True)
        try:
            await self._release(list(self._partitions.values()))
        finally:
            await self._close()
            log.info("consumer_stopped", group_id=self._group_id, **vars(self.counters))
        if self._fatal is not None:
            raise KafkaEdgeError(f"consumer of {self._topics} failed: {self._fatal!r}") from self._fatal

    async def abort(self) -> None:
        """Die like a crashed process: cancel everything, commit nothing, close the connections.

        For crash tests and emergency exits. Records handled since the last commit are delivered
        again to whoever owns their partition next.
        """
        if self._state in (State.NEW, State.STOPPED):
            self._state = State.STOPPED
            return
        self._state = State.STOPPING
        tasks = [p.task for p in self._partitions.values() if p.task is not None]
        if self._fetch_task is not None:
            tasks.append(self._fetch_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._partitions.clear()
        await self._close()  # without commits: the offsets stay where they were

    async def _close(self) -> None:
        """Leave the group and close the connection (auto-commit is off, so this commits nothing),
        close a DLQ publisher of our own, and be STOPPED."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._owns_dead_letters:
            await self._dead_letters.stop()
        self._state = State.STOPPED

    async def wait(self) -> None:
        """Return when the fetch loop ends (after stop(), or because it failed)."""
        if self._fetch_task is not None:
            await asyncio.shield(self._fetch_task)

    def assignment(self) -> set[TopicPartition]:
        """Partitions currently owned by this member (empty before the first assignment)."""
        if self._consumer is None:
            return set()
        return set(self._consumer.assignment())

    # -- fetching --------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        attempt = 0
        loop = asyncio.get_running_loop()
        last_commit = 0.0
        try:
            while not self._stop_fetching.is_set():
                if loop.time() - last_commit >= self._commit_interval_s:
                    last_commit = loop.time()
                    await self._commit_handled()
                try:
                    batch = await consumer.getmany(
                        timeout_ms=self._fetch_timeout_ms, max_records=self._max_records
                    )
                except KafkaError as exc:
                    delay = self._retry.delay(attempt)
                    attempt += 1
                    log.warning("kafka_fetch_failed", error=repr(exc), retry_in_s=round(delay, 3))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop_fetching.wait(), delay)
                    continue
                attempt = 0
                if self._stop_fetching.is_set():
                    break  # records fetched during stop are simply not committed: they come back
                for tp, records in batch.items():
                    self._enqueue(tp, records)
        except Exception as exc:
            self._fatal = exc
            self._state = State.FAILED
            log.error("consumer_fetch_loop_failed", error=repr(exc), exc_info=True)
            raise

    def _enqueue(self, tp: TopicPartition, records: list[Any]) -> None:
        assert self._consumer is not None
        part = self._partitions.get(tp)
        if part is None or part.stopping:
            part = _Partition(tp=tp)
            self._partitions[tp] = part
        if part.task is None:
            part.task = asyncio.create_task(self._work(part), name=f"kafka-worker-{tp.topic}-{tp.partition}")
        part.queue.extend(ConsumedRecord.from_aiokafka(r) for r in records)
        part.has_work.set()
        if len(part.queue) >= self._max_queued and not part.paused:
            self._consumer.pause(tp)
            part.paused = True

    # -- handling --------------------------------------------------------------------------------

    async def _work(self, part: _Partition) -> None:
        """Handle one partition's records in order until told to stop."""
        while not part.stopping:
            if not part.queue:
                part.has_work.clear()
                await part.has_work.wait()
                continue
            record = part.queue[0]
            part.busy = True
            try:
                done = await self._handle(part, record)
            finally:
                part.busy = False
            if not done:
                return
            part.queue.popleft()
            part.handled = record.offset + 1
            if part.paused and len(part.queue) <= self._max_queued // 2 and self._consumer is not None:
                with contextlib.suppress(Exception):  # revoked meanwhile: nothing to resume
                    self._consumer.resume(part.tp)
                part.paused = False

    async def _handle(self, part: _Partition, record: ConsumedRecord) -> bool:
        """Run the handler (and the DLQ publish it may ask for) until it succeeds; False if the
        partition is being released before that happened."""
        attempt = 0
        while True:
            try:
                try:
                    await self._handler(record)
                except DeadLetter as dead:
                    await self._dead_letter(record, dead)
                    self.counters.dead_lettered += 1
                self.counters.consumed += 1
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.handler_failures += 1
                delay = self._retry.delay(attempt)
                attempt += 1
                log.error(
                    "record_handler_failed",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    error=repr(exc),
                    exc_info=not isinstance(exc, (KafkaEdgeError, DeadLetter)),
                )
            if part.stopping:
                return False
            part.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(part.wake.wait(), delay)
            if part.stopping:
                return False

    async def _dead_letter(self, record: ConsumedRecord, dead: DeadLetter) -> None:
        dlq_topic = self._dlq_topics.get(record.topic)
        if dlq_topic is None:
            log.error(
                "dead_letter_without_dlq",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=dead.reason,
                error=dead.error,
            )
            raise dead  # retried like any failure: never committed past, never silently dropped
        await self._dead_letters.publish(record, topic=dlq_topic, reason=dead.reason, error=dead.error)

    # -- committing and releasing ----------------------------------------------------------------

    async def _commit_handled(self, only: Sequence[_Partition] | None = None) -> None:
        """Commit every partition's handled offset that is ahead of its committed one.

        A refused commit (rebalance in progress, partition no longer ours) is not fatal: the
        records come back to the new owner and the inbox deduplicates them.
        """
        if self._consumer is None:
            return
        parts = list(self._partitions.values()) if only is None else list(only)
        by_tp = {p.tp: p for p in parts}
        offsets = {
            p.tp: p.handled
            for p in parts
            if p.handled is not None and (p.committed is None or p.handled > p.committed)
        }
        if not offsets:
            return
        carried = sorted({self._fault_kinds.get(tp.topic, tp.topic) for tp in offsets})
        for kind in carried:
            faults.reach("consumer.before_offset_commit", kind)
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            self.counters.commit_failures += 1
            log.warning(
                "offset_commit_failed",
                error=repr(exc),
                offsets={f"{tp.topic}/{tp.partition}": off for tp, off in offsets.items()},
                note="records after the last commit will be redelivered and deduplicated by the inbox",
            )
            return
        self.counters.commits += 1
        for tp, offset in offsets.items():
            by_tp[tp].committed = offset
        for kind in carried:
            faults.reach("consumer.after_offset_commit", kind)

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))
        await self._release([self._partitions[tp] for tp in revoked if tp in self._partitions])

    @staticmethod
    def _signal_stop(parts: list[_Partition]) -> None:
        """Workers finish the record in flight (a backoff wait ends at once) and start no other."""
        for part in parts:
            part.stopping = True
            part.wake.set()
            part.has_work.set()

    async def _release(self, parts: list[_Partition]) -> None:
        """Stop these workers after their in-flight record, commit what they handled, forget them.

        Records queued but not started are dropped: they are not committed, so the partition's next
        owner (maybe this process again) fetches them from the committed offset.
        """
        self._signal_stop(parts)
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._stop_grace_s)
            for task in pending:
                log.warning("handler_cancelled_after_grace", task=task.get_name(), grace_s=self._stop_grace_s)
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("partition_worker_failed", error=repr(result))
        await self._commit_handled(parts)
        for part in parts:
            if self._partitions.get(part.tp) is part:
                del self._partitions[part.tp]
