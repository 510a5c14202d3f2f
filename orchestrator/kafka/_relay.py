"""The outbox relay: rows of the `outbox` table to Kafka, in id order, at least once.

Leadership. Per-key order needs a single publisher, so a relay publishes only while it holds a
session-level advisory lock (`OUTBOX_LOCK_KEY`) on its own dedicated connection. Standby
relays (other processes) retry every `lock_retry_interval_s`. The lock dies with its connection,
so a leader that crashes, hangs up or loses Postgres hands over to a standby without any lease
bookkeeping.

Waking. The leader LISTENs on channel `outbox`; migration 0002 adds a statement-level trigger
that NOTIFYs on every insert, so writers need not remember to. A fallback poll every
`poll_interval_s` covers a lost notification (e.g. while reconnecting).

Publishing. A round reads up to `batch_size` unpublished rows in id order, sends them all with an
idempotent producer (acks=all, in order per partition), waits for the acks, then sets
`published_at` on the longest acknowledged prefix. A row Kafka refuses stops the round at that
row: later rows are retried after it, never before, so a row Kafka refuses forever blocks the
relay (loudly: error logs and the lag gauge) instead of breaking per-key order.

At least once. A crash between the broker's ack and the UPDATE publishes those rows again on the
next round (also rows acked after a refused one). Consumers deduplicate on the CloudEvents `id`.

The rows, their header format and every statement run here live in `orchestrator.store.outbox`.

Failure handling. Postgres errors drop the connection (and with it the lock) and reconnect with
capped backoff; Kafka errors keep the lock and retry the round with backoff. Neither ends the
relay: only `stop()` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from orchestrator import faults
from orchestrator.kafka._errors import KafkaEdgeError, LifecycleError, kafka_errors
from orchestrator.kafka._lifecycle import State
from orchestrator.kafka._producer import IdempotentProducer
from orchestrator.lifecycle import AsyncLifecycle
from orchestrator.logs import get_logger
from orchestrator.store import (
    NO_LAG,
    OUTBOX_LOCK_KEY,
    OutboxFormatError,
    OutboxLag,
    connect,
    decode_outbox_headers,
    listen_outbox,
    mark_outbox_published,
    outbox_lag,
    read_outbox_batch,
    try_lock_outbox,
    unlisten_outbox,
    unlock_outbox,
)

log = get_logger(__name__)

_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class OutboxRelay(AsyncLifecycle):
    """Publishes the outbox while it holds the leader lock. `async with OutboxRelay(...):`."""

    def __init__(
        self,
        *,
        database_url: str,
        bootstrap_servers: str,
        client_id: str = "provisioning-orchestrator-outbox",
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        lock_retry_interval_s: float = 2.0,
        send_timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        lock_key: int = OUTBOX_LOCK_KEY,
        min_round_interval_s: float = 0.005,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._database_url = database_url
        self._producer = IdempotentProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            start_timeout_s=send_timeout_s,
            linger_ms=5,  # a round sends hundreds of records at once: let them share batches
        )
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lock_retry_interval_s = lock_retry_interval_s
        self._send_timeout_s = send_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._lock_key = lock_key
        # Every committed insert NOTIFYs; under load, starting rounds at most this often lets one
        # round take many rows (two commits) instead of a few each.
        self._min_round_interval_s = min_round_interval_s
        self._state = State.NEW
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._is_leader = False
        self.published = 0
        self.rounds = 0
        self.lag = NO_LAG

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_leader(self) -> bool:
        """True while this relay holds the lock and listens for notifications."""
        return self._is_leader

    async def start(self) -> None:
        """Start the background loop; it connects (and retries) by itself, so this never fails on
        an unreachable database or broker."""
        if self._state is not State.NEW:
            raise LifecycleError(f"OutboxRelay cannot start from state {self._state.value}")
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._state = State.RUNNING

    async def stop(self) -> None:
        """Finish the current round (its acks and UPDATE), release the lock, close. Idempotent."""
        if self._state in (State.NEW, State.STOPPED, State.STOPPING):
            self._state = State.STOPPED if self._state is State.NEW else self._state
            return
        self._state = State.STOPPING
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            _, pending = await asyncio.wait({self._task}, timeout=self._send_timeout_s + 5)
            for task in pending:
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._producer.close()
        self._state = State.STOPPED

    def wake(self) -> None:
        """Ask for a round now (in-process writers may call this; NOTIFY does it for everyone)."""
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep unless stopped (or `event` fires) first."""
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    def _backoff(self, attempt: int) -> float:
        return float(min(self._backoff_max_s, self._backoff_initial_s * 2 ** min(attempt, 32)))

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                conn = await asyncio.wait_for(connect(self._database_url), 10)
            except Exception as exc:  # any: see below
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("outbox_db_connect_failed", error=repr(exc), retry_in_s=delay)
                await self._sleep(delay)
                continue
            try:
                await self._with_connection(conn)
                attempt = 0
            except Exception as exc:  # any (asyncpg raises more than _PG_ERRORS when Postgres dies
                # mid-query): only stop() may end the relay, or the outbox silently stops draining
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("outbox_db_connection_lost", error=repr(exc), retry_in_s=delay)
                await self._sleep(delay)
            finally:
                self._is_leader = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
                if not conn.is_closed():
                    conn.terminate()

    async def _with_connection(self, conn: asyncpg.Connection) -> None:
        # Standby: try the lock, refreshing the lag gauge, until we lead or stop.
        while not self._stopping.is_set():
            if await try_lock_outbox(conn, self._lock_key, timeout_s=self._send_timeout_s):
                break
            self.lag = await outbox_lag(conn, timeout_s=self._send_timeout_s)
            await self._sleep(self._lock_retry_interval_s)
        else:
            return

        def on_notify(*_: object) -> None:
            self._wake.set()

        # A session Postgres drops while we idle would otherwise go unnoticed until the next poll:
        # wake up, let the next query fail, and reconnect.
        conn.add_termination_listener(on_notify)
        await listen_outbox(conn, on_notify, timeout_s=self._send_timeout_s)
        self._is_leader = True
        log.info("outbox_relay_leading")
        try:
            await self._lead(conn)
        finally:
            self._is_leader = False
            if not conn.is_closed():
                with contextlib.suppress(*_PG_ERRORS):
                    conn.remove_termination_listener(on_notify)
                    await unlisten_outbox(conn, on_notify, timeout_s=self._send_timeout_s)
                    await unlock_outbox(conn, self._lock_key, timeout_s=self._send_timeout_s)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        kafka_attempt = 0
        loop = asyncio.get_running_loop()
        last_round = 0.0
        while not self._stopping.is_set():
            pause = last_round + self._min_round_interval_s - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            last_round = loop.time()
            self._wake.clear()  # before reading: an insert committed during the round wakes the next
            try:
                sent = await self._round(conn)
                kafka_attempt = 0
            except KafkaEdgeError as exc:
                delay = self._backoff(kafka_attempt)
                kafka_attempt += 1
                log.warning("outbox_publish_failed", error=str(exc), retry_in_s=delay)
                await self._producer.reset()
                await self._sleep(delay)
                continue
            if sent == self._batch_size:
                continue  # more rows are waiting: no need to sleep
            await self._sleep(self._poll_interval_s, self._wake)

    async def _round(self, conn: asyncpg.Connection) -> int:
        """Publish one batch; return how many rows it held."""
        batch = await read_outbox_batch(conn, self._batch_size, timeout_s=self._send_timeout_s)
        rows = batch.rows
        self.rounds += 1
        if not rows:
            self.lag = NO_LAG
            return 0
        producer = await self._producer.ensure()
        faults.reach("relay.before_publish", "status")
        futures: list[asyncio.Future[Any]] = []
        refused: Exception | None = None
        for row in rows:
            try:
                headers = decode_outbox_headers(row.headers)
                with kafka_errors(f"publishing outbox row {row.id} to {row.topic}"):
                    futures.append(await producer.send(row.topic, row.value, key=row.key, headers=headers))
            except (KafkaEdgeError, OutboxFormatError, ValueError, TypeError) as exc:
                refused = exc
                log.error("outbox_row_refused", id=row.id, topic=row.topic, error=str(exc))
                break  # nothing after a refused row goes out before it: per-key order holds
        done, _ = await asyncio.wait(futures, timeout=self._send_timeout_s) if futures else (set(), set())
        acked: list[int] = []
        first_failure: BaseException | None = refused
        for row, future in zip(rows, futures, strict=False):
            if future in done and future.exception() is None:
                acked.append(row.id)
                continue
            if future in done:
                first_failure = future.exception()
            else:
                future.cancel()
                first_failure = first_failure or TimeoutError(f"no ack within {self._send_timeout_s} s")
            break  # the longest acknowledged prefix only
        for future in futures:  # retrieve every outcome so none is reported as never retrieved
            if future.done() and not future.cancelled():
                future.exception()
        if acked:
            faults.reach("relay.after_publish", "status")
            await mark_outbox_published(conn, acked, timeout_s=self._send_timeout_s)
            self.published += len(acked)
        left = batch.lag.unpublished - len(acked)  # as of the batch read; later inserts count next round
        self.lag = OutboxLag(unpublished=left, oldest_age_s=batch.lag.oldest_age_s if left else 0.0)
        if first_failure is not None:
            raise KafkaEdgeError(
                f"outbox round published {len(acked)} of {len(rows)} rows: {first_failure!r}"
            ) from first_failure
        return len(rows)
