"""Jeopardy end to end (real Kafka, real Postgres, the sandbox over HTTP): a port stuck in progress
and an activation whose date passed are reported on the status topic as
`provisioning.line_item.jeopardy` (raised), seen by the admin API's `in_jeopardy` filter and the
`orchestrator_workflows_in_jeopardy` metric, and cleared by the next milestone, in the line
item's one sequence.

The worker here has thresholds of seconds (`ORCHESTRATOR_JEOPARDY__*`); the waits are bounded
waits for behaviour, never assertions on speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import JeopardySettings, Settings
from orchestrator.worker import Worker
from tests.e2e.support import (
    StatusEvents,
    crm_event,
    effects,
    order_submitted,
    porting,
    publish,
    subscription,
)

JEOPARDY = "provisioning.line_item.jeopardy"
STATE_CHANGED = "provisioning.line_item.state_changed"
ADMIN_TOKEN = "jeopardy-admin-token"
PORT_STUCK_AFTER_S = 2.0
ACTIVATION_LATE_AFTER_S = 1.0


@pytest.fixture
async def admin_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker with jeopardy thresholds of seconds, serving the admin API."""
    quick = settings.model_copy(
        update={
            "jeopardy": JeopardySettings(
                port_stuck_after_s=PORT_STUCK_AFTER_S, activation_late_after_s=ACTIVATION_LATE_AFTER_S
            )
        }
    )
    async with Worker(quick, admin_token=ADMIN_TOKEN, admin_port=0) as running:
        yield running


def _item_events(status: StatusEvents, order_id: str) -> list[dict[str, Any]]:
    """Every event of the order's line item, in the order they were published."""
    return [e for e in status.events(order_id) if e["data"].get("lineItemId")]


def _jeopardy(status: StatusEvents, order_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in _item_events(status, order_id) if e["type"] == JEOPARDY]


async def _until_jeopardy(status: StatusEvents, order_id: str, count: int) -> list[dict[str, Any]]:
    await status.wait_for(
        lambda: len(_jeopardy(status, order_id)) >= count,
        timeout_s=60,
        what=f"{count} jeopardy event(s) of {order_id}: {_jeopardy(status, order_id)}",
    )
    return _jeopardy(status, order_id)


def _check_cleared_by_activation(status: StatusEvents, order_id: str, state: str) -> None:
    """Raised once and cleared once, in `state`; the clearing comes just before the activation;
    the line item's sequence is gap-free over all its event types."""
    events = _item_events(status, order_id)
    sequences = [e["data"]["sequence"] for e in events]
    assert sequences == list(range(1, len(events) + 1)), sequences
    raised, cleared = _jeopardy(status, order_id)
    assert (raised["status"], cleared["status"]) == ("raised", "cleared")
    assert raised["state"] == cleared["state"] == state
    assert (cleared["since"], cleared["expectedBy"], cleared["reason"]) == (
        raised["since"],
        raised["expectedBy"],
        raised["reason"],
    )
    activated = events[-1]
    assert (activated["type"], activated["data"]["state"]) == (STATE_CHANGED, "activated")
    assert events[-2]["type"] == JEOPARDY
    assert events[-2]["data"]["status"] == "cleared"
    assert cleared["sequence"] == activated["data"]["sequence"] - 1


async def _admin_view(worker: Worker) -> tuple[list[str], str]:
    """The line items the API lists as in jeopardy, and the metrics text."""
    assert worker.admin_url is not None
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=worker.admin_url, headers=headers) as http:
        listed = await http.get("/api/v1/workflows", params={"in_jeopardy": "true"})
        listed.raise_for_status()
        metrics = await http.get("/metrics")
        metrics.raise_for_status()
    return [w["line_item_id"] for w in listed.json()["workflows"]], metrics.text


def _gauge(metrics: str, reason: str) -> float:
    prefix = f'orchestrator_workflows_in_jeopardy{{reason="{reason}"}} '
    found = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert found, f"no {prefix!r} in /metrics"
    return float(found[0].removeprefix(prefix))


