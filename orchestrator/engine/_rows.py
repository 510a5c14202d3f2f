"""The engine's view of its rows. Loaded under a row lock, changed, written back in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
    context: dict[str, Any]
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
        return cls(**{name: record[name] for name in _WORKFLOW_COLUMNS})

    @property
    def current(self) -> str:
        assert self.state is not None
        return self.state


_WORKFLOW_COLUMNS = [
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
]
WORKFLOW_COLUMNS = ", ".join(_WORKFLOW_COLUMNS)


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
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Any) -> OrderRow:
        return cls(
            order_id=record["order_id"],
            customer=record["customer"],
            metadata=record["metadata"],
            provider_order_id=record["provider_order_id"],
            state=record["state"],
            status_sequence=record["status_sequence"],
            generation=record["generation"],
            submitted_at=record["submitted_at"],
            cancelled_at=record["cancelled_at"],
        )


ORDER_COLUMNS = (
    "order_id, customer, metadata, provider_order_id, state, status_sequence, generation, "
    "submitted_at, cancelled_at"
)
