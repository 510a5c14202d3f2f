"""Postgres: the only place SQL lives. One module per thing kept: `workflows` (orders and their
line item workflows, locks, transitions), `timers`, `inbox`, `outbox`, `provider_calls`,
`read_models` and `audit` (for operators), `migrate`, and the pool. `rows` holds the typed rows."""

from orchestrator.store.inbox import Delivery
from orchestrator.store.migrate import MIGRATIONS_DIR, Migration, MigrationReport, load_migrations, migrate
from orchestrator.store.outbox import (
    NO_LAG,
    OUTBOX_CHANNEL,
    OUTBOX_LOCK_KEY,
    OutboxBatch,
    OutboxFormatError,
    OutboxLag,
    OutboxListener,
    OutboxRow,
    decode_outbox_headers,
    encode_outbox_headers,
    listen_outbox,
    mark_outbox_published,
    outbox_lag,
    read_outbox_batch,
    try_lock_outbox,
    unlisten_outbox,
    unlock_outbox,
)
from orchestrator.store.pool import connect, open_pool

__all__ = [
    "MIGRATIONS_DIR",
    "NO_LAG",
    "OUTBOX_CHANNEL",
    "OUTBOX_LOCK_KEY",
    "Delivery",
    "Migration",
    "MigrationReport",
    "OutboxBatch",
    "OutboxFormatError",
    "OutboxLag",
    "OutboxListener",
    "OutboxRow",
    "connect",
    "decode_outbox_headers",
    "encode_outbox_headers",
    "listen_outbox",
    "load_migrations",
    "mark_outbox_published",
    "migrate",
    "open_pool",
    "outbox_lag",
    "read_outbox_batch",
    "try_lock_outbox",
    "unlisten_outbox",
    "unlock_outbox",
]
