"""Restoring a machine from a workflow row and trying one event on it, synchronously.

The engine's loop under the row lock: `restore(...)` → `try_event(...)` → if `Transitioned`, do the
I/O and write `model.state` back; if `TransitionNotAllowed`, record or ignore the event. A refused
transition is a normal outcome (a late webhook, a duplicate cancel), so it is a value, not an
exception. `decide(...)` does the same on a scratch copy, leaving the caller's row untouched.
`apply_event(...)` is `try_event(restore(...))` for the engine's hot path: a memoised decision,
no machine built per step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, cast

from statemachine.event import Event
from statemachine.exceptions import TransitionNotAllowed as _LibraryTransitionNotAllowed

from orchestrator.events import LineItemType
from orchestrator.machines._errors import UnknownEventError, UnknownStateError
from orchestrator.machines._registry import MachineClass, MachineRegistry, machine_for
from orchestrator.machines._versioned import VersionedMachine


class WorkflowModel(Protocol):
    """What a machine reads and writes on the engine's row object.

    `state` is written by every transition; `resume_state` is read by the `resume` guards (the engine
    sets it to the state before the failure).
    """

    state: str | None
    resume_state: str | None


@dataclass
class MachineModel:
    """A minimal `WorkflowModel`, for `decide` and for tests."""

    state: str | None
    resume_state: str | None = None


@dataclass(frozen=True)
class Transitioned:
    """The event was accepted: the machine moved from `source` to `target` (possibly the same)."""

    event: str
    source: str
    target: str

    @property
    def changed(self) -> bool:
        """False for self-transitions (e.g. `amend` while porting): no status event is due."""
        return self.source != self.target


@dataclass(frozen=True)
class TransitionNotAllowed:
    """The event is declared but not allowed now (wrong state, or its guard said no). A value."""

    event: str
    state: str
    reason: str


Outcome = Transitioned | TransitionNotAllowed


def initial_state(machine: MachineClass) -> str:
    """The state a new workflow of this machine starts in (`received` for all current machines)."""
    return str(machine.initial_state.value)


def validate_state(machine: MachineClass, state: object) -> str:
    """`state` if it is a state of `machine`, else `UnknownStateError` (the library would KeyError later)."""
    if not isinstance(state, str) or state not in machine.states_map:
        raise UnknownStateError(
            f"stored state {state!r} is not a state of {machine.__name__} "
            f"(v{getattr(machine, 'DEFINITION_VERSION', '?')}); known: {', '.join(machine.states_map)}",
            machine=machine.__name__,
        )
    return state


def restore(
    *,
    line_item_type: LineItemType | str,
    definition_version: int,
    model: WorkflowModel,
    registry: MachineRegistry | None = None,
) -> VersionedMachine:
    """A machine bound to `model`, in `model.state`, with no entry callbacks run.

    Raises `UnknownDefinitionError` for an unregistered type/version and `UnknownStateError` for a
    stored state the definition does not have.
    """
    machine = machine_for(line_item_type, definition_version, registry=registry)
    validate_state(machine, model.state)
    return machine(model=model)


def event_names(machine: MachineClass | VersionedMachine) -> frozenset[str]:
    """Every event a machine declares."""
    machine_cls = machine if isinstance(machine, type) else type(machine)
    events = cast("list[Event]", machine_cls.events)
    return frozenset(str(event.id) for event in events)


def try_event(machine: VersionedMachine, *, event: str) -> Outcome:
    """Send `event`; return where it led, or why not. An undeclared event name raises.

    On `Transitioned`, `machine.model.state` already holds the target.
    """
    if event not in event_names(machine):
        raise UnknownEventError(f"{type(machine).__name__} declares no event {event!r}")
    source = str(machine.current_state_value)
    try:
        machine.send(event)
    except _LibraryTransitionNotAllowed:
        allowed = event in {bound.id for bound in machine.allowed_events}
        reason = "guard_refused" if allowed else "not_allowed_in_state"
        return TransitionNotAllowed(event=event, state=source, reason=reason)
    return Transitioned(event=event, source=source, target=str(machine.current_state_value))


def decide(
    *,
    line_item_type: LineItemType | str,
    definition_version: int,
    state: str,
    event: str,
    resume_state: str | None = None,
    registry: MachineRegistry | None = None,
) -> Outcome:
    """What `event` would do in `state`, computed on a scratch model (pure)."""
    model = MachineModel(state=state, resume_state=resume_state)
    machine = restore(
        line_item_type=line_item_type, definition_version=definition_version, model=model, registry=registry
    )
    return try_event(machine, event=event)


def apply_event(
    *,
    line_item_type: LineItemType | str,
    definition_version: int,
    model: WorkflowModel,
    event: str,
    registry: MachineRegistry | None = None,
) -> Outcome:
    """`try_event(restore(...), event=...)`, writing the target to `model.state` the same way.

    Building a python-statemachine instance per step was about 9% of a busy worker's CPU. The
    outcome depends only on the definition, the state, the event and `resume_state` (no machine
    has callbacks, and the guards read only `resume_state`; `tests/unit/test_apply_event.py`
    checks every combination against a built machine), so it is computed once per combination.
    """
    machine = machine_for(line_item_type, definition_version, registry=registry)
    outcome = _decided(machine, model.state, event, model.resume_state)
    if isinstance(outcome, Transitioned):
        model.state = outcome.target
    return outcome


@functools.lru_cache(maxsize=4096)
def _decided(machine: MachineClass, state: str | None, event: str, resume_state: str | None) -> Outcome:
    # errors (an unknown state or event) raise and are not cached
    validate_state(machine, state)
    return try_event(machine(model=MachineModel(state=state, resume_state=resume_state)), event=event)
