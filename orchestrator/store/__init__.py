"""Postgres: the only place SQL lives. One module per thing kept: `workflows` (orders and their
line item workflows, locks, transitions), `timers`, `inbox`, `outbox`, `provider_calls`,
`read_models` and `audit` (for operators), `migrate`, and the pool. `rows` holds the typed rows."""

from orchestrator.store.inbox import Delivery
from orchestrator.store.migrate import MIGRATIONS_DIR, Migration, MigrationReport, load_migrations, migrate
from orchestrator.store.outbox import (
    NO_LAG,
    OutboxBatch,
    OutboxFormatError,
    OutboxLag,
    OutboxRow,
    claim_outbox_batch,
    decode_outbox_headers,
    encode_outbox_headers,
    limit_lock_holding,
    mark_outbox_published,
    outbox_lag,
)
from orchestrator.store.pool import connect, open_pool

__all__ = [
    "MIGRATIONS_DIR",
    "NO_LAG",
    "Delivery",
    "Migration",
    "MigrationReport",
    "OutboxBatch",
    "OutboxFormatError",
    "OutboxLag",
    "OutboxRow",
    "claim_outbox_batch",
    "connect",
    "decode_outbox_headers",
    "encode_outbox_headers",
    "limit_lock_holding",
    "load_migrations",
    "mark_outbox_published",
    "migrate",
    "open_pool",
    "outbox_lag",
]
