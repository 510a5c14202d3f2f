"""The workflow graphs: exactly the agreed transitions, every subscription path, and restore rules."""

from __future__ import annotations

from typing import Any

import pytest
from statemachine import StateMachine

from orchestrator.events import LineItemState, LineItemType, SubscriptionPath
from orchestrator.machines import (
    DEFAULT_REGISTRY,
    NEEDS_OPERATOR_STATES,
    TERMINAL_STATES,
    ActivationItemMachineV1,
    MachineModel,
    OneOffItemMachineV1,
    SubscriptionMachineV1,
    Transitioned,
    TransitionNotAllowed,
    UnknownEventError,
    UnknownStateError,
    decide,
    happy_path_states,
    initial_state,
    is_terminal,
    machine_for,
    needs_operator,
    restore,
    try_event,
)

# --- the agreed graphs, written out independently of the implementation ---------------------------

SUB_ACTIVE = [
    "received",
    "number_leased",
    "awaiting_submission",
    "submitted",
    "porting_pending",
    "temp_number_active",
    "activation_scheduled",
]
"""Subscription states that are neither final nor failed nor cancelling."""


def subscription_spec() -> set[tuple[str, str, str, str | None]]:
    """(source, event, target, guard) exactly as agreed with the lead engineer."""
    spec: set[tuple[str, str, str, str | None]] = {
        ("received", "lease_confirmed", "number_leased", None),
        ("received", "item_added", "awaiting_submission", None),
        ("number_leased", "item_added", "awaiting_submission", None),
        ("awaiting_submission", "order_submitted", "submitted", None),
        ("submitted", "port_requested", "porting_pending", None),
        ("porting_pending", "temp_number_activated", "temp_number_active", None),
        ("submitted", "activation_deferred", "activation_scheduled", None),
        ("porting_pending", "activation_deferred", "activation_scheduled", None),
        ("cancelling", "compensated", "cancelled", None),
        ("cancelling", "cancel", "cancelling", None),
        ("failed", "cancel", "cancelling", None),
        ("porting_pending", "amend", "porting_pending", None),
        ("temp_number_active", "amend", "temp_number_active", None),
        # a rejected port on a temporary number, resolved by keeping that number
        ("failed", "keep_temporary_number", "activated", None),
    }
    for source in ["submitted", "porting_pending", "temp_number_active", "activation_scheduled"]:
        spec.add((source, "activate", "activated", None))
    for source in ["received", "number_leased", "awaiting_submission", "failed"]:
        spec.add((source, "amend", "received", None))
    for state in SUB_ACTIVE:
        spec.add((state, "fail", "failed", None))
        spec.add((state, "cancel", "cancelling", None))
        spec.add(("failed", "resume", state, f"resume_to_{state}"))
    return spec


def generic_spec(done_event: str, done_state: str) -> set[tuple[str, str, str, str | None]]:
    active = ["received", "awaiting_submission", "submitted"]
    spec: set[tuple[str, str, str, str | None]] = {
        ("received", "item_added", "awaiting_submission", None),
        ("awaiting_submission", "order_submitted", "submitted", None),
        ("submitted", done_event, done_state, None),
        ("cancelling", "compensated", "cancelled", None),
        ("cancelling", "cancel", "cancelling", None),
        ("failed", "cancel", "cancelling", None),
        ("failed", "amend", "received", None),
    }
    for state in active:
        spec.add((state, "fail", "failed", None))
        spec.add((state, "cancel", "cancelling", None))
        spec.add(("failed", "resume", state, f"resume_to_{state}"))
    for state in ["received", "awaiting_submission"]:  # like subscriptions: no amend once submitted
        spec.add((state, "amend", "received", None))
    return spec


SPECS: dict[type[StateMachine], set[tuple[str, str, str, str | None]]] = {
    SubscriptionMachineV1: subscription_spec(),
    ActivationItemMachineV1: generic_spec("activate", "activated"),
    OneOffItemMachineV1: generic_spec("complete", "completed"),
}


