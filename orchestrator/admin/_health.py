"""Readiness: can this process reach Postgres, Kafka and the provider right now?

Each check is a small coroutine with a deadline; `/readyz` answers 200 only when all pass, and
says which failed and why (never with a secret: the errors are our own messages).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from orchestrator.ops import ProviderReader, probe_provider
from orchestrator.store import read_models

Check = Callable[[], Awaitable[None]]


async def run_checks(checks: Mapping[str, Check], *, timeout_s: float = 5.0) -> tuple[bool, dict[str, Any]]:
    async def one(check: Check) -> dict[str, Any]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await check()
        except Exception as exc:  # a probe reports any failure as "not ready"
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"ok": True, "latency_ms": int((time.monotonic() - started) * 1000)}

    names = list(checks)
    results = await asyncio.gather(*(one(checks[n]) for n in names))
    report = dict(zip(names, results, strict=True))
    return all(r["ok"] for r in results), report


def postgres_check(pool: asyncpg.Pool) -> Check:
    async def check() -> None:
        await read_models.ping(pool)

    return check


def kafka_check(bootstrap_servers: str) -> Check:
    async def check() -> None:
        from aiokafka import AIOKafkaClient  # noqa: PLC0415

        client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=4000)
        try:
            await client.bootstrap()  # a metadata request: the broker answers, not just a TCP accept
        finally:
            await client.close()

    return check


def provider_check(reader: ProviderReader) -> Check:
    async def check() -> None:
        await probe_provider(reader)

    return check
