"""Past the provider's 24 h key window the engine never re-sends a stored call blindly: it reads
provider state first, skips the call when the effect is there, re-keys when it is not.

Runs the step runner directly against a real database and the real sandbox over HTTP: the window
is crossed by ageing the stored intent and moving the sandbox's clock by the same 25 hours.
"""

from __future__ import annotations

import uuid

import asyncpg

from orchestrator.connect import ConnectClient
from orchestrator.engine import Call, CrmIntake, StepRunner, SystemClock, plan_item
from orchestrator.engine._calls import Send, prepare_intent
from orchestrator.kafka import ConsumedRecord
from orchestrator.sandbox import SandboxControl
from orchestrator.store import workflows
from orchestrator.worker import crm_handler
from tests.e2e.support import STRUCTURED, crm_event, effects, order_submitted, subscription
from tests.engine.conftest import Provider


async def _setup(pool: asyncpg.Pool, client: ConnectClient, order_id: str) -> tuple[StepRunner, uuid.UUID]:
    intake = crm_handler(CrmIntake(pool=pool, status_topic="status", clock=SystemClock()))
    value = crm_event("crm.order.submitted", order_submitted(order_id, subscription("li-1")))
    await intake(
        ConsumedRecord(
            topic="crm", partition=0, offset=0, key=order_id.encode(), value=value, headers=tuple(STRUCTURED),
            timestamp_ms=0,
        )
    )  # fmt: skip
    runner = StepRunner(pool=pool, client=client, clock=SystemClock(), status_topic="status")
    await runner.run_order_step(order_id)  # the provider order now exists
    workflow_id = await pool.fetchval("SELECT workflow_id FROM workflows WHERE order_id = $1", order_id)
    return runner, workflow_id


async def _age_and_cross_the_window(pool: asyncpg.Pool, control: SandboxControl) -> None:
    await pool.execute(
        "UPDATE provider_calls SET first_sent_at = first_sent_at - interval '25 hours' "
        "WHERE step = 'add_item'"
    )
    await control.advance(25 * 3600)  # the provider forgets the key


async def test_effect_present_past_the_window_is_skipped_not_resent(provider: Provider) -> None:
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-kw-present")
    # The add is applied, but its answer never reaches us.
    await control.faults({"match": "POST /orders/*/line-items", "kind": "lost_response", "times": 1})
    await runner.run_workflow_step(workflow_id)
    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'add_item'") == "retrying"
    await _age_and_cross_the_window(pool, control)

    await runner.run_workflow_step(workflow_id)

    row = await pool.fetchrow("SELECT state, generation FROM workflows WHERE workflow_id = $1", workflow_id)
    assert (row["state"], row["generation"]) == ("awaiting_submission", 0)
    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'add_item'") == "skipped"
    ledger = await control.ledger()
    assert len(effects(ledger, "line_item.added")) == 1
    sends = [e for e in ledger if e.get("kind") == "request" and e["path"].endswith("/line-items")]
    assert len(sends) == 1, "the old key must not be sent again"
    cause = await pool.fetchval(
        "SELECT cause FROM transitions WHERE workflow_id = $1 ORDER BY sequence DESC LIMIT 1", workflow_id
    )
    assert cause == "reconcile:add_item"


async def test_effect_absent_past_the_window_is_rekeyed(provider: Provider) -> None:
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-kw-absent")
    # The provider fails before doing anything.
    await control.faults({"match": "POST /orders/*/line-items", "kind": "error", "status": 503, "times": 1})
    await runner.run_workflow_step(workflow_id)
    await _age_and_cross_the_window(pool, control)

    await runner.run_workflow_step(workflow_id)  # reads, finds nothing, re-keys
    assert await pool.fetchval("SELECT generation FROM workflows WHERE workflow_id = $1", workflow_id) == 1
    await runner.run_workflow_step(workflow_id)  # sends under the new key

    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "awaiting_submission"
    )
    statuses = dict(
        await pool.fetch("SELECT idempotency_key, status FROM provider_calls WHERE step = 'add_item'")
    )
    assert sorted(statuses.values()) == ["rekeyed", "succeeded"]
    added = effects(await control.ledger(), "line_item.added")
    assert len(added) == 1
    assert added[0]["idempotencyKey"].endswith("-g1")


