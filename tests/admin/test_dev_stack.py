"""`orchestrator dev` serves the admin API and console and writes `admin_url` and `admin_token`
into its info file (the contract other teams' tooling reads)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.cli.test_dev_command import _wait_for_file


async def test_dev_serves_the_admin_app_and_writes_its_url_and_token(tmp_path: Path) -> None:
    info_path = tmp_path / "info.json"
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "dev", "--info-file", str(info_path)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        info = await _wait_for_file(info_path, proc, log)
        assert info["admin_url"].startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=info["admin_url"], timeout=30) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/api/v1/workflows")).status_code == 401
            headers = {"Authorization": f"Bearer {info['admin_token']}"}
            listed = await http.get("/api/v1/workflows", headers=headers)
            assert listed.status_code == 200
            assert listed.json()["total"] == 0
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            console = await http.get(f"/console?token={info['admin_token']}", follow_redirects=True)
            assert "Workflows" in console.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