async def test_a_stuck_port_is_raised_then_cleared_by_its_activation(
    settings: Settings, admin_worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    ported = "+15551239901"
    await control.port_plan(ported, outcome="STUCK")
    item = subscription("li-stuck", msisdn=ported, porting=porting())
    await publish(settings, "o-stuck", crm_event("crm.order.submitted", order_submitted("o-stuck", item)))

    (raised,) = await _until_jeopardy(status, "o-stuck", 1)
    assert (raised["status"], raised["reason"], raised["state"]) == (
        "raised",
        "port_stuck",
        "porting_pending",
    )
    since, expected_by = datetime.fromisoformat(raised["since"]), datetime.fromisoformat(raised["expectedBy"])
    assert expected_by - since == timedelta(seconds=PORT_STUCK_AFTER_S)
    assert since <= expected_by <= datetime.fromisoformat(raised["occurredAt"])
    porting_entered = next(
        e["data"] for e in _item_events(status, "o-stuck") if e["data"].get("state") == "porting_pending"
    )
    assert since == datetime.fromisoformat(porting_entered["occurredAt"]), (
        "since: when the port was requested"
    )

    # While it is in jeopardy, the API's filter and the metric see it; bad filter input is a 4xx.
    listed, metrics = await _admin_view(admin_worker)
    assert listed == ["li-stuck"]
    assert _gauge(metrics, "port_stuck") == 1
    assert _gauge(metrics, "activation_late") == 0
    assert admin_worker.admin_url is not None
    async with httpx.AsyncClient(
        base_url=admin_worker.admin_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as http:
        refused = await http.get("/api/v1/workflows", params={"in_jeopardy": "maybe"})
    assert refused.status_code == 422
    assert "in_jeopardy" in refused.text

    # The donor lets go: the port completes, jeopardy is cleared, then the item activates.
    await control.port_plan(ported, outcome="COMPLETED", delay_s=0.2)
    await status.until_settled("o-stuck", 1, timeout_s=60)
    assert status.states("o-stuck", "li-stuck") == [
        "received",
        "awaiting_submission",
        "submitted",
        "porting_pending",
        "activated",
    ]
    _check_cleared_by_activation(status, "o-stuck", "porting_pending")
    listed, metrics = await _admin_view(admin_worker)
    assert listed == []
    assert _gauge(metrics, "port_stuck") == 0


async def test_a_late_activation_is_raised_then_cleared_when_the_provider_activates(
    settings: Settings, admin_worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    # The provider misses activation dates. The date is today (the worker's clock is real time),
    # so it began at 00:00 UTC, more than the threshold ago.
    await control.scenario(activationLate=True)
    today = datetime.now(UTC).date()
    item = subscription("li-late", scheduleActivationAt=today.isoformat())
    await publish(settings, "o-late", crm_event("crm.order.submitted", order_submitted("o-late", item)))

    (raised,) = await _until_jeopardy(status, "o-late", 1)
    assert (raised["status"], raised["reason"], raised["state"]) == ("raised", "activation_late", "submitted")
    since = datetime.fromisoformat(raised["since"])
    assert since == datetime.combine(today, datetime.min.time(), tzinfo=UTC)
    assert datetime.fromisoformat(raised["expectedBy"]) == since + timedelta(seconds=ACTIVATION_LATE_AFTER_S)
    for _ in range(100):  # the provider's order may still be processing: bounded wait for its miss
        if effects(await control.ledger(kind="effect"), "activation.late"):
            break
        await asyncio.sleep(0.1)
    assert effects(await control.ledger(kind="effect"), "activation.late"), "the provider missed the date"
    assert not effects(await control.ledger(kind="effect"), "subscription.activated")

    listed, metrics = await _admin_view(admin_worker)
    assert listed == ["li-late"]
    assert _gauge(metrics, "activation_late") == 1

    # The provider catches up: cleared, then activated.
    await control.scenario(activationLate=False)
    await status.until_settled("o-late", 1, timeout_s=60)
    assert status.states("o-late", "li-late")[-2:] == ["submitted", "activated"]
    _check_cleared_by_activation(status, "o-late", "submitted")
    assert len(effects(await control.ledger(kind="effect"), "subscription.activated")) == 1
    listed, metrics = await _admin_view(admin_worker)
    assert listed == []
    assert _gauge(metrics, "activation_late") == 0