async def test_a_send_whose_outcome_was_never_recorded_is_reconciled_past_the_window(
    provider: Provider,
) -> None:
    """The worker stored the intent, sent it (the provider applied it) and died before recording the
    outcome. A day later the provider has forgotten the key: a blind re-send would add the item
    twice. The window counts from the intent, so the engine reads the provider first."""
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-kw-unrecorded")
    now = SystemClock().now()
    async with pool.acquire() as conn, conn.transaction():
        locked = await workflows.lock_order_and_workflow(conn, "o-kw-unrecorded", workflow_id)
        assert locked is not None
        order, row = locked
        plan = plan_item(row, order, now=now)
        assert isinstance(plan, Call)
        assert plan.step == "add_item"
        intent = await prepare_intent(
            conn,
            workflow_id=workflow_id,
            order_id=row.order_id,
            step=plan.step,
            generation=row.generation,
            request=plan.request,
            now=now,
        )
    assert isinstance(intent, Send)
    response = await client.send(intent.request)  # applied; then the worker dies
    assert response.error is None
    stored = await pool.fetchrow("SELECT status, first_sent_at FROM provider_calls WHERE step = 'add_item'")
    assert stored["status"] == "intent"
    assert stored["first_sent_at"] is not None, "the window starts with the intent"
    await _age_and_cross_the_window(pool, control)

    await runner.run_workflow_step(workflow_id)

    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "awaiting_submission"
    )
    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'add_item'") == "skipped"
    assert len(effects(await control.ledger(kind="effect"), "line_item.added")) == 1


async def test_an_order_call_past_the_window_is_reconciled_not_stranded(provider: Provider) -> None:
    """The order's submit reached the provider but its answer was lost; a day later the key is
    forgotten. The order step reads the provider, finds the order submitted, and moves its items
    on (it used to log and return, leaving them waiting where no replay could select them)."""
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-kw-order")
    await runner.run_workflow_step(workflow_id)  # the item is in the cart
    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "awaiting_submission"
    )
    await control.faults({"match": "POST /orders/*/submit", "kind": "lost_response", "times": 1})
    await runner.run_order_step("o-kw-order")
    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'submit_order'") == "retrying"
    await pool.execute(
        "UPDATE provider_calls SET first_sent_at = first_sent_at - interval '25 hours' "
        "WHERE step = 'submit_order'"
    )
    await control.advance(25 * 3600)

    await runner.run_order_step("o-kw-order")

    assert await pool.fetchval("SELECT status FROM provider_calls WHERE step = 'submit_order'") == "skipped"
    assert (
        await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == "submitted"
    )
    ledger = await control.ledger()
    assert len(effects(ledger, "order.submitted")) == 1
    sends = [e for e in ledger if e.get("kind") == "request" and e["path"].endswith("/submit")]
    assert len(sends) == 1, "the forgotten key must not be sent again"


async def test_a_conflict_whose_effect_is_there_is_taken_as_done(provider: Provider) -> None:
    """The provider applied the add and then answered 409 (a state conflict): the engine reads the
    order, finds the item in it, and goes on instead of failing the line item."""
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-409-applied")
    await control.faults(
        {"match": "POST /orders/*/line-items", "kind": "lost_response", "status": 409, "times": 1}
    )

    await runner.run_workflow_step(workflow_id)

    assert await pool.fetchval("SELECT state FROM workflows WHERE workflow_id = $1", workflow_id) == (
        "awaiting_submission"
    )
    call = await pool.fetchrow("SELECT status, response_status FROM provider_calls WHERE step = 'add_item'")
    assert (call["status"], call["response_status"]) == ("skipped", 409)
    assert len(effects(await control.ledger(kind="effect"), "line_item.added")) == 1


async def test_a_conflict_without_its_effect_still_fails_the_line_item(provider: Provider) -> None:
    pool, client, control = provider.pool, provider.client, provider.control
    runner, workflow_id = await _setup(pool, client, "o-409-refused")
    await control.faults({"match": "POST /orders/*/line-items", "kind": "error", "status": 409, "times": 1})

    await runner.run_workflow_step(workflow_id)

    row = await pool.fetchrow("SELECT state, error FROM workflows WHERE workflow_id = $1", workflow_id)
    assert row["state"] == "failed"
    assert row["error"]["code"] == "provider_state_conflict"
    assert effects(await control.ledger(kind="effect"), "line_item.added") == []
