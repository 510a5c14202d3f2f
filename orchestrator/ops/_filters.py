"""Which workflows an operator means: a validated filter, and what it asks of the store.

Filters are parsed once at the edge (CLI options, query parameters) into `WorkflowFilter`; a bad
value raises `InvalidInput` naming the field, so the CLI exits 2 and the API answers 422.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.events import LineItemType
from orchestrator.machines import TERMINAL_STATES, machine_for
from orchestrator.ops._errors import InvalidInput
from orchestrator.store.read_models import WorkflowQuery

MAX_LIMIT = 1000
_DURATION = re.compile(r"(\d+)\s*(d|h|m|s)")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def known_states() -> frozenset[str]:
    """Every state any registered machine declares (the graphs are the source of truth)."""
    states: set[str] = set()
    for item_type in LineItemType:
        states.update(str(name) for name in machine_for(item_type).states_map)
    return frozenset(states)


def parse_duration(text: str, *, field_name: str) -> timedelta:
    """`90s`, `15m`, `2h`, `3d`, `1h30m` → timedelta. Anything else is `InvalidInput`."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise InvalidInput(
            f"{field_name}: {text!r} is not a duration; use e.g. 90s, 15m, 2h, 3d or 1h30m", field=field_name
        )
    total = timedelta()
    for amount, unit in _DURATION.findall(compact):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


def check_text(text: str | None, *, field_name: str) -> str | None:
    """Free text that goes into a query: Postgres text cannot hold NUL, so say so (a 4xx) instead of
    letting the driver fail (a 500)."""
    if text is not None and "\x00" in text:
        raise InvalidInput(f"{field_name}: must not contain a NUL character", field=field_name)
    return text


def parse_workflow_id(text: str, *, field_name: str = "workflow_id") -> uuid.UUID:
    try:
        return uuid.UUID(text.strip())
    except ValueError as exc:
        raise InvalidInput(f"{field_name}: {text!r} is not a workflow id (a UUID)", field=field_name) from exc


@dataclass(frozen=True)
class WorkflowFilter:
    """All conditions are ANDed; None means "any"."""

    workflow_ids: tuple[uuid.UUID, ...] = ()
    states: tuple[str, ...] = ()
    line_item_type: str | None = None
    order_id: str | None = None
    msisdn: str | None = None
    error_code: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    stuck_longer_than: timedelta | None = None
    in_jeopardy: bool | None = None
    limit: int = 100

    def is_empty(self) -> bool:
        return not any(
            (
                self.workflow_ids,
                self.states,
                self.line_item_type,
                self.order_id,
                self.msisdn,
                self.error_code,
                self.older_than,
                self.newer_than,
                self.stuck_longer_than,
                self.in_jeopardy is not None,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the audit trail and API answers."""

        def span(value: timedelta | None) -> str | None:
            return None if value is None else f"{int(value.total_seconds())}s"

        return {
            "workflow_ids": [str(w) for w in self.workflow_ids],
            "states": list(self.states),
            "line_item_type": self.line_item_type,
            "order_id": self.order_id,
            "msisdn": self.msisdn,
            "error_code": self.error_code,
            "older_than": span(self.older_than),
            "newer_than": span(self.newer_than),
            "stuck_longer_than": span(self.stuck_longer_than),
            "in_jeopardy": self.in_jeopardy,
            "limit": self.limit,
        }

    def query(self, *, now: datetime) -> WorkflowQuery:
        """The store's terms: durations become instants before `now`."""

        def before(span: timedelta | None) -> datetime | None:
            return None if span is None else now - span

        stuck = self.stuck_longer_than is not None
        return WorkflowQuery(
            workflow_ids=self.workflow_ids,
            states=self.states,
            line_item_type=self.line_item_type,
            order_id=self.order_id,
            msisdn=self.msisdn,
            error_code=self.error_code,
            created_before=before(self.older_than),
            created_after=before(self.newer_than),
            updated_before=before(self.stuck_longer_than),
            # Stuck: not done, and unchanged that long (failed counts: it waits for an operator).
            excluded_states=sorted(TERMINAL_STATES) if stuck else (),
            in_jeopardy=self.in_jeopardy,
            limit=self.limit,
        )


def build_filter(
    *,
    workflow_ids: list[str] | None = None,
    states: list[str] | None = None,
    line_item_type: str | None = None,
    order_id: str | None = None,
    msisdn: str | None = None,
    error_code: str | None = None,
    older_than: str | None = None,
    newer_than: str | None = None,
    stuck_longer_than: str | None = None,
    in_jeopardy: bool | str | None = None,
    limit: int = 100,
) -> WorkflowFilter:
    """Validate raw operator input (strings) into a filter. States may be comma separated."""
    wanted_states = tuple(s.strip() for raw in states or [] for s in raw.split(",") if s.strip())
    unknown = sorted(set(wanted_states) - known_states())
    if unknown:
        raise InvalidInput(
            f"state: unknown state(s) {', '.join(unknown)}; known: {', '.join(sorted(known_states()))}",
            field="state",
        )
    if line_item_type is not None:
        try:
            line_item_type = LineItemType(line_item_type.strip().upper()).value
        except ValueError as exc:
            raise InvalidInput(
                f"type: unknown line item type {line_item_type!r}; known: "
                + ", ".join(t.value for t in LineItemType),
                field="type",
            ) from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}", field="limit")
    ids = tuple(parse_workflow_id(w) for raw in workflow_ids or [] for w in raw.split(",") if w.strip())
    return WorkflowFilter(
        workflow_ids=ids,
        states=wanted_states,
        line_item_type=line_item_type,
        order_id=_blank_to_none(check_text(order_id, field_name="order_id")),
        msisdn=_blank_to_none(check_text(msisdn, field_name="msisdn")),
        error_code=_blank_to_none(check_text(error_code, field_name="error_code")),
        older_than=parse_duration(older_than, field_name="older_than") if older_than else None,
        newer_than=parse_duration(newer_than, field_name="newer_than") if newer_than else None,
        stuck_longer_than=(
            parse_duration(stuck_longer_than, field_name="stuck_longer_than") if stuck_longer_than else None
        ),
        in_jeopardy=parse_flag(in_jeopardy, field_name="in_jeopardy"),
        limit=limit,
    )


_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


def parse_flag(value: bool | str | None, *, field_name: str) -> bool | None:
    """A yes/no filter: a bool, or its text (`true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`);
    blank or None means "any". Anything else is `InvalidInput`."""
    if value is None or isinstance(value, bool):
        return value
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidInput(f"{field_name}: {value!r} is not true or false", field=field_name)


def _blank_to_none(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None
