"""An operator's replay of a port the donor rejected, through the admin API and the CLI, against
the real stack: the plan requests the port again (not a poll of the rejected one), warns that the
details are the rejected ones, and the line item activates on the ported number."""

from __future__ import annotations

from collections import Counter

from orchestrator.sandbox import SandboxControl
from orchestrator.settings import Settings
from orchestrator.worker import Worker
from tests.admin.conftest import Admin
from tests.e2e.support import StatusEvents, effects, run_cli
from tests.e2e.test_port_exceptions import _rejected_on_temporary_number, _until_state


async def test_a_rejected_port_is_replayed_by_an_operator_through_the_api_and_the_cli(
    admin: Admin, settings: Settings, worker: Worker, status: StatusEvents, control: SandboxControl
) -> None:
    """The donor rejects the port; the details were right after all (the donor's side is
    fixed), so an operator replays: through the API for one order, the CLI for another. The
    dry-run plan says the port is requested again, and warns that these are the rejected details."""
    for order_id, ported in (("o-rp-api", "+15551239004"), ("o-rp-cli", "+15551239005")):
        await _rejected_on_temporary_number(settings, status, control, order_id, ported)
        await control.port_plan(ported, outcome="COMPLETED", delay_s=0)

    body = {"order_id": "o-rp-api", "error_code": "port_failed", "reason": "donor fixed its records"}
    plan = (await admin.http.post("/api/v1/replay/plan", json=body)).json()
    (w,) = plan["workflows"]
    assert (w["replayable"], w["resume_to"], w["request_port"]) == (True, "temp_number_active", True)
    assert (w["next_step"]["kind"], w["next_step"]["step"]) == ("call", "retry_port")
    assert any("rejected" in warning for warning in w["warnings"]), w["warnings"]
    done = await admin.http.post("/api/v1/replay", json={**body, "expect_fingerprint": plan["fingerprint"]})
    assert done.status_code == 200, done.text

    args = ("replay", "--order-id", "o-rp-cli", "--error-code", "port_failed", "--reason", "donor fixed")
    code, out, err = await run_cli(settings, *args)
    assert code == 0, err
    assert "requests the port again" in out, out
    assert "WARNING" in out, out
    code, out, err = await run_cli(settings, *args, "--yes")
    assert code == 0, err

    for order_id, ported in (("o-rp-api", "+15551239004"), ("o-rp-cli", "+15551239005")):
        await _until_state(status, order_id, "activated")
        assert status.line_items(order_id)["li-1"][-1]["msisdn"] == ported
    ledger = await control.ledger(kind="effect")
    assert len(effects(ledger, "port.requested_again")) == 2
    assert Counter(e["effect"] for e in ledger)["subscription.created"] == 2
