"""The outbox relay: rows of the `outbox` table to Kafka, in order per key, at least once.

Every worker runs one, and every one publishes: no leader, so N workers on N machines add
publishing capacity and a dead worker costs no hand-over.

A round, in one transaction on the relay's own connection (`store.outbox.claim_outbox_batch`):

1. lock up to `batch_size` unpublished rows in id order, skipping rows another relay has locked
   (`FOR UPDATE SKIP LOCKED`), and keep those with no earlier unpublished row of their key outside
   this batch;
2. send them in id order with an idempotent producer (acks=all, in order per partition) and wait
   for the acks;
3. mark the acknowledged rows published (for each key, the acknowledged prefix of its rows) and
   commit, which releases the locks.

Per-key order. The Kafka key is the row's key (the CRM order); writers add a key's rows under that
order's row lock, so per key, ids follow commit order and no earlier row of a key commits after a
later one is visible. A relay sends a row only if every earlier unpublished row of its key, as its
statement sees them, is in its own batch and sent before it. An earlier row that another relay
holds is still unpublished (it is marked only in that relay's commit, after its acks), so the row
waits for a later round; one that another relay has just published and committed either shows as
published (its acks came first) or, to the statement's snapshot, as unpublished (the row waits once
more). So a key's rows reach Kafka in id order, whichever relays send them. Rows locked and made to
wait stay locked until the round commits: they are only delayed.

At least once. A relay that dies (SIGKILL, OOM, a fault point) loses its session; Postgres rolls
its round back at once and its rows are claimed by the next round of any relay, including rows it
sent but never marked: those go out again. A relay that pauses mid-round (SIGSTOP, a frozen host)
or whose host vanishes keeps its locks until the server ends its session: the session sets
`idle_in_transaction_session_timeout` to `ack_timeout_s` + 5 s, longer than any live round waits.
A paused relay that resumes may still deliver records it had in flight, after another relay has
re-sent them and later rows of their key: duplicates that consumers drop by the CloudEvents `id`.

Refusals. A row whose headers cannot be decoded stops its key (logged once per row per relay; the
lag gauge shows it) while other keys go on. A Kafka error (a send refused, an ack missing after
`ack_timeout_s`) ends the round: what was acknowledged is marked, the rest is tried again after a
backoff with a fresh producer.

Waking. No NOTIFY in data commits (migration 0005 dropped the trigger: NOTIFY holds a cluster-wide
lock from pre-commit to flush, serialising commits). In-process writers call `wake()` after they
commit (the worker does after every handled record and finished step); rows written elsewhere (an
operator command, another worker) are found by the poll every `poll_interval_s`. Under load rounds
start at most every `min_round_interval_s`, so one round takes many rows.

Lag. `lag` is read at most every `lag_interval_s` (it counts every unpublished row, too much work
for every round), and once more when the relay goes idle after rounds the last read did not see.

Failure handling. Postgres errors drop the connection and reconnect with capped backoff; Kafka
errors retry the round with backoff. Neither ends the relay: only `stop()` does.

The rows, their header format and every statement run here live in `orchestrator.store.outbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from orchestrator import faults
from orchestrator.kafka._errors import KafkaEdgeError, LifecycleError, kafka_errors
from orchestrator.kafka._lifecycle import State
from orchestrator.kafka._producer import IdempotentProducer
from orchestrator.lifecycle import AsyncLifecycle
from orchestrator.logs import get_logger
from orchestrator.store import (
    NO_LAG,
    OutboxFormatError,
    OutboxRow,
    claim_outbox_batch,
    connect,
    decode_outbox_headers,
    limit_lock_holding,
    mark_outbox_published,
    outbox_lag,
)

log = get_logger(__name__)

_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
HOLD_MARGIN_S = 5.0
"""A session idle inside a transaction this long past `ack_timeout_s` is ended by the server."""
_REFUSED_LOGGED_MAX = 10_000


class OutboxRelay(AsyncLifecycle):
    """Publishes the outbox alongside any number of other relays. `async with OutboxRelay(...):`."""

    def __init__(
        self,
        *,
        database_url: str,
        bootstrap_servers: str,
        client_id: str = "provisioning-orchestrator-outbox",
        batch_size: int = 500,
        poll_interval_s: float = 0.25,
        send_timeout_s: float = 30.0,
        ack_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        min_round_interval_s: float = 0.005,
        lag_interval_s: float = 1.0,
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
        self._send_timeout_s = send_timeout_s  # statements, producer start, stop
        self._ack_timeout_s = ack_timeout_s  # sends and acks of one round (row locks held meanwhile)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._min_round_interval_s = min_round_interval_s
        self._lag_interval_s = lag_interval_s
        self._lag_at: float | None = None
        self._rounds_since_lag = False  # rounds ran since the gauge was last read
        self._refused_logged: set[int] = set()
        self._state = State.NEW
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.published = 0
        self.rounds = 0
        self.lag = NO_LAG

    @property
    def state(self) -> State:
        return self._state

    async def start(self) -> None:
        """Start the background loop; it connects (and retries) by itself, so this never fails on
        an unreachable database or broker."""
        if self._state is not State.NEW:
            raise LifecycleError(f"OutboxRelay cannot start from state {self._state.value}")
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._state = State.RUNNING

    async def stop(self) -> None:
        """Finish the current round (its acks and commit), then close. Idempotent."""
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
        """Ask for a round now: in-process writers call this after committing outbox rows."""
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
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)
                if not conn.is_closed():
                    conn.terminate()

    async def _with_connection(self, conn: asyncpg.Connection) -> None:
        await limit_lock_holding(conn, self._ack_timeout_s + HOLD_MARGIN_S, timeout_s=self._send_timeout_s)

        def on_lost(*_: object) -> None:
            self._wake.set()

        # A session Postgres drops while we idle would otherwise go unnoticed until the next poll:
        # wake up, let the next query fail, and reconnect.
        conn.add_termination_listener(on_lost)
        log.info("outbox_relay_publishing")
        try:
            await self._publish(conn)
        finally:
            if not conn.is_closed():
                with contextlib.suppress(*_PG_ERRORS):
                    conn.remove_termination_listener(on_lost)

    async def _publish(self, conn: asyncpg.Connection) -> None:
        kafka_attempt = 0
        loop = asyncio.get_running_loop()
        last_round = 0.0
        while not self._stopping.is_set():
            pause = last_round + self._min_round_interval_s - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            last_round = loop.time()
            self._wake.clear()  # before reading: a commit during the round wakes the next
            try:
                # Started outside the round's transaction: a broker that is down costs a backoff,
                # not row locks held for the producer's start timeout.
                producer = await self._producer.ensure()
                full = await self._round(conn, producer)
                kafka_attempt = 0
            except KafkaEdgeError as exc:
                delay = self._backoff(kafka_attempt)
                kafka_attempt += 1
                log.warning("outbox_publish_failed", error=str(exc), retry_in_s=delay)
                await self._producer.reset()
                await self._refresh_lag(conn)
                await self._sleep(delay)
                continue
            self._rounds_since_lag = True
            await self._refresh_lag(conn)
            if full:
                continue  # more rows are waiting: no need to sleep
            await self._idle(conn)

    async def _idle(self, conn: asyncpg.Connection) -> None:
        """Sleep until woken or the poll is due; refresh a lag gauge left stale by the last rounds
        once it may be (so it settles while idle without a query per round)."""
        loop = asyncio.get_running_loop()
        poll_at = loop.time() + self._poll_interval_s
        while not (self._stopping.is_set() or self._wake.is_set()):
            now = loop.time()
            if now >= poll_at:
                return
            lag_at = self._lag_due() if self._rounds_since_lag else None
            if lag_at is not None and now >= lag_at:
                await self._refresh_lag(conn)
                continue
            await self._sleep(min(poll_at, lag_at if lag_at is not None else poll_at) - now, self._wake)

    def _lag_due(self) -> float:
        return float("-inf") if self._lag_at is None else self._lag_at + self._lag_interval_s

    async def _refresh_lag(self, conn: asyncpg.Connection) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._lag_due():
            self.lag = await outbox_lag(conn, timeout_s=self._send_timeout_s)
            self._lag_at = now
            self._rounds_since_lag = False

    async def _round(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> bool:
        """Publish one batch; True if it was full (more rows are likely waiting)."""
        async with conn.transaction():
            batch = await claim_outbox_batch(conn, self._batch_size, timeout_s=self._send_timeout_s)
            self.rounds += 1
            if not batch.rows:
                return False
            faults.reach("relay.before_publish", "status")
            acked, failure = await self._send(producer, batch.rows)
            if acked:
                faults.reach("relay.after_publish", "status")
                await mark_outbox_published(conn, acked, timeout_s=self._send_timeout_s)
        self.published += len(acked)
        if failure is not None:
            raise KafkaEdgeError(
                f"outbox round published {len(acked)} of {len(batch.rows)} rows: {failure!r}"
            ) from failure
        return len(batch.rows) == self._batch_size

    async def _send(
        self, producer: AIOKafkaProducer, rows: list[OutboxRow]
    ) -> tuple[list[int], BaseException | None]:
        """Send `rows` in order and wait for their acks (within `ack_timeout_s` in all); return the
        ids to mark published (per key, the acknowledged prefix) and the first Kafka failure."""
        deadline = asyncio.get_running_loop().time() + self._ack_timeout_s
        sent: list[tuple[OutboxRow, asyncio.Future[Any]]] = []
        stops: dict[bytes, int] = {}  # per key, the first row refused, unsent or unacknowledged
        failure: BaseException | None = None
        # One deadline for the whole loop, not a wait_for per row: wait_for wraps each send in a
        # task, so every row cost a turn of a busy event loop (seconds per 500-row round under load).
        try:
            async with asyncio.timeout_at(deadline):
                for row in rows:
                    if row.key in stops:
                        continue  # nothing of a key goes out after a row of it that did not: order holds
                    try:
                        headers = decode_outbox_headers(row.headers)
                    except (OutboxFormatError, ValueError, TypeError) as exc:
                        stops[row.key] = row.id
                        self._log_refused(row, exc)
                        continue
                    try:
                        with kafka_errors(f"publishing outbox row {row.id} to {row.topic}"):
                            future = await producer.send(row.topic, row.value, key=row.key, headers=headers)
                    except KafkaEdgeError as exc:
                        failure = exc
                        log.error("outbox_row_refused", id=row.id, topic=row.topic, error=str(exc))
                        break  # the producer is in trouble: nothing more this round
                    sent.append((row, future))
        except TimeoutError:  # the producer had no room for the rest within the deadline
            failure = failure or TimeoutError(f"could not send within {self._ack_timeout_s} s")
        futures = [future for _, future in sent]
        remaining = deadline - asyncio.get_running_loop().time()
        done, _ = await asyncio.wait(futures, timeout=max(remaining, 0.001)) if futures else (set(), set())
        for row, future in sent:
            if future in done and future.exception() is None:
                continue
            stops[row.key] = min(stops.get(row.key, row.id), row.id)
            if future in done:
                failure = failure or future.exception()
            else:
                future.cancel()
                failure = failure or TimeoutError(f"no ack within {self._ack_timeout_s} s")
        for future in futures:  # retrieve every outcome so none is reported as never retrieved
            if future.done() and not future.cancelled():
                future.exception()
        acked = [row.id for row, _ in sent if row.id < stops.get(row.key, row.id + 1)]
        return acked, failure

    def _log_refused(self, row: OutboxRow, exc: Exception) -> None:
        if row.id in self._refused_logged:
            return
        if len(self._refused_logged) >= _REFUSED_LOGGED_MAX:
            self._refused_logged.clear()
        self._refused_logged.add(row.id)
        log.error("outbox_row_refused", id=row.id, topic=row.topic, error=str(exc))
