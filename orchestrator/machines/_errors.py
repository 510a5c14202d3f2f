"""Errors of the machine layer. All are bugs or data problems, never a normal outcome.

A refused transition is *not* an error: it is the `TransitionNotAllowed` value (see `_runtime`).
"""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class MachineError(OrchestratorError):
    """Root of the machine layer's errors."""

    code = "machine_error"


class UnknownDefinitionError(MachineError):
    """No machine is registered for this line item type and definition version."""

    code = "unknown_machine_definition"


class UnknownStateError(MachineError):
    """A stored state is not a state of the machine it was written under (corrupt or foreign row)."""

    code = "unknown_stored_state"


class UnknownEventError(MachineError):
    """An event name the machine does not declare: a typo in the engine, not a refused transition."""

    code = "unknown_machine_event"
