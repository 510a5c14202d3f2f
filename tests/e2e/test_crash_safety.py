"""A worker process killed with SIGKILL in the middle of a batch loses nothing and duplicates
nothing: a new process finishes every line item, the status stream has no gaps, and the provider
applied each effect once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings, settings_env
from tests.e2e.support import (
    StatusEvents,
    crm_event,
    order_submitted,
    porting,
    publish,
    subscription,
)


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "ORCHESTRATOR_LOG_LEVEL": "WARNING"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--no-migrate"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigkill_mid_batch_then_restart_finishes_everything_once(
    settings: Settings, status: StatusEvents, control: SandboxControl, tmp_path: Path
) -> None:
    orders = 12
    log = tmp_path / "worker.log"
    first = _start_worker(settings, log)
    try:
        for n in range(orders):
            order_id = f"o-crash-{n}"
            items = [subscription("li-a"), subscription("li-b", msisdn=f"+1555124{n:04d}", porting=porting())]
            await publish(
                settings, order_id, crm_event("crm.order.submitted", order_submitted(order_id, *items))
            )
        # Kill it while work is in flight: some line items have moved, most have not finished.
        await status.wait_for(lambda: len(status.records) >= orders, timeout_s=60, what="the batch to start")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
        settled_before = sum(
            1
            for n in range(orders)
            for events in status.line_items(f"o-crash-{n}").values()
            if events[-1]["state"] == "activated"
        )
        assert settled_before < 2 * orders, "the kill came too late to prove anything"
    finally:
        if first.poll() is None:
            first.kill()

    second = _start_worker(settings, log)
    try:
        for n in range(orders):
            await status.until_settled(f"o-crash-{n}", 2, timeout_s=120)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
    assert second.returncode == 0, log.read_text()[-3000:]

    for n in range(orders):
        order_id = f"o-crash-{n}"
        unique: dict[str, dict[str, object]] = {e["id"]: e for e in status.events(order_id)}
        per_item: dict[str, list[int]] = defaultdict(list)
        for event in unique.values():
            if event["type"] == "provisioning.line_item.state_changed":
                data = event["data"]
                assert isinstance(data, dict)
                per_item[data["lineItemId"]].append(data["sequence"])
        for line_item, sequences in per_item.items():
            assert sorted(sequences) == list(range(1, len(sequences) + 1)), (order_id, line_item, sequences)
        for line_item in ("li-a", "li-b"):
            final = status.line_items(order_id)[line_item][-1]
            assert final["state"] == "activated", (order_id, line_item, final["error"])

    ledger = await control.ledger(kind="effect")
    created = Counter(e["data"].get("orderId") for e in ledger if e["effect"] == "subscription.created")
    assert sum(created.values()) == 2 * orders  # one subscription per line item, none twice
    assert len([e for e in ledger if e["effect"] == "order.created"]) == orders
    assert len([e for e in ledger if e["effect"] == "order.submitted"]) == orders
    keyed = Counter((e["effect"], e["idempotencyKey"]) for e in ledger if e.get("idempotencyKey"))
    assert [k for k, n in keyed.items() if n > 1] == []
