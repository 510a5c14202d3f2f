"""Jeopardy's pure decision: given a row, now and the thresholds, raise, clear or say nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.engine import (
    ACTIVATION_LATE,
    PORT_STUCK,
    Jeopardy,
    JeopardyChange,
    JeopardyRules,
    decide_jeopardy,
)
from orchestrator.engine._jeopardy import JEOPARDY_POLL_S, jeopardy_delay
from orchestrator.ops import InvalidInput, build_filter
from orchestrator.store.rows import WorkflowContext, WorkflowRow

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = JeopardyRules(port_stuck_after_s=2 * 86400, activation_late_after_s=3600)
PORTING = {"porting": {"details": {"accountNumber": "***"}}}


def _row(state: str, spec: dict[str, Any] | None = None, **context: Any) -> WorkflowRow:
    return WorkflowRow(
        workflow_id=uuid.UUID(int=7), order_id="o-1", line_item_id="li-1", line_item_type="SUBSCRIPTION",
        definition_version=1, state=state, spec={"type": "SUBSCRIPTION", **(spec or {})},
        secrets=None, context=WorkflowContext(**context), generation=0, sequence=3, version=1,
        resume_state=None, error=None, attempts=0, created_at=NOW - timedelta(days=10),
    )  # fmt: skip


@pytest.mark.parametrize("state", ["porting_pending", "temp_number_active"])
def test_a_port_in_progress_past_the_threshold_is_raised_once(state: str) -> None:
    since = NOW - timedelta(days=2, seconds=1)
    row = _row(state, PORTING, port_since=since.isoformat())
    expected = Jeopardy(PORT_STUCK, since, since + timedelta(days=2))
    assert decide_jeopardy(row, now=NOW, rules=RULES) == JeopardyChange("raised", expected)
    row.context.jeopardy = expected.to_context()
    assert decide_jeopardy(row, now=NOW + timedelta(days=1), rules=RULES) is None, "raised once"


def test_a_port_within_the_threshold_says_nothing() -> None:
    row = _row("porting_pending", PORTING, port_since=(NOW - timedelta(days=1)).isoformat())
    assert decide_jeopardy(row, now=NOW, rules=RULES) is None
    # A row that entered porting before `port_since` was kept is judged from its creation.
    old = _row("porting_pending", PORTING)
    change = decide_jeopardy(old, now=NOW, rules=RULES)
    assert change is not None
    assert change.jeopardy.since == NOW - timedelta(days=10)


def test_an_activation_late_after_its_date_begins() -> None:
    row = _row("activation_scheduled", scheduled_activation_date="2026-11-25")
    day = datetime(2026, 11, 25, tzinfo=UTC)
    assert decide_jeopardy(row, now=day + timedelta(minutes=59), rules=RULES) is None
    change = decide_jeopardy(row, now=day + timedelta(hours=1), rules=RULES)
    assert change == JeopardyChange("raised", Jeopardy(ACTIVATION_LATE, day, day + timedelta(hours=1)))


def test_submitted_with_a_date_is_watched_unless_it_ports() -> None:
    day = datetime(2026, 11, 24, tzinfo=UTC)
    row = _row("submitted", {"scheduleActivationAt": "2026-11-24"})
    assert decide_jeopardy(row, now=NOW, rules=RULES) == JeopardyChange(
        "raised", Jeopardy(ACTIVATION_LATE, day, day + timedelta(hours=1))
    )
    assert (
        decide_jeopardy(
            _row("submitted", {"scheduleActivationAt": "2026-11-24", **PORTING}), now=NOW, rules=RULES
        )
        is None
    )
    assert decide_jeopardy(_row("submitted"), now=NOW, rules=RULES) is None, "no date, nothing to be late for"


@pytest.mark.parametrize("state", ["received", "awaiting_submission", "activated", "failed", "cancelling"])
def test_states_that_wait_for_nothing_dated_are_not_watched(state: str) -> None:
    row = _row(
        state, {"scheduleActivationAt": "2026-01-01", **PORTING}, port_since="2026-01-01T00:00:00+00:00"
    )
    assert decide_jeopardy(row, now=NOW, rules=RULES) is None


def test_raised_jeopardy_is_cleared_when_its_wait_is_over() -> None:
    raised = Jeopardy(ACTIVATION_LATE, NOW - timedelta(days=1), NOW - timedelta(hours=23))
    # e.g. the item was raised for an activation, and now waits for nothing dated
    row = _row("submitted", jeopardy=raised.to_context())
    assert decide_jeopardy(row, now=NOW, rules=RULES) == JeopardyChange("cleared", raised)
    # the date moved into the future: no longer late
    later = _row("activation_scheduled", scheduled_activation_date="2026-12-01", jeopardy=raised.to_context())
    assert decide_jeopardy(later, now=NOW, rules=RULES) == JeopardyChange("cleared", raised)


def test_polls_back_off_in_jeopardy_but_never_stop() -> None:
    quiet = _row("porting_pending", PORTING)
    assert jeopardy_delay(quiet, 30.0) == 30.0
    loud = _row("porting_pending", PORTING, jeopardy=Jeopardy(PORT_STUCK, NOW, NOW).to_context())
    assert jeopardy_delay(loud, 30.0) == JEOPARDY_POLL_S
    assert jeopardy_delay(loud, 3600.0) == 3600.0


def test_the_in_jeopardy_filter_takes_yes_or_no_and_refuses_anything_else() -> None:
    assert build_filter(in_jeopardy="true").query(now=NOW).in_jeopardy is True
    assert build_filter(in_jeopardy="no").query(now=NOW).in_jeopardy is False
    assert build_filter(in_jeopardy=" ").in_jeopardy is None
    assert not build_filter(in_jeopardy=False).is_empty()
    with pytest.raises(InvalidInput, match="in_jeopardy"):
        build_filter(in_jeopardy="maybe")