def declared(machine: type[StateMachine]) -> set[tuple[str, str, str, str | None]]:
    """(source, event, target, guard) as the machine class declares them."""
    found = set()
    for state in machine.states:
        for transition in state.transitions:
            guards = [str(cond) for cond in transition.cond]
            for event in transition.events:
                found.add((state.id, str(event.id), transition.target.id, guards[0] if guards else None))
    return found


@pytest.mark.parametrize("machine", list(SPECS), ids=lambda m: m.__name__)
def test_machine_declares_exactly_the_agreed_transitions(machine: type[StateMachine]) -> None:
    assert declared(machine) == SPECS[machine]


@pytest.mark.parametrize("machine", list(SPECS), ids=lambda m: m.__name__)
def test_final_states_are_the_terminal_milestones(machine: type[StateMachine]) -> None:
    finals = {state.id for state in machine.states if state.final}

    assert finals == {state.id for state in machine.states} & TERMINAL_STATES
    assert initial_state(machine) == "received"


def test_line_item_state_enum_is_the_union_of_all_machine_states() -> None:
    states = {state.id for machine in SPECS for state in machine.states}

    assert states == {state.value for state in LineItemState}
    assert {"activated", "completed", "cancelled"} == TERMINAL_STATES
    assert {"failed"} == NEEDS_OPERATOR_STATES
    assert is_terminal("cancelled")
    assert not is_terminal("failed")
    assert needs_operator("failed")
    assert not needs_operator("cancelling")


def test_machines_are_synchronous() -> None:
    machine = restore(
        line_item_type="SUBSCRIPTION", definition_version=1, model=MachineModel(state="received")
    )

    assert machine.send("item_added") is None
    assert machine.model.state == "awaiting_submission"


@pytest.mark.parametrize(
    ("item_type", "machine"),
    [
        (LineItemType.SUBSCRIPTION, SubscriptionMachineV1),
        (LineItemType.LICENSE, ActivationItemMachineV1),
        (LineItemType.ADD_ON, ActivationItemMachineV1),
        (LineItemType.SUBSCRIPTION_CHANGE, ActivationItemMachineV1),
        (LineItemType.LICENSE_CHANGE, ActivationItemMachineV1),
        (LineItemType.ADD_ON_CHANGE, ActivationItemMachineV1),
        (LineItemType.TOP_UP, OneOffItemMachineV1),
        (LineItemType.EXTERNAL_PRODUCT, OneOffItemMachineV1),
        (LineItemType.EXTERNAL_ITEM, OneOffItemMachineV1),
    ],
)
def test_machine_for_every_line_item_type(item_type: LineItemType, machine: type[StateMachine]) -> None:
    assert machine_for(item_type) is machine
    assert machine_for(item_type.value, 1) is machine
    assert DEFAULT_REGISTRY.versions(item_type) == [1]


# --- subscription paths ----------------------------------------------------------------------------

EXPECTED_PATHS = {
    (SubscriptionPath.ASSIGNED, False): "received awaiting_submission submitted activated",
    (
        SubscriptionPath.ASSIGNED,
        True,
    ): "received awaiting_submission submitted activation_scheduled activated",
    (SubscriptionPath.LEASED, False): "received number_leased awaiting_submission submitted activated",
    (SubscriptionPath.LEASED, True): (
        "received number_leased awaiting_submission submitted activation_scheduled activated"
    ),
    (SubscriptionPath.PORT_IN, False): "received awaiting_submission submitted porting_pending activated",
    (SubscriptionPath.PORT_IN, True): (
        "received awaiting_submission submitted porting_pending activation_scheduled activated"
    ),
    (SubscriptionPath.PORT_IN_WITH_TEMP, False): (
        "received awaiting_submission submitted porting_pending temp_number_active activated"
    ),
    (SubscriptionPath.PORT_IN_WITH_TEMP, True): (
        "received awaiting_submission submitted porting_pending temp_number_active activated"
    ),
}


