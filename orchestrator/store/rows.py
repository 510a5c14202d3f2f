"""The rows the engine works on, as typed values: loaded under a row lock, changed, written back in
one transaction. Pure data: no I/O here, so the engine's pure planner can read them too."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass
class WorkflowContext:
    """What a workflow has learned or been told on its way (`workflows.context`, jsonb).

    Stored sparse: a field at its default is left out of the JSON, so rows written before a field
    existed read back the same, and `workflows show` lists only what is known.
    """

    msisdn: str | None = None
    temporary_msisdn: str | None = None
    ported_msisdn: str | None = None
    subscription_id: str | None = None
    scheduled_activation_date: str | None = None
    item_added: bool = False
    polls: int = 0
    cancel_reason: str | None = None
    cancel_comment: str | None = None
    # A refused undo (no `cancelling → failed` edge), kept for the operator while it retries.
    compensation_error: dict[str, Any] | None = None
    # Amendments the machine refused (e.g. after submit), so `workflows show` tells the CRM tried.
    refused_amendments: list[dict[str, Any]] = field(default_factory=list)
    # Cancellations that came after the item settled (`activated`, `completed`): nothing to undo.
    refused_cancellations: list[dict[str, Any]] = field(default_factory=list)
    # A cancel or an amendment changed the item: a call left unanswered before it (its worker died
    # mid-call) is settled under its own key before anything else is planned, so what it did is
    # known (an item added must be removed or updated, not forgotten or added again).
    settle_first: bool = False
    # Porting details the CRM corrected, to send to the provider while the port is in progress
    # (`porting_update_due`), or to request the port again with after the donor rejected it
    # (`port_request_due`). The step that sends them reports the amendment's outcome.
    porting_update_due: bool = False
    port_request_due: bool = False
    # A digest of the porting details the donor rejected: a replay with the same ones is warned about.
    rejected_porting: str | None = None
    # When the port now in progress was requested (ISO 8601): a port stuck since then raises jeopardy.
    port_since: str | None = None
    # Jeopardy raised and not yet cleared (`reason`, `since`, `expected_by`): raised once, cleared once.
    jeopardy: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> WorkflowContext:
        # Keys no field knows (left by older versions) are dropped: nothing reads them.
        return cls(**{k: v for k, v in (data or {}).items() if k in _CONTEXT_FIELDS})

    def to_json(self) -> dict[str, Any]:
        return {
            name: value
            for name, default in _CONTEXT_DEFAULTS.items()
            if (value := getattr(self, name)) != default and value is not None
        }

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set each named field; `None` puts a field back to its default (forgets it)."""
        for name, value in changes.items():
            if name not in _CONTEXT_FIELDS:
                raise KeyError(f"workflow context has no field {name!r}")
            setattr(self, name, value if value is not None else _default(name))


def _default(name: str) -> Any:
    """A field's default, a fresh one for a list."""
    found = _CONTEXT_FIELDS[name]
    return found.default_factory() if found.default_factory is not MISSING else found.default


_CONTEXT_FIELDS = {f.name: f for f in fields(WorkflowContext)}
_CONTEXT_DEFAULTS: dict[str, Any] = {name: _default(name) for name in _CONTEXT_FIELDS}


@dataclass
class WorkflowRow:
    """One line item's workflow. Doubles as the state machine's model (`state`, `resume_state`)."""

    workflow_id: uuid.UUID
    order_id: str
    line_item_id: str
    line_item_type: str
    definition_version: int
    state: str | None
    spec: dict[str, Any]
    secrets: dict[str, Any] | None
    context: WorkflowContext
    generation: int
    sequence: int
    version: int
    resume_state: str | None
    error: dict[str, Any] | None
    attempts: int
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_record(cls, record: Any) -> WorkflowRow:
        values = {name: record[name] for name in WORKFLOW_FIELDS}
        values["context"] = WorkflowContext.from_json(values["context"])
        return cls(**values)

    @property
    def current(self) -> str:
        assert self.state is not None
        return self.state


WORKFLOW_FIELDS = (
    "workflow_id",
    "order_id",
    "line_item_id",
    "line_item_type",
    "definition_version",
    "state",
    "spec",
    "secrets",
    "context",
    "generation",
    "sequence",
    "version",
    "resume_state",
    "error",
    "attempts",
    "created_at",
    "updated_at",
)
WORKFLOW_COLUMNS = ", ".join(WORKFLOW_FIELDS)


@dataclass
class OrderRow:
    order_id: str
    customer: dict[str, Any]
    metadata: dict[str, Any]
    provider_order_id: str | None
    state: str
    status_sequence: int
    generation: int
    submitted_at: datetime | None
    cancelled_at: datetime | None

    @classmethod
    def from_record(cls, record: Any) -> OrderRow:
        return cls(**{name: record[name] for name in ORDER_FIELDS})


ORDER_FIELDS = (
    "order_id",
    "customer",
    "metadata",
    "provider_order_id",
    "state",
    "status_sequence",
    "generation",
    "submitted_at",
    "cancelled_at",
)
ORDER_COLUMNS = ", ".join(ORDER_FIELDS)


@dataclass(frozen=True)
class OutboxMessage:
    """A Kafka record to publish after the commit: written to `outbox` in the change's transaction."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Change:
    """One state change as history and status event: what `transitions` and `outbox` get."""

    event: str
    from_state: str  # "" on a workflow's first event
    cause: str
    details: dict[str, Any]
    occurred_at: datetime
    message: OutboxMessage
