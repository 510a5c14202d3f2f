"""Replay through the real stack: line items failed by injected provider faults are found with
`list`/`show`, replayed by filter with a dry-run plan that matches what executes, and end
`activated` with each provider effect applied exactly once, including past the 24 h key window,
where the replay reads provider state and reconciles instead of re-sending."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from orchestrator.ops import build_filter, open_operations
from orchestrator.sandbox import RunningSandbox, SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.e2e.support import (
    StatusEvents,
    crm_event,
    effects,
    order_submitted,
    publish,
    run_cli,
    subscription,
)
from tests.ops.conftest import SandboxTime

ADD_ITEM = "POST /orders/*/line-items"


async def _fail_order(settings: Settings, status: StatusEvents, order_id: str, items: int) -> None:
    data = order_submitted(order_id, *(subscription(f"li-{n}") for n in range(1, items + 1)))
    await publish(settings, order_id, crm_event("crm.order.submitted", data))
    await status.until_settled(order_id, items)
    for n in range(1, items + 1):
        assert status.states(order_id, f"li-{n}")[-1] == "failed"


async def _until_activated(status: StatusEvents, order_id: str, items: int) -> None:
    def done() -> bool:
        lines = status.line_items(order_id)
        return len(lines) == items and all(events[-1]["state"] == "activated" for events in lines.values())

    await status.wait_for(done, timeout_s=60, what=f"{order_id} to activate: {status.line_items(order_id)}")


def _executed_matches_plan(result: dict[str, Any]) -> None:
    """What ran is what the operator confirmed: the same workflows, calls, actions, generations."""
    planned = {w["workflow_id"]: w for w in result["plan"]["workflows"] if w["replayable"]}
    done = {r["workflow_id"]: r for r in result["outcome"]["results"]}
    assert set(done) == set(planned)
    for workflow_id, plan in planned.items():
        assert done[workflow_id]["result"] == "resumed"
        assert done[workflow_id]["state"] == plan["resume_to"]
        assert done[workflow_id]["generation"] == plan["generation_after"]
        assert done[workflow_id]["calls"] == [
            {"idempotency_key": c["idempotency_key"], "action": c["action"]} for c in plan["calls"]
        ]


def _once_per_key(ledger: list[dict[str, Any]]) -> None:
    keyed = Counter((e["effect"], e["idempotencyKey"]) for e in ledger if e.get("idempotencyKey"))
    assert [k for k, n in keyed.items() if n > 1] == []


async def test_batch_failed_by_faults_is_inspected_and_replayed_by_filter(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    await control.faults({"match": ADD_ITEM, "kind": "error", "status": 400})
    await _fail_order(settings, status, "o-batch", 3)
    await control.faults()  # the provider is fixed

    # Inspect: the CLI (a real process) and the library agree on what is wrong.
    code, out, err = await run_cli(
        settings, "workflows", "list", "--state", "failed", "--order-id", "o-batch", "--json"
    )
    assert code == 0, err
    listed = json.loads(out)
    assert listed["total"] == 3
    assert {w["error_code"] for w in listed["workflows"]} == {"provider_rejected"}
    async with open_operations(settings) as ops:
        story = await ops.show("o-batch")
        assert story["kind"] == "order"
        for w in story["workflows"]:
            assert [t["to_state"] for t in w["transitions"]] == ["received", "failed"]
            (call,) = w["provider_calls"]
            assert (call["step"], call["status"], call["response_status"]) == ("add_item", "failed", 400)
            assert call["error"]["code"] == "provider_rejected"
        assert {e["state"] for e in story["status_events"] if e["line_item_id"]} == {"received", "failed"}

        # The dry run, from the CLI: nothing changes.
        code, out, err = await run_cli(
            settings, "replay", "--error-code", "provider_rejected", "--reason", "fault cleared"
        )
        assert code == 0, err
        assert "dry run" in out
        assert out.count("REKEY") == 3
        assert (await ops.list(build_filter(states=["failed"], order_id="o-batch")))["total"] == 3

        flt = build_filter(error_code="provider_rejected", order_id="o-batch")
        plan = await ops.plan_replay(flt, reason="provider fixed the line item validation")
        for w in plan.workflows:
            assert w.replayable
            assert w.resume_to == "received"
            (call,) = w.calls
            # The provider answered 400 under the old key and would replay that answer: new keys.
            assert (call.step, call.action) == ("add_item", "rekey")
            assert w.generation_after == w.generation + 1
            assert w.next_step["step"] == "add_item"
            assert w.next_step["idempotency_key"] == call.new_key
        result = await ops.replay(flt, reason=plan.reason, actor="test-operator", plan=plan, rate_per_s=50)
        _executed_matches_plan(result)

    await _until_activated(status, "o-batch", 3)
    for n in (1, 2, 3):
        assert status.states("o-batch", f"li-{n}") == [
            "received",
            "failed",
            "received",
            "awaiting_submission",
            "submitted",
            "activated",
        ]
    ledger = await control.ledger(kind="effect")
    _once_per_key(ledger)
    added = effects(ledger, "line_item.added")
    assert len(added) == 3
    assert {e["idempotencyKey"] for e in added} == {c.new_key for w in plan.workflows for c in w.calls}
    assert len(effects(ledger, "order.submitted")) == 1

    async with open_operations(settings) as ops:
        story = await ops.show(plan.workflows[0].workflow_id)
    (audit,) = story["audit"]
    assert (audit["actor"], audit["action"], audit["reason"]) == (
        "test-operator",
        "replay",
        "provider fixed the line item validation",
    )
    assert audit["outcome"]["resumed"] == 3
    resume = [t for t in story["transitions"] if t["event"] == "resume"]
    assert resume[0]["cause"] == "operator:test-operator"


async def test_past_the_key_window_replay_reads_provider_state_and_reconciles(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl, sandbox: RunningSandbox
) -> None:
    # o-lost: the provider applied the add but the answer was lost (we saw a 400).
    await control.faults({"match": ADD_ITEM, "kind": "lost_response", "status": 400})
    await _fail_order(settings, status, "o-lost", 1)
    # o-absent: the provider refused the add; nothing was applied.
    await control.faults({"match": ADD_ITEM, "kind": "error", "status": 400})
    await _fail_order(settings, status, "o-absent", 1)
    await control.faults()
    before = await control.ledger(kind="request")

    # A day and more passes at the provider: the keys have expired there.
    await control.advance(25 * 3600)
    async with open_operations(settings, clock=SandboxTime(sandbox)) as ops:
        flt = build_filter(error_code="provider_rejected")
        plan = await ops.plan_replay(flt, reason="reconcile after a long outage")
        by_order = {w.order_id: w for w in plan.workflows}
        (lost,) = by_order["o-lost"].calls
        (absent,) = by_order["o-absent"].calls
        assert lost.action == "skip", lost.why
        assert by_order["o-lost"].generation_after == by_order["o-lost"].generation
        assert absent.action == "rekey", absent.why
        assert "24 h" in absent.why
        result = await ops.replay(flt, reason=plan.reason, actor="test-operator", plan=plan, rate_per_s=50)
        _executed_matches_plan(result)

    await _until_activated(status, "o-lost", 1)
    await _until_activated(status, "o-absent", 1)
    ledger = await control.ledger(kind="effect")
    _once_per_key(ledger)
    added = effects(ledger, "line_item.added")
    assert len(added) == 2  # one per line item, whatever happened in between
    assert {e["idempotencyKey"] for e in added} == {lost.idempotency_key, absent.new_key}
    # The reconciled call was never sent again: its key was used only before the window passed.
    requests = await control.ledger(kind="request")
    assert [r for r in requests if r["idempotencyKey"] == lost.idempotency_key] == [
        r for r in before if r["idempotencyKey"] == lost.idempotency_key
    ]
    async with open_operations(settings) as ops:
        story = await ops.show("o-lost")
    (call,) = [c for c in story["workflows"][0]["provider_calls"] if c["step"] == "add_item"]
    assert call["status"] == "skipped"
    assert call["response_body"]["lineItemId"] == "li-1"


async def test_a_stuck_not_failed_workflow_is_replayed(
    settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """An item whose add keeps failing retryably backs off for longer and longer without failing.
    Once the provider is fixed, an operator replays what has been stuck for a while: the same
    dry-run plan (the stored call is re-sent under its key), the same audit, and it moves on now."""
    await control.faults({"match": ADD_ITEM, "kind": "error", "status": 503})
    await publish(
        settings,
        "o-stuck",
        crm_event("crm.order.submitted", order_submitted("o-stuck", subscription("li-1"))),
    )
    async with open_operations(settings) as ops:
        flt = build_filter(order_id="o-stuck", stuck_longer_than="2s")
        for _ in range(100):  # until a retry's backoff outlasts the 2 s
            listed = await ops.list(flt)
            if listed["total"] == 1:
                break
            await asyncio.sleep(0.3)
        assert listed["total"] == 1, "the item was never unchanged for 2 s"
        assert listed["workflows"][0]["state"] == "received"
        await control.faults()  # the provider is fixed

        plan = await ops.plan_replay(flt, reason="provider outage over")
        (w,) = plan.workflows
        assert w.replayable, w.refused
        assert (w.state, w.resume_to) == ("received", None)
        (call,) = w.calls
        assert (call.step, call.status, call.action) == ("add_item", "retrying", "resend")
        result = await ops.replay(flt, reason=plan.reason, actor="test-operator", plan=plan)
        (done,) = result["outcome"]["results"]
        assert (done["result"], done["state"]) == ("resumed", "received")

    await _until_activated(status, "o-stuck", 1)
    assert status.states("o-stuck", "li-1") == ["received", "awaiting_submission", "submitted", "activated"]
    added = effects(await control.ledger(kind="effect"), "line_item.added")
    assert [e["idempotencyKey"] for e in added] == [call.idempotency_key], "re-sent under its own key"
    async with open_operations(settings) as ops:
        story = await ops.show(w.workflow_id)
    (audit,) = story["audit"]
    assert (audit["action"], audit["outcome"]["resumed"]) == ("replay", 1)
