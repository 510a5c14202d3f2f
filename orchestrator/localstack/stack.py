"""The whole local stack in one object: Kafka and Postgres today, more parts as they arrive.

Used by the pytest session fixtures, the demo, the benchmarks and `orchestrator dev`, so all four
run against exactly the same real services.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.localstack.kafka import LocalKafka
from orchestrator.localstack.postgres import LocalPostgres


@dataclass(frozen=True)
class StackInfo:
    """What other tools need to reach the stack. The key names are a contract with other teams'
    tooling (`orchestrator dev --info-file`): add keys, never rename them."""

    kafka_bootstrap: str
    database_url: str
    sandbox_url: str | None = None
    sandbox_api_key: str | None = None
    webhook_url: str | None = None
    admin_url: str | None = None
    admin_token: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=2, sort_keys=True)

    def write(self, path: Path) -> None:
        """Write atomically: a reader polling for the file never sees half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".info-", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            out.write(self.to_json() + "\n")
        Path(tmp).replace(path)


@dataclass
class LocalStack:
    """Running services. `postgres` is None when an external DATABASE_URL was given."""

    kafka: LocalKafka
    postgres: LocalPostgres | None
    database_url: str
    run_dir: Path

    @property
    def info(self) -> StackInfo:
        return StackInfo(kafka_bootstrap=self.kafka.bootstrap_servers, database_url=self.database_url)


@contextlib.asynccontextmanager
async def local_stack(
    *,
    run_dir: Path | None = None,
    external_database_url: str | None = None,
    kafka_partitions: int = 3,
) -> AsyncIterator[LocalStack]:
    """Start Kafka and (unless an external URL is given) Postgres; stop both on exit, Kafka last
    so that whatever the caller runs on top can still flush to it while Postgres goes away."""
    base = run_dir or Path(tempfile.mkdtemp(prefix="orchestrator-stack-"))
    async with contextlib.AsyncExitStack() as stack:
        kafka = await stack.enter_async_context(
            LocalKafka(run_dir=base / "kafka", partitions=kafka_partitions)
        )
        postgres: LocalPostgres | None = None
        if external_database_url:
            database_url = external_database_url
        else:
            postgres = await stack.enter_async_context(LocalPostgres(run_dir=base / "postgres"))
            database_url = postgres.url
        yield LocalStack(kafka=kafka, postgres=postgres, database_url=database_url, run_dir=base)
