"""Ordered plain-SQL migrations with a version table.

Files are `migrations/NNNN_name.sql`. Each is applied in its own transaction and recorded with a
SHA-256 of its text. The whole run holds a Postgres advisory lock, so two processes starting at
once apply each migration exactly once. An applied file that has since changed is refused: the
database no longer matches what the file says, and silently carrying on would hide that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from orchestrator.errors import MigrationError, StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any constant works; it only has to be the same for every process of this service.
_ADVISORY_LOCK_KEY = 0x6F72636865737472  # "orchestr"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: list[int]
    already_applied: list[int]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}")
        found[version] = Migration(version=version, name=match.group(2), sql=path.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(
    database_url: str,
    *,
    directory: Path = MIGRATIONS_DIR,
    on_apply: Callable[[Migration], None] | None = None,
) -> MigrationReport:
    """Apply pending migrations; return which were applied now and which already were."""
    migrations = load_migrations(directory)
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database to migrate: {exc}") from exc
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            return await _migrate_locked(conn, migrations, on_apply)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def _migrate_locked(
    conn: asyncpg.Connection, migrations: list[Migration], on_apply: Callable[[Migration], None] | None
) -> MigrationReport:
    await conn.execute(_VERSION_TABLE)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    recorded = {row["version"]: row for row in rows}
    on_disk = {m.version: m for m in migrations}
    missing = sorted(set(recorded) - set(on_disk))
    if missing:
        raise MigrationError(
            f"the database has migration(s) {', '.join(f'{v:04d}' for v in missing)} that are not on disk: "
            "this code is older than the database"
        )
    applied: list[int] = []
    already: list[int] = []
    for migration in migrations:
        row = recorded.get(migration.version)
        if row is not None:
            if row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name}.sql was edited after it was applied "
                    f"(recorded checksum {row['checksum'][:12]}…, file {migration.checksum[:12]}…); "
                    "add a new migration instead of changing an applied one"
                )
            already.append(migration.version)
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )  # fmt: skip
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql failed and was rolled back: {exc}"
            ) from exc
        applied.append(migration.version)
        if on_apply is not None:
            on_apply(migration)
    return MigrationReport(applied=applied, already_applied=already)
