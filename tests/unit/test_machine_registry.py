"""Definition versions: a row written under an older graph still loads after a deploy."""

from __future__ import annotations

from typing import ClassVar

import pytest
from statemachine import State

from orchestrator.events import LineItemType
from orchestrator.machines import (
    DEFAULT_REGISTRY,
    MachineModel,
    SubscriptionMachineV1,
    Transitioned,
    UnknownDefinitionError,
    UnknownStateError,
    VersionedMachine,
    machine_for,
    restore,
    try_event,
)


class SubscriptionMachineV0(VersionedMachine):
    """A stand-in for an older definition: it had a `provisioning` state that v1 no longer has."""

    DEFINITION_VERSION: ClassVar[int] = 0

    received = State(initial=True)
    provisioning = State()
    activated = State(final=True)

    start = received.to(provisioning)
    activate = provisioning.to(activated)


@pytest.fixture
def registry_with_v0():
    """The default registry plus the v0 stub, without touching the process-wide default."""
    registry = DEFAULT_REGISTRY.copy()
    registry.register(SubscriptionMachineV0, line_item_types=[LineItemType.SUBSCRIPTION])
    return registry


def test_a_row_written_under_v0_still_loads_and_advances(registry_with_v0) -> None:
    old_row = MachineModel(state="provisioning")

    machine = restore(
        line_item_type="SUBSCRIPTION", definition_version=0, model=old_row, registry=registry_with_v0
    )
    outcome = try_event(machine, event="activate")

    assert isinstance(machine, SubscriptionMachineV0)
    assert outcome == Transitioned(event="activate", source="provisioning", target="activated")
    assert old_row.state == "activated"


def test_new_workflows_get_the_latest_version(registry_with_v0) -> None:
    assert registry_with_v0.versions(LineItemType.SUBSCRIPTION) == [0, 1]
    assert machine_for(LineItemType.SUBSCRIPTION, registry=registry_with_v0) is SubscriptionMachineV1
    assert machine_for(LineItemType.SUBSCRIPTION) is SubscriptionMachineV1
    assert DEFAULT_REGISTRY.versions(LineItemType.SUBSCRIPTION) == [1]


def test_an_old_state_does_not_load_under_the_new_version(registry_with_v0) -> None:
    with pytest.raises(UnknownStateError, match="'provisioning' is not a state of SubscriptionMachineV1"):
        restore(
            line_item_type="SUBSCRIPTION",
            definition_version=1,
            model=MachineModel(state="provisioning"),
            registry=registry_with_v0,
        )


def test_unknown_versions_and_types_fail_with_a_clear_error() -> None:
    with pytest.raises(
        UnknownDefinitionError,
        match="no SUBSCRIPTION state machine with definition version 0; known versions: 1",
    ):
        restore(line_item_type="SUBSCRIPTION", definition_version=0, model=MachineModel(state="received"))
    with pytest.raises(UnknownDefinitionError, match="unknown line item type 'SIM_SWAP'"):
        machine_for("SIM_SWAP")
    assert UnknownDefinitionError.code == "unknown_machine_definition"


def test_a_clashing_registration_is_refused(registry_with_v0) -> None:
    class Impostor(SubscriptionMachineV0):
        DEFINITION_VERSION: ClassVar[int] = 0

    with pytest.raises(UnknownDefinitionError, match="already SubscriptionMachineV0"):
        registry_with_v0.register(Impostor, line_item_types=["SUBSCRIPTION"])
    assert machine_for("SUBSCRIPTION", 0, registry=registry_with_v0) is SubscriptionMachineV0
