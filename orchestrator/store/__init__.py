"""Postgres: schema migrations (and, as the engine grows, the repositories over its tables)."""

from orchestrator.store.migrate import MIGRATIONS_DIR, Migration, MigrationReport, load_migrations, migrate
from orchestrator.store.pool import connect, open_pool

__all__ = [
    "MIGRATIONS_DIR",
    "Migration",
    "MigrationReport",
    "connect",
    "load_migrations",
    "migrate",
    "open_pool",
]
