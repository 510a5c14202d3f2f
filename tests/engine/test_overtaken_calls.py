"""Two attempts of one call in flight at once: an order's step asked for again while its call is
out. The scheduler keeps that from happening (one run per step at a time, tests/engine/
test_claims.py); should it happen anyway (a worker paused past the dead-worker timeout and resumed),
the second attempt sends the stored intent again under the same key, and when the first attempt's
refusal arrives after the second attempt succeeded, the refusal must not undo the success.

Seen in CI (the awkward-ids test): an order's submit was refused (400, injected) slowly, a second
attempt meanwhile submitted the order, and the late 400 then failed both line items although the
provider had submitted their order. The step runner against a real database and the real sandbox,
whose slow injected refusal holds the first attempt open."""

from __future__ import annotations

import asyncio
import uuid

from orchestrator.connect import Requests
from orchestrator.engine import CrmIntake, StepRunner, SystemClock
from tests.e2e.support import order_submitted, subscription
from tests.engine.conftest import Provider
from tests.engine.test_changes_during_a_call import _consume


async def _in_the_cart(provider: Provider, order_id: str) -> tuple[StepRunner, uuid.UUID]:
    """An order of one line item, its provider order created and the item in it (not submitted)."""
    pool = provider.pool
    intake = CrmIntake(pool=pool, status_topic="status", clock=SystemClock())
    await _consume(intake, order_id, "crm.order.submitted", order_submitted(order_id, subscription("li-1")))
    runner = StepRunner(pool=pool, client=provider.client, clock=SystemClock(), status_topic="status")
    await runner.run_order_step(order_id)  # the provider order exists
    workflow_id: uuid.UUID = await pool.fetchval(
        "SELECT workflow_id FROM workflows WHERE order_id = $1", order_id
    )
    await runner.run_workflow_step(workflow_id)  # the item is in it
    return runner, workflow_id


async def _slow_refused_submit(provider: Provider, order_id: str) -> tuple[StepRunner, asyncio.Task[None]]:
    """An order whose item is in the provider order, and its submit on its way, to be refused
    (400) after 800 ms."""
    pool = provider.pool
    runner, _ = await _in_the_cart(provider, order_id)
    await provider.control.faults(
        {"match": "POST /orders/*/submit", "kind": "error", "status": 400, "latencyMs": 800, "times": 1}
    )
    first = asyncio.create_task(runner.run_order_step(order_id))
    for _ in range(300):  # bounded: until the first attempt's intent is stored (it is on its way)
        if await pool.fetchval("SELECT count(*) FROM provider_calls WHERE step = 'submit_order'"):
            break
        await asyncio.sleep(0.01)
    return runner, first


async def _submits(provider: Provider) -> list[int]:
    return sorted(
        r["status"]
        for r in await provider.control.ledger(kind="request")
        if r["method"] == "POST" and r["path"].endswith("/submit")
    )


async def test_a_late_refusal_does_not_undo_a_submit_that_another_worker_made(provider: Provider) -> None:
    pool = provider.pool
    _, first = await _slow_refused_submit(provider, "o-late")
    other = StepRunner(pool=pool, client=provider.client, clock=SystemClock(), status_topic="status")
    await other.run_order_step("o-late")  # the second attempt, in another worker, answered at once
    assert not first.done(), "the first attempt must still be waiting for its refusal"
    await first
    workflow_id = await pool.fetchval("SELECT workflow_id FROM workflows WHERE order_id = 'o-late'")

    call = await pool.fetchrow("SELECT status, attempts FROM provider_calls WHERE step = 'submit_order'")
    assert (call["status"], call["attempts"]) == ("succeeded", 2)
    row = await pool.fetchrow("SELECT state, error FROM workflows WHERE workflow_id = $1", workflow_id)
    assert (row["state"], row["error"]) == ("submitted", None)
    assert await pool.fetchval("SELECT submitted_at IS NOT NULL FROM orders WHERE order_id = 'o-late'")
    assert await _submits(provider) == [200, 400]  # both attempts reached the provider


async def test_a_409_on_the_orders_submit_is_read_and_the_submit_taken_as_done(provider: Provider) -> None:
    """The provider order was submitted by a call we never saw answered (here: under another
    key); our submit is refused with 409 `invalid_state`. Reading the order shows it submitted, so
    the items go on instead of failing."""
    pool = provider.pool
    runner, workflow_id = await _in_the_cart(provider, "o-409")
    provider_order_id = await pool.fetchval("SELECT provider_order_id FROM orders WHERE order_id = 'o-409'")
    answer = await provider.client.send(
        Requests.submit_order(provider_order_id, {}, idempotency_key="elsewhere")
    )
    assert answer.status == 200

    await runner.run_order_step("o-409")

    call = await pool.fetchrow(
        "SELECT status, response_status FROM provider_calls "
        "WHERE order_id = 'o-409' AND step = 'submit_order'"
    )
    assert (call["status"], call["response_status"]) == ("skipped", 409)
    row = await pool.fetchrow("SELECT state, error FROM workflows WHERE workflow_id = $1", workflow_id)
    assert (row["state"], row["error"]) == ("submitted", None)
