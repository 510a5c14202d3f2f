"""A CRM change that lands while a provider call is in flight: the call's outcome is kept, the step
is planned again from the new state, and what the call established is not forgotten. Seen in the
Postgres-restart reliability test: an amendment during `add_item` made the next step add the
item again (the provider refused: "already exists") instead of updating it; a cancellation in the
same window would have left the added item at the provider.

The step runner against a real database and the real sandbox, whose latency fault holds the call
open while the intake applies the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

from orchestrator.connect import PreparedRequest
from orchestrator.engine import CrmIntake, StepRunner, SystemClock
from orchestrator.engine._calls import send
from orchestrator.kafka import ConsumedRecord
from orchestrator.sandbox import SandboxControl
from orchestrator.worker import crm_handler
from tests.e2e.support import STRUCTURED, crm_event, order_submitted, subscription
from tests.engine.conftest import Provider

_offsets = itertools.count()


async def _consume(intake: CrmIntake, order_id: str, event_type: str, data: dict[str, Any]) -> None:
    await crm_handler(intake)(
        ConsumedRecord(
            topic="crm", partition=0, offset=next(_offsets), key=order_id.encode(),
            value=crm_event(event_type, data), headers=tuple(STRUCTURED), timestamp_ms=0,
        )
    )  # fmt: skip


async def _add_item_in_flight(
    provider: Provider, order_id: str, *, latency_ms: int
) -> tuple[CrmIntake, StepRunner, uuid.UUID, asyncio.Task[None]]:
    """An order in the provider's cart and its item's `add_item` on its way (held `latency_ms`)."""
    pool, client, control = provider.pool, provider.client, provider.control
    intake = CrmIntake(pool=pool, status_topic="status", clock=SystemClock())
    await _consume(intake, order_id, "crm.order.submitted", order_submitted(order_id, subscription("li-1")))
    runner = StepRunner(pool=pool, client=client, clock=SystemClock(), status_topic="status")
    await runner.run_order_step(order_id)  # the provider order exists
    workflow_id = await pool.fetchval("SELECT workflow_id FROM workflows WHERE order_id = $1", order_id)
    await control.faults(
        {"match": "POST /orders/*/line-items", "kind": "latency", "latencyMs": latency_ms, "times": 1}
    )
    step = asyncio.create_task(runner.run_workflow_step(workflow_id))
    for _ in range(300):  # bounded: until the intent is stored, i.e. the call is on its way
        if await pool.fetchval("SELECT count(*) FROM provider_calls WHERE step = 'add_item'"):
            break
        await asyncio.sleep(0.01)
    return intake, runner, workflow_id, step


async def _add_item_with_change_midway(
    provider: Provider, order_id: str, change: tuple[str, Any]
) -> tuple[StepRunner, uuid.UUID]:
    intake, runner, workflow_id, step = await _add_item_in_flight(provider, order_id, latency_ms=600)
    await _consume(intake, order_id, *change)
    assert not step.done(), "the change must land while the call is in flight"
    await step
    return runner, workflow_id


async def _requests(control: SandboxControl, suffix: str, method: str) -> int:
    return sum(
        1
        for e in await control.ledger(kind="request")
        if e["path"].endswith(suffix) and e["method"] == method
    )


async def test_an_amendment_during_add_item_updates_the_item_instead_of_adding_it_again(
    provider: Provider,
) -> None:
    pool, control = provider.pool, provider.control
    update = {"orderId": "o-amend", "lineItem": subscription("li-1", productOfferingId="mobile-plan-max")}
    runner, workflow_id = await _add_item_with_change_midway(
        provider, "o-amend", ("crm.order.line_item.updated", update)
    )
    await runner.run_workflow_step(workflow_id)

    row = await pool.fetchrow("SELECT state, error FROM workflows WHERE workflow_id = $1", workflow_id)
    assert (row["state"], row["error"]) == ("awaiting_submission", None)
    assert await _requests(control, "/line-items", "POST") == 1
    assert await _requests(control, "/line-items/li-1", "PUT") == 1


async def test_a_cancellation_during_add_item_removes_the_added_item(provider: Provider) -> None:
    pool, control = provider.pool, provider.control
    cancel = {"orderId": "o-cancel", "reason": "NO_NEED"}
    runner, workflow_id = await _add_item_with_change_midway(
        provider, "o-cancel", ("crm.order.cancelled", cancel)
    )
    await runner.run_workflow_step(workflow_id)

    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "cancelled"
    )
    assert await _requests(control, "/line-items/li-1", "DELETE") == 1


async def test_an_amendment_while_the_order_is_being_submitted_is_refused_and_the_item_goes_on(
    provider: Provider,
) -> None:
    # Seen in the two-worker reliability test: the amendment moved the item back to `received`
    # while the submit was on its way, and the item then failed with `order_already_submitted`.
    pool, control = provider.pool, provider.control
    intake = CrmIntake(pool=pool, status_topic="status", clock=SystemClock())
    await _consume(intake, "o-sub", "crm.order.submitted", order_submitted("o-sub", subscription("li-1")))
    runner = StepRunner(pool=pool, client=provider.client, clock=SystemClock(), status_topic="status")
    await runner.run_order_step("o-sub")
    workflow_id = await pool.fetchval("SELECT workflow_id FROM workflows WHERE order_id = 'o-sub'")
    await runner.run_workflow_step(workflow_id)
    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "awaiting_submission"
    )
    await control.faults({"match": "POST /orders/*/submit", "kind": "latency", "latencyMs": 600, "times": 1})
    submit = asyncio.create_task(runner.run_order_step("o-sub"))
    for _ in range(300):  # bounded: until the submit's intent is stored
        if await pool.fetchval("SELECT count(*) FROM provider_calls WHERE step = 'submit_order'"):
            break
        await asyncio.sleep(0.01)
    update = {"orderId": "o-sub", "lineItem": subscription("li-1", productOfferingId="mobile-plan-max")}
    await _consume(intake, "o-sub", "crm.order.line_item.updated", update)
    assert not submit.done(), "the amendment must land while the submit is in flight"
    await submit
    await runner.run_workflow_step(workflow_id)

    row = await pool.fetchrow(
        "SELECT state, error, context FROM workflows WHERE workflow_id = $1", workflow_id
    )
    assert row["error"] is None
    assert row["state"] in ("submitted", "activated")
    assert [r["state"] for r in row["context"]["refused_amendments"]] == ["awaiting_submission"]


async def _add_item_answered_but_never_recorded(
    provider: Provider, order_id: str
) -> tuple[CrmIntake, StepRunner, uuid.UUID]:
    """The worker dies during `add_item`: the provider added the item, the answer was never
    recorded (the call's intent is left unanswered). The step is cancelled mid-call, as a SIGKILL
    would end it, and the provider is made to have applied the call (its own processing of the
    aborted request, or the stored request sent again under its key)."""
    pool, client, control = provider.pool, provider.client, provider.control
    intake, runner, workflow_id, step = await _add_item_in_flight(provider, order_id, latency_ms=400)
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await step
    stored = await pool.fetchrow("SELECT * FROM provider_calls WHERE step = 'add_item'")
    assert stored["status"] == "intent", "the call's answer must be unrecorded"
    request = PreparedRequest(
        method=stored["method"],
        path=stored["path"],
        body=stored["body"],
        idempotency_key=stored["idempotency_key"],
    )
    for _ in range(300):  # bounded: the aborted request may still be processed after its latency
        answered = [
            e
            for e in await control.ledger(kind="request")
            if e.get("idempotencyKey") == request.idempotency_key and e["outcome"] != "locked"
        ]
        if answered:
            break
        await asyncio.sleep(0.01)
    else:
        await send(client, request, step="add_item")  # never processed: the provider applies it now
    assert await _requests(control, "/line-items", "POST") >= 1
    order = await pool.fetchval("SELECT provider_order_id FROM orders WHERE order_id = $1", order_id)
    assert "li-1" in {i.line_item_id for i in (await client.get_order(order)).line_items}
    return intake, runner, workflow_id


async def test_a_cancellation_after_a_worker_died_during_add_item_removes_the_item(
    provider: Provider,
) -> None:
    """Found by the crash matrix: the cancel found `item_added` unset and compensated nothing, so
    the item stayed in the provider's cart."""
    pool, control = provider.pool, provider.control
    intake, runner, workflow_id = await _add_item_answered_but_never_recorded(provider, "o-died-cancel")
    await _consume(
        intake, "o-died-cancel", "crm.order.cancelled", {"orderId": "o-died-cancel", "reason": "NO_NEED"}
    )
    await runner.run_workflow_step(workflow_id)

    assert (
        await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == "cancelled"
    )
    assert await _requests(control, "/line-items/li-1", "DELETE") == 1
    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'add_item'") == "succeeded"


async def test_an_amendment_after_a_worker_died_during_add_item_updates_the_item(provider: Provider) -> None:
    """Found by the crash matrix: the amendment's new generation added the item again, the
    provider refused the duplicate, and the item failed."""
    pool, control = provider.pool, provider.control
    intake, runner, workflow_id = await _add_item_answered_but_never_recorded(provider, "o-died-amend")
    update = {
        "orderId": "o-died-amend",
        "lineItem": subscription("li-1", productOfferingId="mobile-plan-max"),
    }
    await _consume(intake, "o-died-amend", "crm.order.line_item.updated", update)
    await runner.run_workflow_step(workflow_id)

    row = await pool.fetchrow("SELECT state, error FROM workflows WHERE workflow_id = $1", workflow_id)
    assert (row["state"], row["error"]) == ("awaiting_submission", None)
    assert await _requests(control, "/line-items/li-1", "PUT") == 1
    updated = [e for e in await control.ledger(kind="effect") if e["effect"] == "line_item.updated"]
    assert len(updated) == 1
