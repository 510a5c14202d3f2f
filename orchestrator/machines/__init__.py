"""The declared workflow graphs (python-statemachine 3.2.2): the single source of the graph.

Pure and synchronous: no I/O and no async callbacks, so a transition is decided in memory and the
engine does the provider call and the database write afterwards, under the workflow's row lock.

    machine = restore(line_item_type=row.line_item_type, definition_version=row.definition_version,
                      model=row)
    outcome = try_event(machine, event="order_submitted")   # Transitioned | TransitionNotAllowed

`docs/state-machines.md` is generated from these classes (`python -m orchestrator.machines.diagrams`).
"""

from orchestrator.machines._errors import (
    MachineError,
    UnknownDefinitionError,
    UnknownEventError,
    UnknownStateError,
)
from orchestrator.machines._generic import ActivationItemMachineV1, OneOffItemMachineV1
from orchestrator.machines._milestones import (
    BEFORE_SUBMISSION_STATES,
    NEEDS_OPERATOR_STATES,
    ORDER_STEP_STATES,
    POLLING_STATES,
    PORTING_STATES,
    SUCCESS_STATES,
    TERMINAL_STATES,
    derive_order_state,
    is_settled,
    is_terminal,
    needs_operator,
)
from orchestrator.machines._paths import SUBSCRIPTION_HAPPY_PATHS, happy_path_states
from orchestrator.machines._registry import (
    ACTIVATION_ITEM_TYPES,
    DEFAULT_REGISTRY,
    ONE_OFF_ITEM_TYPES,
    MachineClass,
    MachineRegistry,
    definition_version,
    machine_for,
)
from orchestrator.machines._runtime import (
    MachineModel,
    Outcome,
    Transitioned,
    TransitionNotAllowed,
    WorkflowModel,
    apply_event,
    decide,
    event_names,
    initial_state,
    restore,
    try_event,
    validate_state,
)
from orchestrator.machines._subscription import SubscriptionMachineV1
from orchestrator.machines._versioned import VersionedMachine

__all__ = [
    "ACTIVATION_ITEM_TYPES",
    "BEFORE_SUBMISSION_STATES",
    "DEFAULT_REGISTRY",
    "NEEDS_OPERATOR_STATES",
    "ONE_OFF_ITEM_TYPES",
    "ORDER_STEP_STATES",
    "POLLING_STATES",
    "PORTING_STATES",
    "SUBSCRIPTION_HAPPY_PATHS",
    "SUCCESS_STATES",
    "TERMINAL_STATES",
    "ActivationItemMachineV1",
    "MachineClass",
    "MachineError",
    "MachineModel",
    "MachineRegistry",
    "OneOffItemMachineV1",
    "Outcome",
    "SubscriptionMachineV1",
    "TransitionNotAllowed",
    "Transitioned",
    "UnknownDefinitionError",
    "UnknownEventError",
    "UnknownStateError",
    "VersionedMachine",
    "WorkflowModel",
    "apply_event",
    "decide",
    "definition_version",
    "derive_order_state",
    "event_names",
    "happy_path_states",
    "initial_state",
    "is_settled",
    "is_terminal",
    "machine_for",
    "needs_operator",
    "restore",
    "try_event",
    "validate_state",
]
