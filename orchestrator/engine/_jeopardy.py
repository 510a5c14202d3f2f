"""Jeopardy: a line item that waits longer than it should for the provider. Pure decisions, no I/O.

Two waits are watched while the workflow polls:

- `port_stuck`: a port in progress (`porting_pending`, `temp_number_active`) since it was
  requested (`context.port_since`), for longer than `port_stuck_after_s`;
- `activation_late`: an activation on a date (`activation_scheduled`, or `submitted` with a
  `scheduleActivationAt`) not done `activation_late_after_s` after the date begins (00:00 UTC).

Jeopardy is raised once (kept in `context.jeopardy`) and cleared once: by the next milestone (any
state change, see `Journal.commit`), or here if the wait it was raised for no longer applies.
Polling goes on throughout, backed off (`JEOPARDY_POLL_S`): the provider may still do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from orchestrator.events import LineItemState
from orchestrator.machines import PORTING_STATES
from orchestrator.store.rows import WorkflowRow

S = LineItemState
PORT_STUCK, ACTIVATION_LATE = "port_stuck", "activation_late"
# While in jeopardy the provider is polled at least this far apart (a webhook still wakes it at once).
JEOPARDY_POLL_S = 300.0


@dataclass(frozen=True)
class JeopardyRules:
    """The thresholds (`ORCHESTRATOR_JEOPARDY__*`)."""

    port_stuck_after_s: float = 172800.0
    activation_late_after_s: float = 3600.0


@dataclass(frozen=True)
class Jeopardy:
    """What the line item waits for, since when, and by when it was expected."""

    reason: str
    since: datetime
    expected_by: datetime

    def to_context(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "since": self.since.isoformat(),
            "expected_by": self.expected_by.isoformat(),
        }

    @classmethod
    def from_context(cls, data: dict[str, Any]) -> Jeopardy:
        return cls(
            reason=str(data["reason"]),
            since=datetime.fromisoformat(data["since"]),
            expected_by=datetime.fromisoformat(data["expected_by"]),
        )


@dataclass(frozen=True)
class JeopardyChange:
    """Raise or clear `jeopardy` on the line item."""

    status: Literal["raised", "cleared"]
    jeopardy: Jeopardy


def day_start(day: str) -> datetime:
    """00:00 UTC of a `YYYY-MM-DD` date: when an activation on that date begins."""
    return datetime.combine(date.fromisoformat(day), time.min, tzinfo=UTC)


def watched(row: WorkflowRow, rules: JeopardyRules) -> Jeopardy | None:
    """The wait the line item is in, in its current state, if it is one that jeopardy watches."""
    state = row.current
    if state in PORTING_STATES and row.spec.get("porting"):
        started = row.context.port_since
        # A row that entered porting before `port_since` was kept: its creation is the safe bound.
        since = datetime.fromisoformat(started) if started else row.created_at
        if since is None:
            return None
        return Jeopardy(PORT_STUCK, since, since + timedelta(seconds=rules.port_stuck_after_s))
    day = None
    if state == S.ACTIVATION_SCHEDULED:
        day = row.context.scheduled_activation_date
    elif state == S.SUBMITTED and not row.spec.get("porting"):
        day = row.spec.get("scheduleActivationAt")
    if not day:
        return None
    since = day_start(str(day))
    return Jeopardy(ACTIVATION_LATE, since, since + timedelta(seconds=rules.activation_late_after_s))


def decide_jeopardy(row: WorkflowRow, *, now: datetime, rules: JeopardyRules) -> JeopardyChange | None:
    """After a poll that left the line item where it was: raise jeopardy when its wait is overdue,
    clear it when the wait it was raised for is over (or no longer overdue). None: nothing to say."""
    wait = watched(row, rules)
    raised = row.context.jeopardy
    if raised is not None:
        current = Jeopardy.from_context(raised)
        if wait is None or wait.reason != current.reason or now < wait.expected_by:
            return JeopardyChange("cleared", current)
        return None
    if wait is not None and now >= wait.expected_by:
        return JeopardyChange("raised", wait)
    return None


def jeopardy_delay(row: WorkflowRow, delay_s: float | None) -> float | None:
    """The next poll of an item in jeopardy backs off to `JEOPARDY_POLL_S`, but never stops."""
    if delay_s is None or row.context.jeopardy is None:
        return delay_s
    return max(delay_s, JEOPARDY_POLL_S)
