"""Postgres: schema migrations (and, as the engine grows, the repositories over its tables)."""

from orchestrator.store.migrate import MIGRATIONS_DIR, Migration, MigrationReport, load_migrations, migrate

__all__ = ["MIGRATIONS_DIR", "Migration", "MigrationReport", "load_migrations", "migrate"]
