"""`apply_event` (memoised, no machine built) decides exactly what a built machine decides."""

from __future__ import annotations

import pytest

from orchestrator.events import LineItemType
from orchestrator.machines import (
    DEFAULT_REGISTRY,
    MachineModel,
    UnknownStateError,
    apply_event,
    event_names,
    machine_for,
    restore,
    try_event,
)

DEFINITIONS = [
    (item_type, version) for item_type in LineItemType for version in DEFAULT_REGISTRY.versions(item_type)
]


@pytest.mark.parametrize(("item_type", "version"), DEFINITIONS, ids=str)
def test_every_state_event_and_resume_state_matches_a_built_machine(
    item_type: LineItemType, version: int
) -> None:
    machine = machine_for(item_type, version)
    states = sorted(str(state.id) for state in machine.states)
    kinds: set[str] = set()
    for state in states:
        for event in sorted(event_names(machine)):
            for resume_state in [None, *states]:
                built = MachineModel(state=state, resume_state=resume_state)
                expected = try_event(
                    restore(line_item_type=item_type, definition_version=version, model=built), event=event
                )
                # twice: the second answer comes from the cache and must still write the model
                for _ in range(2):
                    fast = MachineModel(state=state, resume_state=resume_state)
                    outcome = apply_event(
                        line_item_type=item_type, definition_version=version, model=fast, event=event
                    )
                    assert outcome == expected, (state, event, resume_state)
                    assert fast.state == built.state, (state, event, resume_state)
                kinds.add(type(expected).__name__)
    # the comparison covered moves and refusals alike
    assert kinds == {"Transitioned", "TransitionNotAllowed"}


def test_an_unknown_stored_state_raises_every_time() -> None:
    for _ in range(2):
        with pytest.raises(UnknownStateError):
            apply_event(
                line_item_type=LineItemType.SUBSCRIPTION,
                definition_version=1,
                model=MachineModel(state="no_such_state"),
                event="cancel",
            )
