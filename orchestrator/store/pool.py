"""The asyncpg pool with our codecs: jsonb in and out as Python objects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from orchestrator import fastjson
from orchestrator.errors import StoreError


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=fastjson.dumps, decoder=fastjson.loads, schema="pg_catalog"
        )


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (for LISTEN and advisory locks)."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (an extra round trip on every release:
    5% of the worker's CPU under load). asyncpg still rolls back an open transaction and drops
    listeners before calling this; pooled connections never LISTEN, take session advisory locks
    or SET anything (those live on dedicated connections from `connect`), so nothing else leaks."""


@contextlib.asynccontextmanager
async def open_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            database_url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()
