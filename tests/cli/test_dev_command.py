"""`orchestrator dev --info-file`: the contract other teams' tooling relies on."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def _session_members(sid: int) -> list[int]:
    """Live processes in session `sid` (zombies already reaped don't count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        # fields[0] is the state, fields[3] the session id (fields 3 and 6 of proc(5))
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


async def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, str]:
    for _ in range(1200):
        if proc.poll() is not None:
            raise AssertionError(f"dev exited early ({proc.returncode}):\n{log.read_text()}")
        if path.exists():
            data: dict[str, str] = json.loads(path.read_text())
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"no info file after 120 s:\n{log.read_text()}")


async def test_dev_writes_info_file_serves_and_stops_cleanly(tmp_path: Path) -> None:
    info_path = tmp_path / "info.json"
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "dev", "--info-file", str(info_path)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        info = await _wait_for_file(info_path, proc, log)
        assert {"kafka_bootstrap", "database_url"} <= set(info)

        producer = AIOKafkaProducer(bootstrap_servers=info["kafka_bootstrap"], enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait("dev-contract", b"hello", key=b"k1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "dev-contract", bootstrap_servers=info["kafka_bootstrap"], auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
        assert (record.key, record.value) == (b"k1", b"hello")

        conn = await asyncpg.connect(info["database_url"])
        try:
            tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        assert tables >= 9  # migrated: the engine's tables plus schema_migrations

        assert len(_session_members(proc.pid)) >= 3  # us, the broker and the database server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        for _ in range(100):
            if not _session_members(proc.pid):
                break
            await asyncio.sleep(0.1)
        assert _session_members(proc.pid) == [], "processes left behind after SIGTERM"
        assert not info_path.exists(), "a stale info file would point tools at a dead stack"
        assert "stopped." in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
