"""The replay rule for one unsettled provider call, branch by branch (pure: no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.ops import Action, CallFacts, Evidence, decide_call

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _call(
    *, age_h: float | None, status: str = "retrying", http: int | None = None, code: str | None = None
) -> CallFacts:
    return CallFacts(
        idempotency_key="wf-x-add_item-g0",
        step="add_item",
        method="POST",
        path="/orders/o/line-items",
        status=status,
        generation=0,
        first_sent_at=None if age_h is None else NOW - timedelta(hours=age_h),
        response_status=http,
        error_code=code,
        workflow_level=True,
        line_item_id="li-1",
        request=None,
    )


@pytest.mark.parametrize(
    ("call", "present", "expected"),
    [
        (_call(age_h=1), True, Action.SKIP),
        (_call(age_h=30), True, Action.SKIP),  # past the window and present: reconcile, never resend
        (_call(age_h=1), False, Action.RESEND),  # e.g. a timeout: the key still protects us
        (_call(age_h=None, status="intent"), False, Action.RESEND),  # never sent
        (_call(age_h=30), False, Action.REKEY),
        (_call(age_h=23.5), False, Action.REKEY),  # inside 24 h but past the 1 h margin
        (_call(age_h=1, status="failed", http=400, code="provider_rejected"), False, Action.REKEY),
        (_call(age_h=1, status="failed", http=429, code="provider_rate_limited"), False, Action.RESEND),
        (_call(age_h=1, status="failed", http=409, code="idempotency_key_locked"), False, Action.RESEND),
        (_call(age_h=1), None, Action.RESEND),  # unknown, but a resend is safe by the key
        (_call(age_h=30), None, Action.BLOCKED),
        (_call(age_h=1, status="failed", http=400, code="provider_rejected"), None, Action.BLOCKED),
    ],
)
def test_decision(call: CallFacts, present: bool | None, expected: Action) -> None:
    assert decide_call(call, Evidence(present, "read"), now=NOW).action is expected