@pytest.mark.parametrize(("path", "scheduled"), list(EXPECTED_PATHS), ids=str)
def test_every_subscription_path_passes_through_the_expected_states(
    path: SubscriptionPath, scheduled: bool
) -> None:
    assert happy_path_states(path=path, scheduled=scheduled) == tuple(
        EXPECTED_PATHS[(path, scheduled)].split()
    )


# --- try_event / decide ----------------------------------------------------------------------------


def test_try_event_writes_the_new_state_to_the_row() -> None:
    row = MachineModel(state="submitted")
    machine = restore(line_item_type=LineItemType.SUBSCRIPTION, definition_version=1, model=row)

    outcome = try_event(machine, event="port_requested")

    assert outcome == Transitioned(event="port_requested", source="submitted", target="porting_pending")
    assert outcome.changed
    assert row.state == "porting_pending"


def test_a_refused_event_is_a_value_and_leaves_the_row_alone() -> None:
    row = MachineModel(state="received")
    machine = restore(line_item_type=LineItemType.SUBSCRIPTION, definition_version=1, model=row)

    outcome = try_event(machine, event="activate")

    assert outcome == TransitionNotAllowed(event="activate", state="received", reason="not_allowed_in_state")
    assert row.state == "received"


@pytest.mark.parametrize("target", SUB_ACTIVE)
def test_resume_goes_to_the_state_the_engine_recorded(target: str) -> None:
    outcome = decide(
        line_item_type="SUBSCRIPTION",
        definition_version=1,
        state="failed",
        event="resume",
        resume_state=target,
    )

    assert outcome == Transitioned(event="resume", source="failed", target=target)


@pytest.mark.parametrize("resume_state", [None, "activated", "cancelling", "bogus"])
def test_resume_without_a_valid_recorded_state_is_refused_by_its_guards(resume_state: str | None) -> None:
    outcome = decide(
        line_item_type="SUBSCRIPTION",
        definition_version=1,
        state="failed",
        event="resume",
        resume_state=resume_state,
    )

    assert outcome == TransitionNotAllowed(event="resume", state="failed", reason="guard_refused")


def test_amend_while_porting_keeps_the_state_and_reports_no_change() -> None:
    outcome = decide(
        line_item_type="SUBSCRIPTION", definition_version=1, state="porting_pending", event="amend"
    )

    assert isinstance(outcome, Transitioned)
    assert outcome.target == "porting_pending"
    assert not outcome.changed


def test_cancelling_cannot_fail_and_a_repeated_cancel_is_a_no_op() -> None:
    failing = decide(line_item_type="TOP_UP", definition_version=1, state="cancelling", event="fail")
    again = decide(line_item_type="TOP_UP", definition_version=1, state="cancelling", event="cancel")

    assert isinstance(failing, TransitionNotAllowed)
    assert isinstance(again, Transitioned)
    assert not again.changed


def test_an_undeclared_event_name_is_a_bug_not_a_refusal() -> None:
    with pytest.raises(UnknownEventError, match="declares no event 'port_requested'"):
        decide(line_item_type="LICENSE", definition_version=1, state="submitted", event="port_requested")


@pytest.mark.parametrize("stored", ["zzz", "", None, "porting_pending"])
def test_a_stored_state_the_definition_lacks_raises_a_specific_error(stored: Any) -> None:
    row = MachineModel(state=stored)

    with pytest.raises(UnknownStateError, match="is not a state of"):
        restore(line_item_type=LineItemType.EXTERNAL_ITEM, definition_version=1, model=row)
    assert UnknownStateError.code == "unknown_stored_state"


def test_restore_runs_no_entry_callbacks_and_keeps_the_stored_state() -> None:
    row = MachineModel(state="activation_scheduled")

    machine = restore(line_item_type=LineItemType.SUBSCRIPTION, definition_version=1, model=row)

    assert machine.current_state_value == "activation_scheduled"
    assert row.state == "activation_scheduled"
