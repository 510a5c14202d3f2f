"""The composition root's lifecycle, on the real stack: `run()` serves until `shutdown()`, which
another task (a signal handler) may call; a worker starts once."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import StatusEvents, crm_event, order_submitted, publish, subscription


async def test_run_serves_until_shutdown_and_a_worker_starts_once(
    settings: Settings, status: StatusEvents
) -> None:
    worker = Worker(settings, admin_token="lifecycle-token", admin_port=0)
    running = asyncio.create_task(worker.run())
    await publish(
        settings, "o-life", crm_event("crm.order.submitted", order_submitted("o-life", subscription("li-1")))
    )
    await status.until_settled("o-life", 1)
    assert status.states("o-life", "li-1")[-1] == "activated"
    assert worker.admin_url is not None, "an admin token serves the admin API"
    assert worker.counters().consumed >= 1
    with pytest.raises(OrchestratorError, match="starts once"):
        await worker.start()
    assert not running.done()

    await asyncio.gather(worker.shutdown(), worker.shutdown())  # twice at once: one shutdown
    await asyncio.wait_for(running, timeout=30)
    assert running.exception() is None
